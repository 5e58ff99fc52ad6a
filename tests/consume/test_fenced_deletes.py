"""S3 deletes and uploads during a rolling deploy are fenced: the stale objects of a replayed
intent are listed in its checkpoint and deleted only after it landed (so a fenced owner
deletes nothing), by the next owner if this one dies, and again for a grace period; an
owner whose lease went stale on its own clock uploads nothing."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from service.aws import AwsClients
from service.consume import flush as flush_module
from service.consume.context import shard_context
from service.consume.flush import PendingDeletes
from service.consume.leases import LeaseTable
from service.consume.shard import Outcome, ShardConsumer
from service.settings import Settings
from tests.conftest import Aws, object_keys
from tests.consume.test_pinned_plan import (
    assert_every_line_once,
    consume_as,
    half_uploaded_intent,
)

FUTURE_PLAN = b"written by code from the future"


async def pin_a_plan_this_code_cannot_follow(
    clients: AwsClients, ready: Settings, shard: str
) -> None:
    """The replay then names keys its own way, and X's landed objects are stale."""
    await clients.dynamodb.update_item(
        TableName=ready.lease_table,
        Key={"shard_id": {"S": shard}},
        UpdateExpression="SET intent_plan = :p",
        ExpressionAttributeValues={":p": {"B": FUTURE_PLAN}},
    )


class TakenBeforeCheckpoint:
    """The lease table, but another worker takes the shard just before this checkpoint:
    the replaying owner was paused past its lease (a zombie) and its checkpoint is fenced."""

    def __init__(self, table: LeaseTable) -> None:
        self._table = table

    def __getattr__(self, name: str) -> Any:
        return getattr(self._table, name)

    async def checkpoint(self, shard_id: str, *args: Any, **kwargs: Any) -> None:
        leases, _ = await self._table.scan()
        await self._table.acquire(leases[shard_id], "heir")
        await self._table.checkpoint(shard_id, *args, **kwargs)


class DeletesDie:
    """The backend's S3 client, but the process dies at its first DeleteObjects."""

    def __init__(self, s3: Any) -> None:
        self._s3 = s3

    def __getattr__(self, name: str) -> Any:
        return getattr(self._s3, name)

    async def delete_objects(self, **kwargs: Any) -> Any:
        raise ConnectionError("the process died here")


async def pending_item(clients: AwsClients, ready: Settings, shard: str) -> set[str]:
    item = await clients.dynamodb.get_item(
        TableName=ready.lease_table, Key={"shard_id": {"S": shard}}, ConsistentRead=True
    )
    return set(PendingDeletes.decode(item["Item"].get("pending_deletes", {}).get("B")))


async def test_a_fenced_replay_deletes_none_of_the_objects_it_found_stale(
    aws: Aws, clients: AwsClients, ready: Settings, table: LeaseTable
) -> None:
    """Seen failing before: the zombie deleted X's objects, then its checkpoint failed."""
    shard, _, landed = await half_uploaded_intent(aws, clients, ready, table)
    await pin_a_plan_this_code_cannot_follow(clients, ready, shard)
    leases, _ = await table.scan()
    lease = await table.acquire(leases[shard], "zombie")
    ctx = shard_context(ready, clients.kinesis, clients.s3, clients.dynamodb, "zombie")
    ctx = dataclasses.replace(ctx, leases=TakenBeforeCheckpoint(table))
    consumer = ShardConsumer(
        ctx, lease, lease.epoch, closed=False, budget_share=lambda: ready.memory_budget_bytes
    )
    outcome = await asyncio.wait_for(consumer.run(asyncio.Event(), drain=True), 60)
    assert outcome is Outcome.LOST
    assert landed <= set(object_keys(aws, ready.bucket))
    assert await pending_item(clients, ready, shard) == set()


async def test_stale_objects_are_listed_in_the_checkpoint_and_the_next_owner_deletes_them(
    aws: Aws, clients: AwsClients, ready: Settings, table: LeaseTable
) -> None:
    """Y checkpoints its replay and dies before deleting X's objects: the lease item lists
    them (every key X's intent planned, landed or still to land from a zombie), and Z, the
    next owner, deletes them. Seen failing before (nothing was listed)."""
    shard, planned, landed = await half_uploaded_intent(aws, clients, ready, table)
    await pin_a_plan_this_code_cannot_follow(clients, ready, shard)
    with pytest.raises(ConnectionError):
        await consume_as(clients, ready, table, shard, "y", s3=DeletesDie(clients.s3))
    assert await pending_item(clients, ready, shard) == planned
    assert landed <= set(object_keys(aws, ready.bucket))  # both key sets: not yet deleted
    assert await consume_as(clients, ready, table, shard, "z", s3=clients.s3) is Outcome.AT_TIP
    assert not landed & set(object_keys(aws, ready.bucket))
    assert_every_line_once(aws, ready)


async def test_an_owner_whose_lease_went_stale_on_its_clock_uploads_nothing(
    aws: Aws, clients: AwsClients, ready: Settings, table: LeaseTable
) -> None:
    shard, _, landed = await half_uploaded_intent(aws, clients, ready, table)
    leases, _ = await table.scan()
    lease = await table.acquire(leases[shard], "paused")
    ctx = shard_context(ready, clients.kinesis, clients.s3, clients.dynamodb, "paused")
    consumer = ShardConsumer(
        ctx,
        lease,
        lease.epoch,
        closed=False,
        budget_share=lambda: ready.memory_budget_bytes,
        alive=lambda: False,  # no heartbeat landed for a lease duration
    )
    outcome = await asyncio.wait_for(consumer.run(asyncio.Event(), drain=True), 60)
    assert outcome is Outcome.LOST
    assert set(object_keys(aws, ready.bucket)) == landed
    assert (await table.scan())[0][shard].intent_last is not None  # the heir replays it


async def test_pending_deletes_are_issued_again_until_the_grace_has_passed(
    aws: Aws,
    clients: AwsClients,
    ready: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A zombie's PutObject signed before it was fenced may land after the heir deleted the
    key: the heir deletes it again until no such request can still be valid."""
    monkeypatch.setattr(flush_module, "DELETE_GRACE", 0.2)
    ctx = shard_context(ready, clients.kinesis, clients.s3, clients.dynamodb, "heir")
    key = "logs/stale-object.parquet"
    pending = PendingDeletes(None, asyncio.get_running_loop())
    pending.add(frozenset({key}))
    await clients.s3.put_object(Bucket=ready.bucket, Key=key, Body=b"zombie")
    await pending.issue_due(ctx, "s")
    assert key not in object_keys(aws, ready.bucket)
    assert pending.encode() is not None  # still within the grace: kept in the checkpoint
    await clients.s3.put_object(Bucket=ready.bucket, Key=key, Body=b"zombie, late")
    await asyncio.sleep(0.25)
    await pending.issue_due(ctx, "s")
    assert key not in object_keys(aws, ready.bucket)
    assert pending.encode() is None  # this delete was sent after the grace: forgotten
