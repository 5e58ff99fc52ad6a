"""Shared builders of the consumer tests: an owned lease, a shard's context, the first
shard, an S3 client that dies half way through an upload, records of many tiny lines, and
an open intent left by a worker that died mid-flush."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from typing import Any

from service.aws import AwsClients
from service.consume.context import ShardContext, shard_context
from service.consume.leases import LeaseTable, ShardLease
from service.consume.reader import list_shards
from service.consume.shard import ShardConsumer
from service.settings import Settings
from tests.conftest import Aws


async def owned(table: LeaseTable, shard_id: str, worker_id: str) -> ShardLease:
    await table.ensure_shard(shard_id, ())
    leases, _ = await table.scan()
    return await table.acquire(leases[shard_id], worker_id)


def context(clients: AwsClients, settings: Settings, worker_id: str) -> ShardContext:
    return shard_context(settings, clients.kinesis, clients.s3, clients.dynamodb, worker_id)


async def first_shard(clients: AwsClients, settings: Settings) -> str:
    return sorted(await list_shards(clients.kinesis, settings.stream))[0]


class S3DiesAfter:
    """The backend's S3 client, but PutObject fails once ``puts`` objects were written: the
    process died half way through an upload (its intent stays open)."""

    def __init__(self, s3: Any, puts: int) -> None:
        self._s3 = s3
        self.puts = puts

    def __getattr__(self, name: str) -> Any:
        return getattr(self._s3, name)

    async def put_object(self, **kwargs: Any) -> Any:
        if self.puts <= 0:
            await asyncio.sleep(0.5)  # the puts in flight complete first
            raise ConnectionError("the process died here")
        self.puts -= 1
        return await self._s3.put_object(**kwargs)


def put_line_records(aws: Aws, settings: Settings, shard_id: str, records: int, lines: int) -> int:
    """Write ``records`` NDJSON records of ``lines`` tiny lines each to one shard (by its
    starting hash key); return the number of lines."""
    kinesis = aws.client("kinesis")
    listing = kinesis.list_shards(StreamName=settings.stream)["Shards"]
    key = next(s["HashKeyRange"]["StartingHashKey"] for s in listing if s["ShardId"] == shard_id)
    for r in range(records):
        data = b"\n".join(b'{"m":"%d-%d"}' % (r, i) for i in range(lines))
        kinesis.put_record(
            StreamName=settings.stream, Data=data, PartitionKey="k", ExplicitHashKey=key
        )
    return records * lines


async def leave_open_intent(
    clients: AwsClients, settings: Settings, table: LeaseTable, shard_id: str, worker_id: str
) -> None:
    """``worker_id`` reads the whole shard into one flush, writes its intent and dies before
    any object is uploaded: the shard's lease keeps the open intent for an heir to replay."""
    await table.ensure_shard(shard_id, ())
    leases, _ = await table.scan()
    lease = await table.acquire(leases[shard_id], worker_id)
    ctx = dataclasses.replace(context(clients, settings, worker_id), s3=S3DiesAfter(clients.s3, 0))
    consumer = ShardConsumer(ctx, lease, lease.epoch, closed=False, budget_share=lambda: 1 << 40)
    with contextlib.suppress(ExceptionGroup):
        await asyncio.wait_for(consumer.run(asyncio.Event(), drain=True), 60)
