"""Fixtures of the consumer tests: aiobotocore clients on the test backend, the lease table,
JSON lines written to a chosen shard."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from service.aws import AwsClients, aws_clients
from service.consume.leases import LeaseTable
from service.settings import Settings
from tests.conftest import Aws

PutLines = Callable[..., list[int]]


@pytest.fixture
async def clients(ready: Settings) -> AsyncIterator[AwsClients]:
    async with aws_clients("kinesis", "s3", "dynamodb") as aws:
        yield aws


@pytest.fixture
def table(clients: AwsClients, ready: Settings) -> LeaseTable:
    return LeaseTable(clients.dynamodb, ready.lease_table)


@pytest.fixture
def put_lines(aws: Aws, ready: Settings) -> PutLines:
    """``put_lines(shard_id, n, tag="r")``: write ``n`` JSON lines to one shard (by its
    starting hash key); return their sequence numbers."""
    kinesis = aws.client("kinesis")

    def put(shard_id: str, n: int, tag: str = "r") -> list[int]:
        listing = kinesis.list_shards(StreamName=ready.stream)["Shards"]
        key = next(
            s["HashKeyRange"]["StartingHashKey"] for s in listing if s["ShardId"] == shard_id
        )
        return [
            int(
                kinesis.put_record(
                    StreamName=ready.stream,
                    Data=b'{"message": "%s-%d", "service": "api"}' % (tag.encode(), i),
                    PartitionKey="k",
                    ExplicitHashKey=key,
                )["SequenceNumber"]
            )
            for i in range(n)
        ]

    return put
