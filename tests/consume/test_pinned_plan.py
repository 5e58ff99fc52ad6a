"""Issue 14 item 3: a replay writes exactly the objects its intent planned, whatever the
settings and code of the process that replays (a rolling deploy with open intents)."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from service.aws import AwsClients
from service.consume.context import shard_context
from service.consume.leases import LeaseTable
from service.consume.reader import list_shards
from service.consume.shard import Outcome, ShardConsumer
from service.settings import Settings
from service.sink import plan as plan_module
from service.sink.plan import KeyListing
from tests.conftest import Aws, lineage_counts, object_keys, read_table
from tests.consume.support import S3DiesAfter

LINES = 240
# Process X: small files, no hour in the path, two partitions per flush (the rest __other__).
X = {
    "file_target_bytes": 1024,
    "partition_template": "dt={date}/service={service}",
    "max_partitions_per_flush": 2,
}


def put_services(aws: Aws, settings: Settings, shard_id: str) -> None:
    kinesis = aws.client("kinesis")
    listing = kinesis.list_shards(StreamName=settings.stream)["Shards"]
    key = next(s["HashKeyRange"]["StartingHashKey"] for s in listing if s["ShardId"] == shard_id)
    for i in range(LINES):
        line = b'{"message": "%d %s", "service": "svc%d"}' % (i, b"x" * 64, i % 3)
        kinesis.put_record(
            StreamName=settings.stream, Data=line, PartitionKey="k", ExplicitHashKey=key
        )


async def consume_as(
    clients: AwsClients, settings: Settings, table: LeaseTable, shard: str, worker: str, *, s3: Any
) -> Outcome:
    leases, _ = await table.scan()
    lease = await table.acquire(leases[shard], worker)
    ctx = shard_context(settings, clients.kinesis, s3, clients.dynamodb, worker)
    consumer = ShardConsumer(
        ctx, lease, lease.epoch, closed=False, budget_share=lambda: settings.memory_budget_bytes
    )
    return await asyncio.wait_for(consumer.run(asyncio.Event(), drain=True), 60)


async def half_uploaded_intent(
    aws: Aws, clients: AwsClients, ready: Settings, table: LeaseTable
) -> tuple[str, set[str], set[str]]:
    """Process X reads the shard and dies after uploading 3 of its flush's objects; returns
    the shard, the keys X planned (as its intent lists them, if it could) and those landed."""
    shard = sorted(await list_shards(clients.kinesis, ready.stream))[0]
    put_services(aws, ready, shard)
    await table.ensure_shard(shard, ())
    with pytest.raises(ExceptionGroup):
        await consume_as(
            clients, ready.model_copy(update=X), table, shard, "x", s3=S3DiesAfter(clients.s3, 3)
        )
    _, listing = await table.intent_pin(shard)
    assert listing is not None
    planned = set(KeyListing.decode(listing).keys)
    landed = set(object_keys(aws, ready.bucket))
    assert len(landed) == 3
    assert not planned or landed < planned
    return shard, planned, landed


def assert_every_line_once(aws: Aws, settings: Settings) -> None:
    counts = lineage_counts(read_table(aws, settings))
    assert len(counts) == LINES
    assert set(counts.values()) == {1}


async def test_a_replay_under_other_settings_writes_exactly_the_intents_objects(
    aws: Aws, clients: AwsClients, ready: Settings, table: LeaseTable
) -> None:
    shard, planned, _ = await half_uploaded_intent(aws, clients, ready, table)
    assert len(planned) > 3
    # Process Y (the rolling deploy's new task): default file size, template and partitions.
    assert await consume_as(clients, ready, table, shard, "y", s3=clients.s3) is Outcome.AT_TIP
    assert set(object_keys(aws, ready.bucket)) == planned
    assert_every_line_once(aws, ready)
    after = (await table.scan())[0][shard]
    assert after.intent_last is None
    assert await table.intent_pin(shard) == (None, None)


@pytest.mark.parametrize("listing", ["keys", "prefixes"])
async def test_a_replay_that_cannot_follow_the_plan_removes_the_objects_it_no_longer_writes(
    *,
    aws: Aws,
    clients: AwsClients,
    ready: Settings,
    table: LeaseTable,
    monkeypatch: pytest.MonkeyPatch,
    listing: str,
) -> None:
    """Newer code (here: a plan document version it does not know) names keys differently:
    the replay writes its own and deletes X's, so every line is there once."""
    if listing == "prefixes":  # too many keys for the lease item: directories are listed
        monkeypatch.setattr(plan_module, "KEY_LISTING_LIMIT", 64)
    shard, _, landed = await half_uploaded_intent(aws, clients, ready, table)
    if listing == "prefixes":
        _, raw = await table.intent_pin(shard)
        assert raw is not None
        assert not KeyListing.decode(raw).keys
    await clients.dynamodb.update_item(
        TableName=ready.lease_table,
        Key={"shard_id": {"S": shard}},
        UpdateExpression="SET intent_plan = :p",
        ExpressionAttributeValues={":p": {"B": b"written by code from the future"}},
    )
    assert await consume_as(clients, ready, table, shard, "y", s3=clients.s3) is Outcome.AT_TIP
    keys = object_keys(aws, ready.bucket)
    assert keys and not set(keys) & landed
    assert all("/hour=" in k for k in keys)  # Y's own template
    assert_every_line_once(aws, ready)


async def test_a_lease_round_does_not_read_the_pinned_plan(
    aws: Aws, clients: AwsClients, ready: Settings, table: LeaseTable
) -> None:
    shard, _, _ = await half_uploaded_intent(aws, clients, ready, table)
    captured: list[dict[str, Any]] = []
    ddb = clients.dynamodb

    class Spy:
        def __getattr__(self, name: str) -> Any:
            return getattr(ddb, name)

        async def scan(self, **kwargs: Any) -> Any:
            page = await ddb.scan(**kwargs)
            captured.extend(page.get("Items", []))
            return page

    leases, _ = await LeaseTable(Spy(), ready.lease_table).scan()
    assert leases[shard].intent_last is not None
    item = next(i for i in captured if i["shard_id"]["S"] == shard)
    assert {"intent_plan", "intent_keys", "dedupe", "intent_dedupe"}.isdisjoint(item)


def test_the_plan_document_round_trips_layout_and_mapping(ready: Settings) -> None:
    ctx = shard_context(ready.model_copy(update=X), None, None, None, "w")
    mapping = dataclasses.replace(ctx.mapping, max_past_us=5, message=("msg",))
    doc = plan_module.plan_document(ctx.layout, mapping)
    assert plan_module.plan_from_document(doc) == (ctx.layout, mapping)
    assert len(doc) < 1024
