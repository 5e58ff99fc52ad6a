"""The consumer's dedupe state: copies of a landed envelope are dropped within the window,
a replay from a checkpoint's state decides exactly as the first reading did, and the state
stays bounded."""

from __future__ import annotations

import os
import random

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from service.consume.dedupe import DedupeStateError, ShardDedupe, merge

Envelope = tuple[bytes, int, int]  # producer id, sequence, created_us
PRODUCERS = [bytes([i]) * 16 for i in range(4)]
WINDOW_MS = 10_000

envelopes = st.lists(
    st.tuples(
        st.sampled_from(PRODUCERS),
        st.integers(0, 40),
        st.integers(0, 40_000_000),  # 40 s of creation times: wider than the window
    ),
    max_size=200,
)


def _admits(state: ShardDedupe, records: list[Envelope]) -> list[bool]:
    return [state.admit(pid, seq, created) for pid, seq, created in records]


@given(records=envelopes, cut=st.integers(0, 200), cap=st.integers(5, 60))
@settings(max_examples=300, deadline=None)
def test_replay_from_a_checkpoint_state_admits_exactly_the_same_envelopes(
    records: list[Envelope], cut: int, cap: int
) -> None:
    cut = min(cut, len(records))
    live = ShardDedupe(WINDOW_MS, cap)
    _admits(live, records[:cut])
    checkpoint = live.encode()
    first_reading = _admits(live, records[cut:])
    replay = ShardDedupe.decode(checkpoint)
    assert _admits(replay, records[cut:]) == first_reading
    assert replay.encode() == live.encode()


@given(records=envelopes, copies=st.lists(st.integers(0, 199), max_size=50))
@settings(max_examples=300, deadline=None)
def test_a_copy_within_the_window_is_always_dropped(
    records: list[Envelope], copies: list[int]
) -> None:
    # Every creation time within one window: the rule says nothing is forgotten.
    records = [(pid, seq, created % (WINDOW_MS * 1000)) for pid, seq, created in records]
    stream = list(records)
    for i in copies:
        if records:
            stream.insert(random.Random(i).randrange(len(stream) + 1), records[i % len(records)])
    state = ShardDedupe(WINDOW_MS, 10_000)
    admitted = [r for r, ok in zip(stream, _admits(state, stream), strict=True) if ok]
    names = [(pid, seq) for pid, seq, _ in admitted]
    assert len(names) == len(set(names))  # nothing landed twice
    assert set(names) == {(pid, seq) for pid, seq, _ in records}  # nothing lost


def test_an_envelope_without_identity_is_always_admitted_and_never_remembered() -> None:
    state = ShardDedupe()
    assert state.admit(b"", 0, 0) and state.admit(b"", 0, 0)
    assert len(state) == 0


def test_a_copy_is_forgotten_only_after_the_producer_moved_a_window_on() -> None:
    state = ShardDedupe(window_ms=1000)
    pid = b"p" * 16
    assert state.admit(pid, 0, 0)
    assert not state.admit(pid, 0, 0)
    assert state.admit(pid, 1, 999_000)
    assert not state.admit(pid, 0, 0)  # 999 ms later: still within the window
    assert state.admit(pid, 2, 1_001_000)
    assert not state.seen(pid, 0) and state.seen(pid, 1)


def test_a_silent_producer_is_forgotten_once_the_shard_moved_a_window_on() -> None:
    state = ShardDedupe(window_ms=1000)
    quiet, busy = b"q" * 16, b"b" * 16
    state.admit(quiet, 0, 0)
    for i in range(40):
        state.admit(busy, i, i * 100_000)  # 4 s of another producer's envelopes
    assert not state.seen(quiet, 0)
    assert state.producers == 1


@given(records=envelopes, cap=st.integers(1, 50))
@settings(max_examples=200, deadline=None)
def test_the_state_never_holds_more_than_its_bound(records: list[Envelope], cap: int) -> None:
    state = ShardDedupe(WINDOW_MS, cap)
    for pid, seq, created in records:
        state.admit(pid, seq, created)
        assert len(state) <= cap
        assert state.producers <= cap


