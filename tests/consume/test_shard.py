"""One shard consumer against the AWS backend: what it reads, lands and checkpoints."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from service.aws import AwsClients
from service.consume.budget import MemoryBudget
from service.consume.buffer import FLUSH_WORKING_SET
from service.consume.leases import SHARD_END, LeaseTable
from service.consume.shard import Outcome, ShardConsumer
from service.settings import Settings
from tests.conftest import Aws, object_keys, read_table
from tests.consume.support import context, first_shard, owned


async def test_a_shard_marked_shard_end_is_never_read_again(
    put_lines: Callable[..., list[int]],
    aws: Aws,
    clients: AwsClients,
    ready: Settings,
    table: LeaseTable,
) -> None:
    shard = await first_shard(clients, ready)
    put_lines(shard, 20)
    lease = await owned(table, shard, "w")
    await table.checkpoint(shard, "w", lease.epoch, SHARD_END)
    leases, _ = await table.scan()
    consumer = ShardConsumer(
        context(clients, ready, "w"),
        leases[shard],
        lease.epoch,
        closed=False,
        budget_share=lambda: ready.memory_budget_bytes,
    )
    outcome = await asyncio.wait_for(consumer.run(asyncio.Event(), drain=True), 30)
    assert outcome is Outcome.FINISHED
    assert object_keys(aws, ready.bucket) == []
    assert (await table.scan())[0][shard].checkpoint is SHARD_END


class EmptyPagesFirst:
    """The backend's Kinesis client, but the first ``pages`` GetRecords answer an empty page
    (as Kinesis may while records follow), with MillisBehindLatest 0 or without it."""

    def __init__(self, kinesis: Any, pages: int, *, millis_behind: bool = True) -> None:
        self._kinesis = kinesis
        self.pages = pages
        self.millis_behind = millis_behind

    def __getattr__(self, name: str) -> Any:
        return getattr(self._kinesis, name)

    async def get_records(self, **kwargs: Any) -> Any:
        if self.pages > 0:
            self.pages -= 1
            page: dict[str, Any] = {"Records": [], "NextShardIterator": kwargs["ShardIterator"]}
            if self.millis_behind:
                page["MillisBehindLatest"] = 0
            return page
        return await self._kinesis.get_records(**kwargs)


def landed_sequences(aws: Aws, settings: Settings) -> list[int]:
    table = read_table(aws, settings)
    if table.num_rows == 0:
        return []
    return sorted(int(s) for s in table.column("kinesis_sequence_number").to_pylist())


async def run_consumer(
    clients: AwsClients,
    settings: Settings,
    table: LeaseTable,
    shard: str,
    kinesis: Any,
    **kwargs: Any,
) -> Outcome:
    leases, _ = await table.scan()
    ctx = dataclasses.replace(context(clients, settings, "w"), kinesis=kinesis)
    lease = leases[shard]
    consumer = ShardConsumer(
        ctx, lease, lease.epoch, budget_share=lambda: settings.memory_budget_bytes, **kwargs
    )
    return await asyncio.wait_for(consumer.run(asyncio.Event(), drain=True), 60)


@pytest.mark.parametrize("millis_behind", [True, False], ids=["zero_lag", "no_lag_field"])
async def test_replay_reads_past_empty_pages_to_the_intents_last_record(
    put_lines: Callable[..., list[int]],
    *,
    aws: Aws,
    clients: AwsClients,
    ready: Settings,
    table: LeaseTable,
    millis_behind: bool,
) -> None:
    """Issue 14 item 2: replay stopped on an empty page and checkpointed data never written."""
    shard = await first_shard(clients, ready)
    seqs = put_lines(shard, 6)
    lease = await owned(table, shard, "w")
    await table.write_intent(shard, "w", lease.epoch, seqs[0], seqs[-1])  # then died
    kinesis = EmptyPagesFirst(clients.kinesis, 2, millis_behind=millis_behind)
    await run_consumer(clients, ready, table, shard, kinesis, closed=False)
    assert landed_sequences(aws, ready) == seqs
    after = (await table.scan())[0][shard]
    assert (after.checkpoint, after.intent_last) == (seqs[-1], None)


async def test_a_closed_shard_is_finished_only_past_its_ending_sequence_number(
    put_lines: Callable[..., list[int]],
    aws: Aws,
    clients: AwsClients,
    ready: Settings,
    table: LeaseTable,
) -> None:
    """Issue 14 item 2: an empty page at the tip of a closed shard marked it SHARD_END
    before its records were read."""
    shard = await first_shard(clients, ready)
    seqs = put_lines(shard, 5)
    await owned(table, shard, "w")
    kinesis = EmptyPagesFirst(clients.kinesis, 1)
    outcome = await run_consumer(
        clients, ready, table, shard, kinesis, closed=True, ending=seqs[-1]
    )
    assert outcome is Outcome.FINISHED
    assert landed_sequences(aws, ready) == seqs
    assert (await table.scan())[0][shard].checkpoint is SHARD_END


class RecordsLimits:
    """The backend's Kinesis client; remembers the Limit of every GetRecords."""

    def __init__(self, kinesis: Any) -> None:
        self._kinesis = kinesis
        self.limits: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._kinesis, name)

    async def get_records(self, **kwargs: Any) -> Any:
        self.limits.append(kwargs["Limit"])
        return await self._kinesis.get_records(**kwargs)


