"""Shared builders of the consumer tests: an owned lease, a shard's context, the first
shard, and an S3 client that dies half way through an upload."""

from __future__ import annotations

import asyncio
from typing import Any

from service.aws import AwsClients
from service.consume.context import ShardContext, shard_context
from service.consume.leases import LeaseTable, ShardLease
from service.consume.reader import list_shards
from service.settings import Settings


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
