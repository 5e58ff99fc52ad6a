"""Split and merge shards while the fleet reads: parents are read to their end before their
children, children are read from their first record, every line lands exactly once."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.settings import Settings
from tests.conftest import Aws
from tests.faults.conftest import ServeLines
from tests.fleet import (
    Fleet,
    assert_exactly_once,
    caught_up,
    drop_merge_copies,
    leases,
    log_time,
    report_run,
    route_writes_to_open_shards,
    wait_until,
)

pytestmark = pytest.mark.faults


def open_shards(aws: Aws, stream: str) -> list[dict[str, object]]:
    shards = aws.client("kinesis").list_shards(StreamName=stream)["Shards"]
    return [s for s in shards if "EndingSequenceNumber" not in s["SequenceNumberRange"]]


def test_split_then_merge_mid_stream(
    aws: Aws, ready: Settings, tmp_path: Path, serve_lines: ServeLines
) -> None:
    if aws.kind != "moto":
        pytest.skip("routes writes around a moto quirk in-process")
    kinesis = aws.client("kinesis")
    producer = serve_lines(ready, "reshard")
    producer.put(300)
    with Fleet(aws, ready, tmp_path) as fleet:
        fleet.start()
        fleet.start()
        # Split shard 0 while the fleet is still reading it (no producer running: moto would
        # route writes made during the reshard to the closing parent).
        parent = "shardId-000000000000"
        rng = next(
            s
            for s in kinesis.list_shards(StreamName=ready.stream)["Shards"]
            if s["ShardId"] == parent
        )
        low, high = (
            int(rng["HashKeyRange"]["StartingHashKey"]),
            int(rng["HashKeyRange"]["EndingHashKey"]),
        )
        kinesis.split_shard(
            StreamName=ready.stream, ShardToSplit=parent, NewStartingHashKey=str((low + high) // 2)
        )
        route_writes_to_open_shards(ready.stream)
        producer.put(200)
        # Merge the upper child with its neighbour (shard 1), then write again.
        by_start = sorted(
            open_shards(aws, ready.stream), key=lambda s: int(s["HashKeyRange"]["StartingHashKey"])
        )  # type: ignore[index]
        upper, neighbour = by_start[1]["ShardId"], by_start[2]["ShardId"]
        before = {s["ShardId"] for s in kinesis.list_shards(StreamName=ready.stream)["Shards"]}
        kinesis.merge_shards(
            StreamName=ready.stream, ShardToMerge=upper, AdjacentShardToMerge=neighbour
        )
        (merged,) = {
            s["ShardId"] for s in kinesis.list_shards(StreamName=ready.stream)["Shards"]
        } - before
        drop_merge_copies(ready.stream, merged)
        route_writes_to_open_shards(ready.stream)
        producer.put(200)
        wait_until(lambda: caught_up(aws, ready, producer.tips), 120, "every shard read")
        fleet.stop_all()
        acquired = fleet.events("lease acquired")
        released = [e for e in fleet.events("lease released") if e.get("outcome") == "finished"]
    got = assert_exactly_once(aws, ready, producer.sent)
    table = leases(aws, ready)
    shards = {s["ShardId"]: s for s in kinesis.list_shards(StreamName=ready.stream)["Shards"]}
    assert len(shards) == 5 and len(producer.tips) >= 4, producer.tips
    finished_at = {e["shard_id"]: log_time(e) for e in released}
    for sid, s in shards.items():
        parents = [p for p in (s.get("ParentShardId"), s.get("AdjacentParentShardId")) if p]
        if "EndingSequenceNumber" in s["SequenceNumberRange"]:
            assert table[sid]["checkpoint"] == "SHARD_END", sid
        # A child is first acquired only after each parent was read to its end.
        first = min(log_time(e) for e in acquired if e["shard_id"] == sid)
        assert all(finished_at[p] <= first for p in parents), sid
    report_run("split_and_merge", producer.sent, got, shards=len(shards))
