"""One owned shard: replay an open intent, read, buffer, and flush exactly once (I/O).

The flush protocol (DESIGN §5), per shard:
  1. fenced write of the intent ``[first, last]`` to the lease item;
  2. upload the objects for exactly that range (deterministic keys and bytes);
  3. fenced checkpoint of ``last``, clearing the intent.
A new owner that finds an intent rebuilds exactly that range first, so a retried or
zombie upload rewrites identical bytes, and nothing is lost or written twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any, TypeVar

from service.consume.buffer import FlushPolicy, ShardBuffer
from service.consume.dedupe import ShardDedupe, merge
from service.consume.leases import FROM_START, SHARD_END, LeaseTable, ShardLease
from service.consume.reader import Position, ShardReader
from service.decode import DecoderConfig, RecordMeta
from service.errors import LeaseLostError
from service.sink.glue import PartitionCatalog
from service.sink.mapping import FieldMapping
from service.sink.plan import Layout, plan_flush
from service.sink.s3 import upload_objects
from service.telemetry.metrics import ConsumerMetrics
from service.telemetry.tracing import aws_span, flush_links, span

log = logging.getLogger(__name__)
_T = TypeVar("_T")


class Outcome(Enum):
    FINISHED = "finished"  # closed shard read to its end and checkpointed SHARD_END
    AT_TIP = "at_tip"  # drain mode: read to the current tip, flushed, checkpointed
    STOPPED = "stopped"  # asked to stop: flushed and checkpointed (caller releases)
    LOST = "lost"  # a fenced write failed: someone else owns the shard


@dataclass(frozen=True, slots=True)
class ShardContext:
    """Everything a shard consumer needs, built once per worker."""

    kinesis: Any
    s3: Any
    bucket: str
    stream: str
    leases: LeaseTable
    layout: Layout
    mapping: FieldMapping
    decoders: DecoderConfig
    policy: FlushPolicy
    worker_id: str
    start: Position
    metrics: ConsumerMetrics
    idle_wait: float = 1.0
    catalog: PartitionCatalog | None = None  # Glue registration when configured


def _meta(shard_id: str, record: dict[str, Any]) -> RecordMeta:
    arrival: datetime = record["ApproximateArrivalTimestamp"]
    return RecordMeta(
        shard_id=shard_id,
        sequence_number=int(record["SequenceNumber"]),
        arrival_us=int(arrival.timestamp() * 1_000_000),
        partition_key=record.get("PartitionKey", ""),
    )


class ShardConsumer:
    """Consumes one shard while its lease is ours at ``epoch``."""

    def __init__(
        self,
        ctx: ShardContext,
        lease: ShardLease,
        epoch: int,
        *,
        closed: bool,
        budget_share: Callable[[], int],
    ) -> None:
        self.ctx = ctx
        self.lease = lease
        self.shard_id = lease.shard_id
        self.epoch = epoch
        self.closed = closed
        self.budget_share = budget_share
        self.buffer = ShardBuffer()
        self.millis_behind = 0
        self.checkpoint = lease.checkpoint
        self.reader: ShardReader | None = None
        # Envelopes landed up to the checkpoint, and its bytes as last checkpointed (written
        # with the next intent: a replay of that intent starts from exactly this state).
        self.dedupe = ShardDedupe()
        self._dedupe_at_checkpoint = self.dedupe.encode()

    async def run(self, stop: asyncio.Event, *, drain: bool) -> Outcome:
        """Consume until the shard ends, the tip is reached (drain), ``stop`` is set, or the
        lease is lost. Always flushes and checkpoints what it read, except when lost."""
        try:
            await self._load_dedupe()
            if self.lease.intent_first and self.lease.intent_last:
                await self._replay(self.lease.intent_first, self.lease.intent_last)
            return await self._consume(stop, drain=drain)
        except LeaseLostError:
            log.warning("lease lost", extra={"shard_id": self.shard_id, "epoch": self.epoch})
            self.ctx.metrics.leases_lost.inc()
            return Outcome.LOST

    async def _load_dedupe(self) -> None:
        """The state as of the open intent's first record, else as of the checkpoint, else
        (a child never flushed) the merge of the parents' final states."""
        lease = self.lease
        saved = lease.intent_dedupe if lease.intent_last else None
        saved = saved or lease.dedupe
        if saved is not None:
            self.dedupe = ShardDedupe.decode(saved)
        elif lease.parents:
            states = await self.ctx.leases.dedupe_states(lease.parents)
            self.dedupe = merge(ShardDedupe.decode(s) for s in states)
        self._dedupe_at_checkpoint = self.dedupe.encode()

    def _reader(self, start: Position) -> ShardReader:
        return ShardReader(
            self.ctx.kinesis,
            self.ctx.stream,
            self.shard_id,
            start,
            idle_wait=self.ctx.idle_wait,
            metrics=self.ctx.metrics,
        )

    async def _replay(self, first: str, last: str) -> None:
        """Rebuild an open intent exactly: the same records give the same objects."""
        log.info(
            "replaying intent", extra={"shard_id": self.shard_id, "first": first, "last": last}
        )
        reader = self._reader(Position("AT_SEQUENCE_NUMBER", first))
        buffer = ShardBuffer()
        loop = asyncio.get_running_loop()
        done = False
        while not done:
            batch = await reader.read()
            for record in batch.records:
                if int(record["SequenceNumber"]) > int(last):
                    done = True
                    break
                meta = _meta(self.shard_id, record)
                buffer.add(record["Data"], meta, self.ctx.decoders, loop.time(), self.dedupe)
            done = done or buffer.last == last or (not batch.records and batch.millis_behind == 0)
        if buffer.last != last:
            log.error(
                "intent range no longer readable; checkpointing what was replayed",
                extra={"shard_id": self.shard_id, "wanted": last, "got": buffer.last},
            )
        await self._flush(buffer, last, reason="replay")
        self.ctx.metrics.replays.inc()

    def _start(self) -> Position:
        if self.checkpoint == FROM_START:
            return Position("TRIM_HORIZON")
        if self.checkpoint and self.checkpoint != SHARD_END:
            return Position("AFTER_SEQUENCE_NUMBER", self.checkpoint)
        return self.ctx.start

    async def _consume(self, stop: asyncio.Event, *, drain: bool) -> Outcome:
        reader = self.reader = self._reader(self._start())
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            batch = await _unless_stopped(reader.read(), stop)
            if batch is None:
                break
            self.millis_behind = batch.millis_behind
            m = self.ctx.metrics
            for record in batch.records:
                data: bytes = record["Data"]
                meta = _meta(self.shard_id, record)
                self.buffer.add(data, meta, self.ctx.decoders, loop.time(), self.dedupe)
                m.records_read.inc()
                m.bytes_read.inc(len(data))
            at_tip = not batch.records and batch.millis_behind == 0
            # moto never ends a closed shard's iterator; ListShards' EndingSequenceNumber
            # (``closed``) plus an empty read at the tip marks the end there.
            if batch.shard_end or (self.closed and at_tip):
                await self._flush_buffer("shard_end")
                await self._checkpoint(SHARD_END)
                return Outcome.FINISHED
            if drain and at_tip:
                await self._flush_buffer("drain")
                return Outcome.AT_TIP
            reason = self.ctx.policy.reason(self.buffer, loop.time(), self.budget_share())
            if reason:
                await self._flush_buffer(reason)
            if not batch.records:
                await _unless_stopped(reader.idle(), stop)
        await self._flush_buffer("shutdown")
        return Outcome.STOPPED

    async def _flush_buffer(self, reason: str) -> None:
        buffer, self.buffer = self.buffer, ShardBuffer()
        if buffer.last is not None:
            await self._flush(buffer, buffer.last, reason=reason)

    async def _flush(self, buffer: ShardBuffer, last: str, *, reason: str) -> None:
        ctx = self.ctx
        first = buffer.first or last
        started = time.perf_counter()
        # A new trace per flush, linked to the request spans whose lines it writes (at most
        # MAX_FLUSH_LINKS): one flush serves many requests, so they cannot all be parents.
        attributes = {"shard_id": self.shard_id, "reason": reason, "first": first, "last": last}
        with span("tideway.flush", attributes=attributes, links=flush_links(buffer.records)):
            with span("tideway.encode"):
                plan = await asyncio.to_thread(
                    plan_flush, self.shard_id, buffer.records, buffer.dead, ctx.layout, ctx.mapping
                )
            await ctx.leases.write_intent(
                self.shard_id,
                ctx.worker_id,
                self.epoch,
                first,
                last,
                dedupe=self._dedupe_at_checkpoint,
            )
            with (
                aws_span("S3", "PutObject", objects=len(plan.objects), bytes=plan.bytes_out),
                ctx.metrics.aws_call("s3_upload"),
            ):
                await upload_objects(ctx.s3, ctx.bucket, plan.objects)
            if ctx.catalog is not None:
                await ctx.catalog.register_plan(plan)
            await self._checkpoint(last)
            ctx.metrics.observe_flush(reason, plan, buffer, time.perf_counter() - started)
            log.info(
                "flushed",
                extra={
                    "shard_id": self.shard_id,
                    "first": first,
                    "last": last,
                    "rows": plan.rows,
                    "files": len(plan.objects),
                    "dead_letters": plan.dead_letters,
                    "reason": reason,
                },
            )

    async def _checkpoint(self, seq: str) -> None:
        # Flushes run between reads, so the state now is the state after ``seq``.
        state = self.dedupe.encode()
        await self.ctx.leases.checkpoint(
            self.shard_id, self.ctx.worker_id, self.epoch, seq, dedupe=state
        )
        self.checkpoint = seq
        self._dedupe_at_checkpoint = state


async def _unless_stopped(work: Coroutine[Any, Any, _T], stop: asyncio.Event) -> _T | None:
    """``await work``, or cancel it and return None once ``stop`` is set (a hand-off or
    SIGTERM must not wait out a read stuck in backoff; nothing is committed inside a read)."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait((task, stopped), return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if task.cancelled():
        return None
    return task.result()
