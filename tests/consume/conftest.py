"""Fixtures of the consumer tests: aiobotocore clients on the test backend, the lease table."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from service.aws import AwsClients, aws_clients
from service.consume.leases import LeaseTable
from service.settings import Settings


@pytest.fixture
async def clients(ready: Settings) -> AsyncIterator[AwsClients]:
    async with aws_clients("kinesis", "s3", "dynamodb") as aws:
        yield aws


@pytest.fixture
def table(clients: AwsClients, ready: Settings) -> LeaseTable:
    return LeaseTable(clients.dynamodb, ready.lease_table)
