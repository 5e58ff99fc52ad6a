"""One shard consumer against the AWS backend: what it reads, lands and checkpoints."""

from __future__ import annotations

import asyncio

from service.aws import AwsClients
from service.consume.context import ShardContext, shard_context
from service.consume.leases import SHARD_END, LeaseTable, ShardLease
from service.consume.reader import list_shards
from service.consume.shard import Outcome, ShardConsumer
from service.settings import Settings
from tests.conftest import Aws, object_keys


def put(aws: Aws, settings: Settings, shard_id: str, n: int, tag: str = "r") -> list[int]:
    """Write ``n`` JSON lines to one shard; return their sequence numbers."""
    kinesis = aws.client("kinesis")
    listing = kinesis.list_shards(StreamName=settings.stream)["Shards"]
    key = next(s["HashKeyRange"]["StartingHashKey"] for s in listing if s["ShardId"] == shard_id)
    return [
        int(
            kinesis.put_record(
                StreamName=settings.stream,
                Data=b'{"message": "%s-%d", "service": "api"}' % (tag.encode(), i),
                PartitionKey="k",
                ExplicitHashKey=key,
            )["SequenceNumber"]
        )
        for i in range(n)
    ]


async def owned(table: LeaseTable, shard_id: str, worker_id: str) -> ShardLease:
    await table.ensure_shard(shard_id, ())
    leases, _ = await table.scan()
    return await table.acquire(leases[shard_id], worker_id)


def context(clients: AwsClients, settings: Settings, worker_id: str) -> ShardContext:
    return shard_context(settings, clients.kinesis, clients.s3, clients.dynamodb, worker_id)


async def first_shard(clients: AwsClients, settings: Settings) -> str:
    return sorted(await list_shards(clients.kinesis, settings.stream))[0]


async def test_a_shard_marked_shard_end_is_never_read_again(
    aws: Aws, clients: AwsClients, ready: Settings, table: LeaseTable
) -> None:
    shard = await first_shard(clients, ready)
    put(aws, ready, shard, 20)
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
