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
from tests.sim.node import (
    LEASE_DURATION,
    commits_skipped,
    dedupe_forgetting,
    stale_kept,
    uploads_dropping,
)
from tests.sim.world import Result, profile_for, simulate

# The fault classes the consumer survives today; each seed of the sweep runs one of them.
SWEEP = ["calm", "aws", "machines", "zombies", "reshards", "producer", "deploy"]
ROOT = Path(__file__).resolve().parents[2]


def run(seed: int, profile: str) -> Result:
    result = simulate(seed, profile)
    print(result.report())  # shown by pytest for a failure, and with -s
    return result


def test_seed_schedule_keeps_exactly_once(sim_seed: int, sim_profile: str | None) -> None:
    profile = sim_profile or profile_for(sim_seed, SWEEP).name
    result = run(sim_seed, profile)
    assert not result.violations, result.report()


@pytest.mark.parametrize("committer", ["elected", "worker"])
@pytest.mark.parametrize(("seed", "profile"), [(3, "zombies"), (5, "machines")])
def test_iceberg_schedule_keeps_exactly_once_by_a_table_scan(
    seed: int, profile: str, committer: str
) -> None:
    """Issue 17: the same fleet under crashes, pauses and zombies committing to an Iceberg
    table, through the elected committer (crashed and paused holders included) or each
    worker's own; each line is in the table's files exactly once (two seeds each)."""
    result = simulate(seed, profile, iceberg=True, committer=committer)
    print(result.report())
    assert not result.violations, result.report()


def test_the_elected_committer_batches_many_workers_flushes_per_snapshot() -> None:
    """16 shards over 4 workers, calm: the same records make fewer snapshots through the
    elected committer than through every worker's own (tests/sim/commits.py measures)."""
    worker = simulate(5, "calm", iceberg=True, committer="worker", shards=16, fleet=4)
    elected = simulate(5, "calm", iceberg=True, committer="elected", shards=16, fleet=4)
    assert not worker.violations and not elected.violations, elected.report()
    assert elected.stats["snapshots"] < worker.stats["snapshots"]
    assert elected.stats["flushes_committed"] > elected.stats["snapshots"]


def test_the_iceberg_invariant_reads_the_table_not_the_bucket() -> None:
    with commits_skipped():  # every object uploaded, none committed
        result = simulate(5, "calm", iceberg=True)
    assert any(v.startswith("LOST") for v in result.violations)


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
        "producer.lost_answer",
        "producer.resend",
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
PRODUCER_SEEDS = range(3)


@pytest.mark.parametrize("seed", PRODUCER_SEEDS)
def test_a_resent_put_lands_once(seed: int) -> None:
    result = run(seed, "producer")
    assert result.stats["resent_puts"] > 0
    assert not result.violations, result.report()


@pytest.mark.parametrize("seed", [0, 1])
def test_a_put_resent_minutes_later_lands_once(seed: int) -> None:
    """A re-send 60-200 s after the put, long after the faults: the dedupe state has been
    checkpointed, handed off and reloaded many times since the first copy landed."""
    result = run(seed, "producer_late")
    assert "producer.very_late_resend" in result.kinds
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


# A rolling deploy of code that cuts files differently (issue 14 item 3): a replay of the
# other version's intent writes its own keys and deletes the listed ones its plan does not
# have (S3 DeleteObjects), under 5xx, lost answers and keys refused in the answer's Errors.
DEPLOY_SEEDS = [7, 22, 32, 1]  # 1: its S3 deletes meet errors (since the fenced deletes)


def test_a_replay_by_other_code_leaves_each_row_once() -> None:
    results = [run(seed, "deploy") for seed in DEPLOY_SEEDS]
    assert all(r.stats["objects_deleted"] > 0 for r in results)
    assert "s3.delete_errors" in set().union(*(r.kinds for r in results))
    failed = [r for r in results if r.violations]
    assert not failed, "\n\n".join(r.report() for r in failed)


def test_the_invariants_catch_a_replay_that_keeps_the_other_versions_objects() -> None:
    """The harness has teeth: without the deletion, the replayed range lands twice."""
    with stale_kept():
        result = simulate(DEPLOY_SEEDS[0], "deploy")
    assert any(v.startswith("DUPLICATED") for v in result.violations), result.report()


def test_profiles_name_their_fault_kinds() -> None:
    assert PROFILES["calm"].kinds() == []
    assert set(PROFILES["everything"].kinds()) >= {"crashes", "pauses", "reshards", "skew"}


