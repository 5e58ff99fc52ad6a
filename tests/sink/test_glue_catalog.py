"""The Glue partition cache: bounded, and a failed batch never costs the ones that landed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from service.aws import aws_clients
from service.sink.glue import CatalogError, PartitionCatalog, table_input
from tests.conftest import Aws


class CountingGlue:
    """The backend's Glue client; counts the partitions sent, fails chosen calls."""

    def __init__(self, glue: Any, fail_calls: set[int] | None = None) -> None:
        self._glue = glue
        self.fail_calls = fail_calls or set()
        self.calls = 0
        self.sent: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._glue, name)

    async def batch_create_partition(self, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls in self.fail_calls:
            entries = kwargs["PartitionInputList"]
            error = {"ErrorCode": "InternalServiceException", "ErrorMessage": "try again"}
            return {
                "Errors": [{"PartitionValues": e["Values"], "ErrorDetail": error} for e in entries]
            }
        self.sent.extend("/".join(e["Values"]) for e in kwargs["PartitionInputList"])
        return await self._glue.batch_create_partition(**kwargs)


@pytest.fixture
async def glue(aws: Aws) -> AsyncIterator[Any]:
    async with aws_clients("glue") as clients:
        await clients.glue.create_database(DatabaseInput={"Name": "logsdb"})
        await clients.glue.create_table(
            DatabaseName="logsdb",
            TableInput=table_input("logs", "s3://b/logs", ["dt", "hour", "service"]),
        )
        yield clients.glue


def paths(n: int) -> list[str]:
    return [f"dt=2026-11-30/hour=00/service=s{i:03d}" for i in range(n)]


async def test_a_batch_that_fails_after_others_landed_is_the_only_one_sent_again(
    glue: Any,
) -> None:
    counting = CountingGlue(glue, fail_calls={2})
    catalog = PartitionCatalog(counting, "logsdb", "logs", "s3://b/logs")
    with pytest.raises(CatalogError):
        await catalog.register(paths(150))  # 100 land, the next 50 fail
    assert len(counting.sent) == 100
    await catalog.register(paths(150))
    assert len(counting.sent) == 150  # not 250: the first 100 are not sent again
    assert len(set(counting.sent)) == 150


async def test_the_cache_of_registered_partitions_is_bounded(glue: Any) -> None:
    counting = CountingGlue(glue)
    catalog = PartitionCatalog(counting, "logsdb", "logs", "s3://b/logs", max_known=3)
    for path in paths(5):
        await catalog.register([path])
    await catalog.register(paths(5)[-3:])  # the newest are still known: no call
    assert counting.calls == 5
    await catalog.register(paths(5)[:1])  # the oldest was forgotten: asked again, harmless
    assert counting.calls == 6
