"""Issue 15 "no poison pill": a range the pure planner keeps failing on is dead-lettered
whole after bounded retries and the shard moves on; AWS errors never dead-letter.

No real input is known to make plan_flush raise any longer (the hostile-input work fixed the
ones issue 15 lists), so the planner here is a test-only one passed through the context: the
real plan_flush, except that it raises on any range holding the line ``poison``."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from service.aws import AwsClients
from service.consume.flush import PLAN_ATTEMPTS
from service.consume.leases import LeaseTable
from service.consume.shard import Outcome, ShardConsumer
from service.decode.types import DecodedRecord
from service.settings import Settings
from service.sink.native import supports
from service.sink.plan import FlushPlan, plan_flush
from service.sink.rules import FieldMapping
from tests.conftest import Aws, object_keys, read_dead_letters, read_table
from tests.consume.support import S3DiesAfter, context, first_shard, owned


class PoisonedPlanner:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(
        self, shard_id: str, records: Sequence[DecodedRecord], *args: Any, **kwargs: Any
    ) -> FlushPlan:
        self.calls += 1
        if any(b"poison" in b.payload for r in records for b in r.batches):
            raise ValueError("the encoder cannot take this")
        return plan_flush(shard_id, records, *args, **kwargs)


def put(aws: Aws, settings: Settings, shard_id: str, lines: Sequence[bytes]) -> list[int]:
    kinesis = aws.client("kinesis")
    listing = kinesis.list_shards(StreamName=settings.stream)["Shards"]
    key = next(s["HashKeyRange"]["StartingHashKey"] for s in listing if s["ShardId"] == shard_id)
    return [
        int(
            kinesis.put_record(
                StreamName=settings.stream, Data=line, PartitionKey="k", ExplicitHashKey=key
            )["SequenceNumber"]
        )
        for line in lines
    ]


async def drain_with(
    clients: AwsClients, settings: Settings, table: LeaseTable, shard: str, **ctx: Any
) -> tuple[Outcome, ShardConsumer]:
    lease = await owned(table, shard, "w")
    consumer = ShardConsumer(
        dataclasses.replace(context(clients, settings, "w"), **ctx),
        lease,
        lease.epoch,
        closed=False,
        budget_share=lambda: settings.memory_budget_bytes,
    )
    return await asyncio.wait_for(consumer.run(asyncio.Event(), drain=True), 60), consumer


async def test_a_range_the_planner_keeps_failing_on_is_dead_lettered_and_the_shard_moves_on(
    aws: Aws, clients: AwsClients, ready: Settings, table: LeaseTable
) -> None:
    shard = await first_shard(clients, ready)
    lines = [b'{"message": "ok-%d"}' % i for i in range(4)] + [b'{"message": "poison"}']
    seqs = put(aws, ready, shard, lines)
    planner = PoisonedPlanner()
    outcome, consumer = await drain_with(clients, ready, table, shard, planner=planner)
    assert outcome is Outcome.AT_TIP
    assert planner.calls == PLAN_ATTEMPTS
    dead = read_dead_letters(aws, ready)
    assert [int(d["kinesis_sequence_number"]) for d in dead] == seqs
    assert {d["reason"] for d in dead} == {
        "poisoned: flush failed 3 times: ValueError: the encoder cannot take this"
    }
    assert [base64.b64decode(d["data"]) for d in dead] == lines  # replayable as read
    after = (await table.scan())[0][shard]
    assert (after.checkpoint, after.intent_last) == (seqs[-1], None)
    metrics = consumer.ctx.metrics
    assert metrics.flush_poisoned._value.get() == 1
    # Counted under their own class, never under ``other`` with unknown reasons.
    assert metrics.dead_letters.labels("poisoned")._value.get() == len(lines)
    assert metrics.dead_letters.labels("other")._value.get() == 0
    # The shard moved on: what follows lands as rows.
    later = put(aws, ready, shard, [b'{"message": "after"}'] * 3)
    outcome, _ = await drain_with(clients, ready, table, shard, planner=planner)
    assert outcome is Outcome.AT_TIP
    landed = read_table(aws, ready).column("kinesis_sequence_number").to_pylist()
    assert sorted(int(s) for s in landed) == later


class FailsAfterTakingRecords:
    """The real planner, which takes the records over (``release``) and hollows them, then
    fails once: what a bug in a later step of the flush would do."""

    def __init__(self) -> None:
        self.calls: list[bool] = []  # each call's ``release``
        self.hollowed = False

    def __call__(
        self, shard_id: str, records: list[DecodedRecord], *args: Any, release: bool = False
    ) -> FlushPlan:
        self.calls.append(release)
        plan = plan_flush(shard_id, records, *args, release=release)
        if len(self.calls) == 1:
            self.hollowed = all(not b.payload for r in records for b in r.batches)
            raise ValueError("a later step failed")
        return plan


async def test_a_plan_that_failed_after_taking_its_records_reads_the_range_again(
    aws: Aws, clients: AwsClients, ready: Settings, table: LeaseTable
) -> None:
    shard = await first_shard(clients, ready)
    seqs = put(aws, ready, shard, [b'{"message": "line-%d"}' % i for i in range(6)])
    planner = FailsAfterTakingRecords()
    outcome, _ = await drain_with(clients, ready, table, shard, planner=planner)
    assert outcome is Outcome.AT_TIP
    assert planner.calls == [True, False]  # taken over once, then kept
    # The first attempt left nothing to plan again from (the Python path keeps records).
    assert planner.hollowed is supports(FieldMapping())
    rows = read_table(aws, ready)
    assert sorted(int(s) for s in rows.column("kinesis_sequence_number").to_pylist()) == seqs
    assert sorted(rows.column("message").to_pylist()) == [f"line-{i}" for i in range(6)]
    assert read_dead_letters(aws, ready) == []
    after = (await table.scan())[0][shard]
    assert (after.checkpoint, after.intent_last) == (seqs[-1], None)


async def test_an_aws_error_during_the_upload_never_dead_letters(
    put_lines: Callable[..., list[int]],
    *,
    aws: Aws,
    clients: AwsClients,
    ready: Settings,
    table: LeaseTable,
) -> None:
    shard = await first_shard(clients, ready)
    seqs = put_lines(shard, 5)
    with pytest.raises(ExceptionGroup):  # the worker backs the shard off and replays
        await drain_with(clients, ready, table, shard, s3=S3DiesAfter(clients.s3, 0))
    assert object_keys(aws, ready.bucket) == []
    assert (await table.scan())[0][shard].intent_last == seqs[-1]
    await drain_with(clients, ready, table, shard)
    assert object_keys(aws, ready.bucket, f"{ready.prefix}dead-letter/") == []
    landed = read_table(aws, ready).column("kinesis_sequence_number").to_pylist()
    assert sorted(int(s) for s in landed) == seqs