async def test_a_shard_never_buffers_past_its_share_of_the_memory_budget(
    aws: Aws, clients: AwsClients, ready: Settings, table: LeaseTable
) -> None:
    """Issue 14 item 5: the budget was checked once per GetRecords page (up to 10,000
    records), so one page could hold many times a shard's share."""
    shard = await first_shard(clients, ready)
    kinesis = aws.client("kinesis")
    key = kinesis.list_shards(StreamName=ready.stream)["Shards"][0]["HashKeyRange"]
    line = b'{"message": "%d ' + b"x" * 2000 + b'"}'
    for i in range(120):
        kinesis.put_record(
            StreamName=ready.stream,
            Data=line % i,
            PartitionKey="k",
            ExplicitHashKey=key["StartingHashKey"],
        )
    await owned(table, shard, "w")
    share = 40 * 1024
    counting = RecordsLimits(clients.kinesis)
    leases, _ = await table.scan()
    ctx = dataclasses.replace(context(clients, ready, "w"), kinesis=counting)
    consumer = ShardConsumer(
        ctx, leases[shard], leases[shard].epoch, closed=False, budget_share=lambda: share
    )
    await asyncio.wait_for(consumer.run(asyncio.Event(), drain=True), 60)
    ranges = [
        tuple(int(n) for n in key.rsplit(".", 1)[0].split("-")[-2:])
        for key in object_keys(aws, ready.bucket, "logs/")
    ]
    assert len(landed_sequences(aws, ready)) == 120
    per_record = len(line) + 400  # payload plus the buffer's per-record overhead
    most = share // (FLUSH_WORKING_SET * per_record) + 1
    assert max(last - first + 1 for first, last in ranges) <= most
    assert max(counting.limits[1:]) <= most  # pages sized to the share once sizes are known


async def test_a_shard_pauses_while_replays_hold_the_budget_instead_of_writing_tiny_files(
    put_lines: Callable[..., list[int]],
    aws: Aws,
    clients: AwsClients,
    ready: Settings,
    table: LeaseTable,
) -> None:
    shard = await first_shard(clients, ready)
    seqs = put_lines(shard, 10)
    await owned(table, shard, "w")
    budget = MemoryBudget(1024 * 1024)
    leases, _ = await table.scan()
    consumer = ShardConsumer(
        context(clients, ready, "w"),
        leases[shard],
        leases[shard].epoch,
        closed=False,
        budget_share=lambda: budget.share(1),
        budget=budget,
    )
    async with budget.hold(budget.total):  # a replay of another shard holds it all
        task = asyncio.create_task(consumer.run(asyncio.Event(), drain=True))
        await asyncio.sleep(1.0)
        assert object_keys(aws, ready.bucket) == []
    assert await asyncio.wait_for(task, 30) is Outcome.AT_TIP
    assert landed_sequences(aws, ready) == seqs
    assert len(object_keys(aws, ready.bucket, "logs/")) == 1