@given(
    parents=st.lists(envelopes, min_size=1, max_size=3),
    copies=st.lists(st.tuples(st.integers(0, 2), st.integers(0, 199)), max_size=20),
)
@settings(max_examples=200, deadline=None)
def test_a_child_drops_what_any_parent_landed_within_the_window(
    parents: list[list[Envelope]], copies: list[tuple[int, int]]
) -> None:
    states = []
    for records in parents:
        state = ShardDedupe(WINDOW_MS, 100_000)
        _admits(state, [(p, s, c % (WINDOW_MS * 1000)) for p, s, c in records])
        states.append(state)
    child = merge(ShardDedupe.decode(s.encode()) for s in states)
    for which, i in copies:
        records = parents[which % len(parents)]
        if records:
            pid, seq, created = records[i % len(records)]
            assert not child.admit(pid, seq, created % (WINDOW_MS * 1000))
    assert merge(states).encode() == merge(ShardDedupe.decode(s.encode()) for s in states).encode()


def test_corrupt_bytes_are_refused_with_a_reason() -> None:
    good = ShardDedupe().encode()
    for bad in (b"", b"TWD1", b"XXXX" + good[4:], good[:-3]):
        with pytest.raises(DedupeStateError):
            ShardDedupe.decode(bad)


def _realistic(producers: int, seconds: int, shard_records_per_s: float) -> ShardDedupe:
    """One shard fed by ``producers`` serve processes for ``seconds`` at a total rate."""
    rng = random.Random(1)
    ids = [os.urandom(16) for _ in range(producers)]
    seqs = [rng.randrange(10**6) for _ in range(producers)]
    state = ShardDedupe()
    t_us = 1_764_000_000_000_000
    step = int(1e6 / shard_records_per_s)
    for _ in range(int(seconds * shard_records_per_s)):
        t_us += rng.randrange(step * 2)
        i = rng.randrange(producers)
        seqs[i] += rng.randrange(1, 2 * 64)  # 64 shards share each producer's sequence
        state.admit(ids[i], seqs[i], t_us - rng.randrange(20_000))
    return state


@pytest.mark.parametrize(
    ("producers", "rate"),
    [(1000, 40), (1000, 200), (100, 40)],
    ids=["1000x40rps", "1000x200rps", "100x40rps"],
)
def test_state_size_for_realistic_fleets(producers: int, rate: int) -> None:
    state = _realistic(producers, 600, rate)
    size = len(state.encode())
    print(
        f"dedupe state: {producers} producers, {rate} envelopes/s/shard: "
        f"{len(state)} entries, {state.producers} producers, {size} bytes"
    )
    assert size < 400_000  # fits a DynamoDB item beside the lease


def test_an_envelope_older_than_the_window_is_admitted_never_lost() -> None:
    # A producer whose clock stepped back past the window: its new envelopes look old, and
    # must still land (a copy that old is past what the producer ever re-sends).
    state = ShardDedupe(window_ms=1000)
    pid = b"s" * 16
    assert state.admit(pid, 0, 10_000_000)
    assert state.admit(pid, 1, 1_000_000)  # 9 s "older" than the newest
    assert state.admit(pid, 2, 1_000_500)
    assert not state.admit(pid, 0, 10_000_000)


@given(body=st.binary(max_size=300), compress=st.booleans())
@settings(max_examples=300, deadline=None)
def test_any_bytes_decode_to_a_state_or_a_dedupe_state_error(body: bytes, compress: bool) -> None:
    data = b"TWD1" + (zstandard.ZstdCompressor().compress(body) if compress else body)
    try:
        state = ShardDedupe.decode(data)
    except DedupeStateError:
        return
    assert ShardDedupe.decode(state.encode()).encode() == state.encode()
