"""Deterministic simulation: the real consumer fleet against Kinesis, DynamoDB and S3
models in virtual time, under seeded AWS and machine faults (docs/simulation.md).

Every schedule must land every record put exactly once, never checkpoint ahead of S3,
never rewrite an object with other bytes, and never let a non-owner write a lease's
checkpoint or intent. A failing seed prints its schedule and replays exactly with
``pytest tests/sim -k seed --sim-seed=N``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.sim.faults import PROFILES
from tests.sim.node import dedupe_forgetting, uploads_dropping
from tests.sim.world import Result, profile_for, simulate

# The fault classes the consumer survives today; each seed of the sweep runs one of them.
SWEEP = ["calm", "aws", "machines", "zombies", "reshards"]
ROOT = Path(__file__).resolve().parents[2]


def run(seed: int, profile: str) -> Result:
    result = simulate(seed, profile)
    print(result.report())  # shown by pytest for a failure, and with -s
    return result


def test_seed_schedule_keeps_exactly_once(sim_seed: int, sim_profile: str | None) -> None:
    profile = sim_profile or profile_for(sim_seed, SWEEP).name
    result = run(sim_seed, profile)
    assert not result.violations, result.report()


def test_the_same_seed_replays_the_same_trace() -> None:
    first, second = simulate(11, "everything"), simulate(11, "everything")
    assert first.schedule == second.schedule
    assert first.trace_hash == second.trace_hash
    assert first.stats == second.stats


def test_a_seed_replays_the_same_trace_in_another_process() -> None:
    """Nothing in a schedule depends on string hashing or object addresses."""
    here = simulate(5, "everything").trace_hash
    code = "from tests.sim.world import simulate; print(simulate(5, 'everything').trace_hash)"
    env = {**os.environ, "PYTHONHASHSEED": "4242", "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == here


def test_the_sweep_injects_every_fault_kind_it_names() -> None:
    kinds: set[str] = set()
    for seed, name in enumerate(SWEEP):
        kinds |= simulate(seed, name).kinds
    assert {
        "crash",
        "pause",
        "restart",
        "new_node",
        "reshard.split",
        "lost_response",
        "resent_after_loss",
        "slow_call",
        "kinesis.empty",
        "kinesis.short",
        "kinesis.expired",
        "kinesis.throttle",
        "dynamodb.throttle",
        "dynamodb.5xx",
        "s3.throttle",
        "s3.5xx",
    } <= kinds


def test_the_invariants_catch_a_sink_that_drops_objects() -> None:
    """The harness has teeth: a consumer that checkpoints objects it never wrote fails."""
    with uploads_dropping(lambda key: "service=web" in key):
        result = simulate(3, "calm")
    assert any(v.startswith("LOST") for v in result.violations)
    assert any("ahead of S3" in v for v in result.violations)


# The producer half (issue 14 item 4): a put applied with its answer lost is re-sent with
# the same bytes and partition key, soon, late (up to 30 s) or after a reshard; every
# acknowledged line lands once, the copies dropped by the dedupe state that travels with
# the checkpoint, the intent and the children of a reshard.
PRODUCER_SEEDS = range(6)


@pytest.mark.parametrize("seed", PRODUCER_SEEDS)
def test_a_resent_put_lands_once(seed: int) -> None:
    result = run(seed, "producer")
    assert result.stats["resent_puts"] > 0
    assert not result.violations, result.report()


def test_the_producer_profile_injects_late_resends_and_reshards_between() -> None:
    kinds = set().union(*(simulate(seed, "producer").kinds for seed in (0, 1)))
    assert {
        "producer.lost_answer",
        "producer.resend",
        "producer.late_resend",
        "producer.reshard",
    } <= kinds


def test_the_invariants_catch_a_consumer_that_forgets_landed_envelopes() -> None:
    """The harness has teeth: without the dedupe state, re-sent copies land twice."""
    with dedupe_forgetting():
        result = simulate(0, "producer")
    assert any(v.startswith("DUPLICATED") for v in result.violations), result.report()


def test_profiles_name_their_fault_kinds() -> None:
    assert PROFILES["calm"].kinds() == []
    assert set(PROFILES["everything"].kinds()) >= {"crashes", "pauses", "reshards", "skew"}


# Bugs the simulation found in the consumer as it stands (issue 14). Each runs the seeds
# that found it; a fix turns them green, and strict xfail then asks to drop the mark.
def assert_exactly_once(seeds: list[int], profile: str) -> None:
    failed = [r for r in (run(seed, profile) for seed in seeds) if r.violations]
    assert not failed, "\n\n".join(r.report() for r in failed)


@pytest.mark.xfail(
    strict=True,
    reason="issue 14 item 1: a worker that scanned a closed shard as unfinished acquires it"
    " just after its owner wrote SHARD_END at the same epoch, maps SHARD_END to the start"
    " position and reads the finished shard again (checkpoint SHARD_END -> a sequence;"
    " seeds 20, 1081)",
)
def test_issue14_item1_a_finished_shard_is_never_read_again() -> None:
    assert_exactly_once([20, 1081], "shard_end_race")


@pytest.mark.xfail(
    strict=True,
    reason="issue 14 item 2: replay ends on an empty page without MillisBehindLatest and"
    " checkpoints the intent's last sequence past records never written (seed 10)",
)
def test_issue14_item2_replay_survives_empty_pages_without_lag() -> None:
    assert_exactly_once([10], "missing_lag")


@pytest.mark.xfail(
    strict=True,
    reason="issue 14 item 2: a closed shard is checkpointed SHARD_END on an empty page"
    " without MillisBehindLatest while records remain (seeds 14, 27)",
)
def test_issue14_item2_closed_shard_is_read_to_its_end_despite_missing_lag() -> None:
    assert_exactly_once([14, 27], "missing_lag")


@pytest.mark.xfail(
    strict=True,
    reason="issue 14 item 2: closed (ListShards) + an empty page at the tip is taken as the"
    " shard's end, but the page may predate the reshard (slow GetRecords): SHARD_END"
    " with records unread, with every answer honest (seeds 131, 25, 118)",
)
def test_issue14_item2_a_stale_empty_page_never_ends_a_closed_shard() -> None:
    assert_exactly_once([131], "reshard_zombies")
    assert_exactly_once([25, 118], "shard_end_race")


@pytest.mark.xfail(
    strict=True,
    reason="issue 14 item 6: leases judged by comparing two wall clocks: skew beyond"
    " lease - poll makes a healthy worker dead to its peers (seeds 0, 2, 6)",
)
def test_issue14_item6_clock_skew_never_expires_a_healthy_worker() -> None:
    assert_exactly_once([0, 2, 6], "skew")