# Bugs the simulation found in the consumer (issue 14), fixed since; each runs the seeds
# that found it as a regression test (docs/simulation.md says what each trace shows).
def assert_exactly_once(seeds: list[int], profile: str) -> list[Result]:
    results = [run(seed, profile) for seed in seeds]
    failed = [r for r in results if r.violations]
    assert not failed, "\n\n".join(r.report() for r in failed)
    return results


def test_issue14_item1_a_finished_shard_is_never_read_again() -> None:
    """Found as: a worker that scanned a closed shard as unfinished acquired it just after
    its owner wrote SHARD_END at the same epoch, mapped SHARD_END to the start position and
    read the finished shard again (seeds 20, 1081). Fixed by an acquire conditional on the
    checkpoint and a finished lease that is never read (328581b)."""
    assert_exactly_once([20, 1081], "shard_end_race")


def test_issue14_item2_replay_survives_empty_pages_without_lag() -> None:
    """Found as: replay ended on an empty page without MillisBehindLatest and checkpointed
    the intent's last sequence past records never written (seed 10)."""
    results = assert_exactly_once([10], "missing_lag")
    assert "kinesis.missing_lag" in results[0].kinds


def test_issue14_item2_closed_shard_is_read_to_its_end_despite_missing_lag() -> None:
    """Found as: a closed shard checkpointed SHARD_END on an empty page without
    MillisBehindLatest while records remained (seeds 14, 27)."""
    for result in assert_exactly_once([14, 27], "missing_lag"):
        assert "kinesis.missing_lag" in result.kinds
        assert any(k.startswith("reshard.") for k in result.kinds)


def test_issue14_item2_a_stale_empty_page_never_ends_a_closed_shard() -> None:
    """Found as, with every answer honest: "closed in ListShards + an empty page at the
    tip" taken as the shard's end, while a slow GetRecords page had been cut before the
    reshard and the last records (seeds 131, 25, 118). Only a missing NextShardIterator or
    the EndingSequenceNumber ends a shard now; seed 131 still receives such late pages."""
    (late,) = assert_exactly_once([131], "reshard_zombies")
    assert late.stats["late_pages"] > 0
    assert_exactly_once([25, 118], "shard_end_race")


def test_issue14_item6_clock_skew_never_expires_a_healthy_worker() -> None:
    """Found as: leases judged by comparing two wall clocks, so a skew beyond lease - poll
    made a healthy worker dead to its peers (seeds 0, 2, 6). Liveness is now a heartbeat
    counter seen to move on the observer's monotonic clock; each seed still skews a node
    beyond the lease duration."""
    for result in assert_exactly_once([0, 2, 6], "skew"):
        skews = [float(line.split()[-1].rstrip("s")) for line in result.schedule if "skew" in line]
        assert max(abs(s) for s in skews) > LEASE_DURATION


# Found by the deploy sweep (seeds 1000-1199): S3 deletes and uploads were not fenced, so two
# code versions replaying each other's intents could undo each other's work.
def test_a_zombie_replay_never_deletes_what_the_heir_checkpointed() -> None:
    """Seeds 1031, 1134: w6 (other code) pauses mid-replay of shard 1; w7 (old code) takes
    the shard, replays the intent, uploads and checkpoints; w6 wakes. Its stale keys are
    written with its checkpoint, which is fenced and fails, so it deletes none of w7's
    objects (it used to, before its fenced write failed: 26 lines in no object, LOST)."""
    assert_exactly_once([1031, 1134], "deploy")


def test_a_zombie_upload_never_re_creates_what_the_heir_deleted() -> None:
    """Seeds 1038, 1043, 1097, 1113, 1183: a node paused past its lease inside its upload;
    the heir, of the other version, replays the intent and deletes the listed keys its plan
    does not have. The zombie stops before its next PutObject (its lease is stale on its
    own clock); one already signed is refused once its signature expired, or lands and is
    deleted again, since the heir re-issues the delete for longer than a signature lives."""
    assert_exactly_once([1038, 1043, 1097, 1113, 1183], "deploy")


def test_a_crash_between_checkpoint_and_delete_leaves_the_delete_to_the_heir() -> None:
    """Seed 32 (what deleting after the checkpoint alone broke): the stale keys are in the
    checkpoint, so the next owner deletes them on acquiring the shard: no duplicated rows."""
    assert_exactly_once([32], "deploy")
