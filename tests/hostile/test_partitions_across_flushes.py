"""A producer that sends new service names in every flush cannot open partitions without
bound: a shard opens at most ``max_partitions_per_flush`` partitions an hour, across
flushes, restarts and hand-offs; the rest lands under ``service=__other__`` with the
original name in ``attributes`` (issue 15). Real consumer, moto."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import orjson
import pytest

from service.aws import AwsClients, aws_clients
from service.consume.leases import LeaseTable
from service.consume.shard import Outcome, ShardConsumer
from service.settings import Settings
from service.sink.partition import OTHER_SERVICE
from tests.conftest import Aws, object_keys, read_table
from tests.consume.support import S3DiesAfter, context, first_shard, owned

LIMIT = 4
FLUSHES = 10
NEW_NAMES_A_FLUSH = 3


@pytest.fixture
async def clients(ready: Settings) -> AsyncIterator[AwsClients]:
    async with aws_clients("kinesis", "s3", "dynamodb") as aws:
        yield aws


def put(aws: Aws, settings: Settings, shard_id: str, lines: list[bytes]) -> None:
    kinesis = aws.client("kinesis")
    shards = kinesis.list_shards(StreamName=settings.stream)["Shards"]
    key = next(s["HashKeyRange"]["StartingHashKey"] for s in shards if s["ShardId"] == shard_id)
    for line in lines:
        kinesis.put_record(
            StreamName=settings.stream, Data=line, PartitionKey="k", ExplicitHashKey=key
        )


def arrival_hours(aws: Aws, settings: Settings, shard_id: str) -> set[int]:
    kinesis = aws.client("kinesis")
    iterator = kinesis.get_shard_iterator(
        StreamName=settings.stream, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    records = kinesis.get_records(ShardIterator=iterator, Limit=10_000)["Records"]
    stamps: list[datetime] = [r["ApproximateArrivalTimestamp"] for r in records]
    return {int(t.timestamp()) // 3600 for t in stamps}


async def drain(
    clients: AwsClients, settings: Settings, shard: str, worker: str, s3: Any = None
) -> None:
    """One consumer from the lease item as the table holds it (a restart, or a hand-off
    when ``worker`` changes): it reads to the tip and flushes once."""
    table = LeaseTable(clients.dynamodb, settings.lease_table)
    lease = await owned(table, shard, worker)
    ctx = context(clients, settings, worker)
    consumer = ShardConsumer(
        ctx if s3 is None else dataclasses.replace(ctx, s3=s3),
        lease,
        lease.epoch,
        closed=False,
        budget_share=lambda: settings.memory_budget_bytes,
    )
    outcome = await asyncio.wait_for(consumer.run(asyncio.Event(), drain=True), 60)
    assert outcome is Outcome.AT_TIP


async def test_new_service_names_in_every_flush_open_at_most_the_limit_an_hour(
    aws: Aws, clients: AwsClients, ready: Settings
) -> None:
    settings = ready.model_copy(update={"max_partitions_per_flush": LIMIT})
    shard = await first_shard(clients, settings)
    sent: dict[str, str] = {}
    for flush in range(FLUSHES):
        names = [f"tenant-{flush}-{n}" for n in range(NEW_NAMES_A_FLUSH)]
        lines = [orjson.dumps({"message": f"m-{name}", "service": name}) for name in names]
        sent.update({f"m-{name}": name for name in names})
        put(aws, settings, shard, lines)
        # The first half by one worker (each flush a restart from the lease item), the rest
        # by another (a hand-off): the bound travels with the checkpoint.
        await drain(clients, settings, shard, "w1" if flush < FLUSHES // 2 else "w2")

    rows = read_table(aws, settings).to_pylist()
    assert sorted(r["message"] for r in rows) == sorted(sent)  # nothing lost or duplicated
    by_hour: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        by_hour[f"{row['dt']}/{row['hour']}"].add(str(row["service"]))
        original = row["service"]
        if row["service"] == OTHER_SERVICE:
            original = orjson.loads(row["attributes"])["service"]
        assert original == sent[row["message"]], row  # the original name is kept
    # Lines carry no time, so a line's event hour is its arrival hour; a run that crosses
    # an hour boundary may open the limit once in each hour.
    hours = arrival_hours(aws, settings, shard)
    assert len(hours) in (1, 2)
    assert all(len(services) <= LIMIT for services in by_hour.values()), by_hour
    assert sum(len(s) for s in by_hour.values()) <= LIMIT * len(hours)
    assert any(OTHER_SERVICE in services for services in by_hour.values())
    # Without the bound each flush would have opened its three names: 30 partitions.
    assert len(sent) == FLUSHES * NEW_NAMES_A_FLUSH


def lines_of(names: list[str]) -> list[bytes]:
    return [orjson.dumps({"message": f"m-{name}", "service": name}) for name in names]


async def test_a_replay_by_another_worker_chooses_the_partitions_the_intent_chose(
    aws: Aws, clients: AwsClients, ready: Settings
) -> None:
    settings = ready.model_copy(update={"max_partitions_per_flush": LIMIT})
    shard = await first_shard(clients, settings)
    first = [f"first-{n}" for n in range(LIMIT - 1)]  # the hour's named places
    put(aws, settings, shard, lines_of(first))
    await drain(clients, settings, shard, "w1")
    # Two partitions: an opened one (its own name) and __other__ (the new names).
    put(aws, settings, shard, lines_of([f"late-{n}" for n in range(5)]))
    put(aws, settings, shard, [orjson.dumps({"message": "again", "service": first[0]})])
    with pytest.raises(ExceptionGroup):  # dies after one object of the flush's upload
        await drain(clients, settings, shard, "w1", s3=S3DiesAfter(clients.s3, 1))
    written_before = set(object_keys(aws, settings.bucket))
    await drain(clients, settings, shard, "w2")  # replays the open intent

    keys = object_keys(aws, settings.bucket)
    assert written_before <= set(keys)  # the same keys: the replay chose the same partitions
    rows = read_table(aws, settings).to_pylist()
    assert len(rows) == len(first) + 6 and len({r["message"] for r in rows}) == len(rows)
    late = [r for r in rows if r["message"].startswith("m-late-")]
    assert {r["service"] for r in late} == {OTHER_SERVICE}
    assert sorted(orjson.loads(r["attributes"])["service"] for r in late) == [
        f"late-{n}" for n in range(5)
    ]
    assert len({(r["dt"], r["hour"], r["service"]) for r in rows}) <= LIMIT
