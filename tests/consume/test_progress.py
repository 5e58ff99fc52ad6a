"""A shard's progress, as its lease item carries it: totals over flushes and owners, rows per
destination table, dead letters by class, the rate between checkpoints."""

from __future__ import annotations

from service.consume.leases import LeaseTable
from service.consume.progress import ShardProgress, progress_from_item, table_of
from service.consume.renewer import LeaseRenewer
from service.sink.plan import FlushObject, FlushPlan


def plan(*objects: tuple[str, int, int, str], dead_letters: int = 0) -> FlushPlan:
    made = tuple(FlushObject(key, b"x" * size, rows, part) for key, rows, size, part in objects)
    return FlushPlan(made, sum(o.rows for o in made if o.key.endswith(".parquet")), dead_letters)


HOUR = "dt=2026-12-01/hour=05/service=api"
FIRST = plan(
    (f"env/prod/logs/{HOUR}/logs-shardId-1-1-9.parquet", 900, 4000, HOUR),
    (f"env/prod/waf/{HOUR}/logs-shardId-1-1-9.parquet", 100, 1000, HOUR),
    ("env/prod/dead-letter/dt=2026-12-01/logs-shardId-1-1-9.ndjson.gz", 3, 200, "dt=2026-12-01"),
    dead_letters=3,
)


def test_a_flush_adds_rows_by_table_bytes_and_dead_letters_by_class() -> None:
    first = ShardProgress().after_flush(
        FIRST, ["gzip: truncated stream", "avro: no schema"], 1500, 1_000
    )
    assert (first.rows, first.bytes, first.lag_ms, first.at_ms) == (1000, 5200, 1500, 1_000)
    assert first.tables == {"logs": 900, "waf": 100}
    # Two failed to decode (their class); the third row could not be mapped.
    assert first.dead == {"compression": 1, "avro": 1, "unmappable": 1}
    assert first.rows_per_s is None, "one checkpoint gives no rate"

    second = first.after_flush(
        plan((f"env/prod/waf/{HOUR}/x.parquet", 500, 10, HOUR)), [], 0, 11_000
    )
    assert (second.rows, second.tables) == (1500, {"logs": 900, "waf": 600})
    assert second.rows_per_s == 50.0  # 500 rows in the 10 s since the previous checkpoint
    assert second.dead == first.dead and second.lag_ms == 0


def test_the_table_is_the_folder_above_the_partition_whatever_the_prefix() -> None:
    assert table_of(f"waf/{HOUR}/f.parquet", HOUR) == "waf"
    assert table_of(f"a/b/logs/{HOUR}/f.parquet", HOUR) == "logs"


def test_progress_round_trips_through_the_item_map() -> None:
    p = ShardProgress().after_flush(FIRST, ["json: bad"], 7, 5).after_flush(FIRST, [], 9, 2005)
    assert progress_from_item(p.to_item()) == p
    assert progress_from_item(None) is None


async def test_the_checkpoint_writes_the_progress_and_an_heir_reads_it_back(
    table: LeaseTable,
) -> None:
    await table.ensure_shard("s-1", ())
    leases, _ = await table.scan()
    alice = await table.acquire(leases["s-1"], "alice")
    done = ShardProgress().after_flush(FIRST, [], 2500, 1_000)
    await table.checkpoint("s-1", "alice", alice.epoch, 9, progress=done)
    await table.heartbeat("alice", 1, 1_000, lag_ms=2500)
    leases, beats = await table.scan(progress=True)
    assert leases["s-1"].progress == done and beats["alice"].lag_ms == 2500
    # A lease round reads neither: it has no use for them.
    rounds, beats = await table.scan()
    assert rounds["s-1"].progress is None and beats["alice"].lag_ms is None
    # The heir starts from the totals its acquire returns; a checkpoint without progress
    # (a bare SHARD_END) leaves them as they were.
    bob = await table.acquire(leases["s-1"], "bob")
    assert bob.progress == done
    await table.checkpoint("s-1", "bob", bob.epoch, 10)
    leases, _ = await table.scan(progress=True)
    assert leases["s-1"].progress == done


async def test_each_heartbeat_carries_the_workers_largest_lag(table: LeaseTable) -> None:
    renewer = LeaseRenewer(table, "alice", 10.0, lambda: 1.5, lag_ms=lambda: 4200)
    await renewer.beat()
    _, beats = await table.scan(progress=True)
    assert (beats["alice"].beats, beats["alice"].lag_ms, beats["alice"].written_at_ms) == (
        1,
        4200,
        1500,
    )
