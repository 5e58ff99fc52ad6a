"""Liveness on the observer's own clock: a heartbeat counter seen to move (pure)."""

from __future__ import annotations

from service.consume.leases import WorkerBeat
from service.consume.liveness import Liveness


def beats(**counters: int) -> dict[str, WorkerBeat]:
    return {w: WorkerBeat(w, n, written_at_ms=0) for w, n in counters.items()}


def test_a_worker_first_seen_is_alive_for_one_lease_duration() -> None:
    seen = Liveness(lease_duration=10)
    assert seen.observe(beats(a=7), now=100.0) == {"a"}
    assert seen.observe(beats(a=7), now=109.9) == {"a"}
    assert seen.observe(beats(a=7), now=110.0) == set()


def test_a_counter_that_moves_keeps_its_worker_alive_whatever_its_wall_clock() -> None:
    seen = Liveness(lease_duration=10)
    for step in range(10):
        # written_at is an hour off: it is never read to judge liveness
        beat = {"a": WorkerBeat("a", step, written_at_ms=-3_600_000)}
        assert seen.observe(beat, now=100.0 + 5 * step) == {"a"}


def test_a_counter_stopped_for_a_lease_duration_is_dead_and_alive_again_when_it_moves() -> None:
    seen = Liveness(lease_duration=10)
    seen.observe(beats(a=1, b=1), now=0.0)
    seen.observe(beats(a=2, b=1), now=6.0)
    assert seen.observe(beats(a=3, b=1), now=12.0) == {"a"}
    assert seen.observe(beats(a=3, b=2), now=13.0) == {"a", "b"}


def test_a_worker_whose_item_is_gone_is_dead_at_once() -> None:
    seen = Liveness(lease_duration=10)
    seen.observe(beats(a=1, b=1), now=0.0)
    assert seen.observe(beats(a=1), now=1.0) == {"a"}
