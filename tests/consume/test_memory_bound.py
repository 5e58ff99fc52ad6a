"""Issue 14 item 5 / issue 15: the memory budget is a hard bound on a consume worker: a
flush is charged for its rows as well as its bytes, shards charge the budget they share,
and replays of inherited intents queue under it."""

from __future__ import annotations

import asyncio
import dataclasses

from service.aws import AwsClients
from service.consume.leases import LeaseTable
from service.consume.reader import list_shards
from service.consume.shard import Outcome, ShardConsumer
from service.consume.worker import ConsumerWorker
from service.settings import Settings
from tests.conftest import Aws, lineage_counts, object_keys, read_table
from tests.consume.support import context, first_shard, leave_open_intent, owned, put_line_records

# Measured peak of a flush per row of a tiny line (benchmarks, docs/operations.md "Memory"):
# 1M rows of 14-byte lines hold ~340 MiB while they are planned.
TINY_ROW_PEAK = 330


def rows_per_object(aws: Aws, settings: Settings) -> list[int]:
    table = read_table(aws, settings)
    per_key: dict[str, int] = {}
    for seq in table.column("kinesis_sequence_number").to_pylist():
        per_key[seq] = per_key.get(seq, 0) + 1
    ranges = [
        tuple(int(n) for n in key.rsplit(".", 1)[0].split("-")[-2:])
        for key in object_keys(aws, settings.bucket, "logs/")
    ]
    return [sum(n for s, n in per_key.items() if lo <= int(s) <= hi) for lo, hi in ranges]


async def test_a_flood_of_tiny_rows_flushes_by_its_row_charge(
    aws: Aws, clients: AwsClients, ready: Settings, table: LeaseTable
) -> None:
    """Before: the buffer was charged twice its bytes, so 200-line records of 14-byte lines
    flushed 7,600 rows (~2.5 MiB at their peak) for a 256 KiB share."""
    shard = await first_shard(clients, ready)
    lines = put_line_records(aws, ready, shard, records=60, lines=200)
    lease = await owned(table, shard, "w")
    share = 256 * 1024
    consumer = ShardConsumer(
        context(clients, ready, "w"), lease, lease.epoch, closed=False, budget_share=lambda: share
    )
    assert await asyncio.wait_for(consumer.run(asyncio.Event(), drain=True), 60) is Outcome.AT_TIP
    counts = lineage_counts(read_table(aws, ready))
    assert len(counts) == lines and set(counts.values()) == {1}
    # At most the share's worth of rows, plus the record that crossed it.
    assert max(rows_per_object(aws, ready)) <= share // TINY_ROW_PEAK + 200


async def test_replays_that_together_exceed_the_budget_run_one_after_another(
    aws: Aws, clients: AwsClients, ready: Settings, table: LeaseTable
) -> None:
    """Two dead workers' intents of 400 tiny rows each, inherited by a worker whose budget
    holds one such flush but not two. Before: each replay was charged twice its bytes
    (~18 KB for ~130 KB at its peak), so both ran at once."""
    shards = sorted(await list_shards(clients.kinesis, ready.stream))
    lines = 0
    for n, shard in enumerate(shards):
        lines += put_line_records(aws, ready, shard, records=8, lines=50)
        await leave_open_intent(clients, ready, table, shard, f"dead-{n}")
    leases, _ = await table.scan()
    assert all(leases[s].intent_last is not None for s in shards)
    assert object_keys(aws, ready.bucket) == []
    budget = 400 * TINY_ROW_PEAK * 3 // 2
    heir = ConsumerWorker(
        dataclasses.replace(context(clients, ready, "heir")),
        lease_duration=ready.lease_duration,
        memory_budget=budget,
        drain=True,
    )
    await asyncio.wait_for(heir.run(asyncio.Event()), 120)
    assert heir.budget.most_replays == 1
    assert heir.budget.most_held <= budget
    counts = lineage_counts(read_table(aws, ready))
    assert len(counts) == lines and set(counts.values()) == {1}
    leases, _ = await table.scan()
    assert all(leases[s].intent_last is None for s in shards)
