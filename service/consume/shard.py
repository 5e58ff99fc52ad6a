"""One owned shard: replay an open intent, read, buffer, and flush exactly once (I/O).

The flush protocol (DESIGN §5), per shard:
  1. fenced write of the intent ``[first, last]`` to the lease item;
  2. upload the objects for exactly that range (deterministic keys and bytes);
  3. fenced checkpoint of ``last``, clearing the intent.
A new owner that finds an intent rebuilds exactly that range first, so a retried or
zombie upload rewrites identical bytes, and nothing is lost or written twice. The intent
also pins the plan (service/sink/plan.py: the plan document and the key listing): a replay
plans with the intent's layout and mapping, not its own settings, and deletes the listed
objects its own plan no longer has (renamed keys): listed in the checkpoint (fenced) and
deleted after it, again for DELETE_GRACE, by this owner or the next; a fenced owner never
deletes. Each object-creating S3 call is sent only while the lease is fresh on this
process's monotonic clock (``alive``): a paused owner stops uploading (flush.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from enum import Enum
from typing import Any

from service.consume.budget import FIRST_RECORD_GUESS, MemoryBudget, ShardAccount, read_limit
from service.consume.buffer import ShardBuffer
from service.consume.context import ShardContext
from service.consume.dedupe import ShardDedupe, merge
from service.consume.flush import (
    PendingDeletes,
    Pin,
    find_stale,
    intent_pin,
    land,
    opened_at_checkpoint,
    plan_range,
    unless_stopped,
)
from service.consume.leases import FROM_START, SHARD_END, ShardLease
from service.consume.progress import ShardProgress
from service.consume.reader import Position, ShardReader, passed_end, record_meta
from service.consume.sequence import Checkpoint
from service.errors import LeaseLostError
from service.pipeline.cost import routing_cost
from service.sink.plan import KeyListing, plan_document, planned_keys
from service.telemetry.tracing import aws_span, flush_links, span

__all__ = ["Outcome", "ShardConsumer", "ShardContext"]
log = logging.getLogger(__name__)
# Decoding runs on the event loop: a 10,000-record page must not hold the heartbeat and the
# other shards' reads back for seconds, so it yields every this many records.
YIELD_EVERY = 64


class Outcome(Enum):
    FINISHED = "finished"  # closed shard read to its end and checkpointed SHARD_END
    AT_TIP = "at_tip"  # drain mode: read to the current tip, flushed, checkpointed
    STOPPED = "stopped"  # asked to stop: flushed and checkpointed (caller releases)
    LOST = "lost"  # a fenced write failed: someone else owns the shard


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
        ending: int | None = None,
        budget: MemoryBudget | None = None,
        alive: Callable[[], bool] = lambda: True,
    ) -> None:
        self.ctx = ctx
        self.alive = alive  # the lease is still ours on our monotonic clock (self-fencing)
        self.lease = lease
        self.shard_id = lease.shard_id
        self.epoch = epoch
        self.closed = closed
        self.ending = ending  # EndingSequenceNumber when closed (updated by the worker)
        self.budget_share = budget_share
        self.budget = budget  # the worker's: replays hold it, the buffer is charged to it
        self.account = ShardAccount(budget, budget_share)
        self.record_charge = FIRST_RECORD_GUESS  # flush charge per record, as last read
        self.raw_bytes = FIRST_RECORD_GUESS  # Kinesis bytes per record, as last read
        self.buffer = ShardBuffer(routing=ctx.routing())
        self.millis_behind = 0  # as last reported; 0 until Kinesis says otherwise
        self.checkpoint = lease.checkpoint
        self.reader: ShardReader | None = None
        # Envelopes landed up to the checkpoint, and its bytes as last checkpointed (written
        # with the next intent: a replay of that intent starts from exactly this state).
        self.dedupe = ShardDedupe()
        self._dedupe_at_checkpoint = self.dedupe.encode()
        # Partitions opened this hour as of the checkpoint (pinned by every flush's plan).
        self.opened = opened_at_checkpoint(self.shard_id, lease.partitions)
        self.pending = PendingDeletes()  # the checkpoint's stale keys (set by run)
        self.progress = lease.progress or ShardProgress()  # written with each checkpoint

    async def run(self, stop: asyncio.Event, *, drain: bool) -> Outcome:
        """Consume until the shard ends, the tip is reached (drain), ``stop`` is set, or the
        lease is lost. Always flushes and checkpoints what it read, except when lost."""
        if self.lease.finished:
            return Outcome.FINISHED  # SHARD_END: read to its end already, never read again
        try:
            self.pending = PendingDeletes(self.lease.pending_deletes, asyncio.get_running_loop())
            await self.pending.issue_due(self.ctx, self.shard_id)  # a previous owner's
            await self._load_dedupe()
            lease = self.lease
            if lease.intent_first is not None and lease.intent_last is not None:
                # The intent records its flush's charge; one written without it may have
                # held a whole budget.
                need = lease.intent_bytes or (self.budget.total if self.budget else 1 << 62)
                if self.budget is None:
                    await self._replay(lease.intent_first, lease.intent_last, need)
                else:
                    async with self.budget.hold(need) as held:
                        await self._replay(lease.intent_first, lease.intent_last, held)
            return await self._consume(stop, drain=drain)
        except LeaseLostError:
            log.warning("lease lost", extra={"shard_id": self.shard_id, "epoch": self.epoch})
            self.ctx.metrics.leases_lost.inc()
            return Outcome.LOST
        finally:
            self.account.release()

    async def _load_dedupe(self) -> None:
        """The state as of the open intent's first record, else as of the checkpoint, else
        (a child never flushed) the merge of the parents' final states."""
        lease = self.lease
        saved = lease.intent_dedupe if lease.intent_last is not None else None
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
            wall_clock=self.ctx.wall_clock,
        )

    async def _replay(self, first: int, last: int, room: int) -> None:
        """Rebuild an open intent exactly under its pinned plan. Reads are sized to ``room``
        bytes (what the replay holds of the budget), the range read whole whatever ``room``:
        cutting it would change its objects (files are cut and partitions capped over the
        whole range); its writer's flush fitted a share, so it fits a budget that large."""
        log.info(
            "replaying intent",
            extra={"shard_id": self.shard_id, "first": str(first), "last": str(last)},
        )
        pinned = (await intent_pin(self.ctx, self.shard_id)).with_opened(self.opened)
        routing = routing_cost(pinned.layout.pipelines)
        buffer = await self._read_range(first, last, room, routing, self.dedupe)
        # Exactly the intent's range, never narrowed to what was read, under its plan.
        await self._flush(buffer, last, reason="replay", first=first, pinned=pinned)
        self.ctx.metrics.replays.inc()

    async def _read_range(
        self, first: int, last: int, room: int, routing: tuple[int, int], dedupe: ShardDedupe
    ) -> ShardBuffer:
        """``[first, last]`` read again from Kinesis into a new buffer, through ``dedupe``
        (the state as of ``first``): an intent's range, or a flush's that must plan again."""
        reader = self._reader(Position("AT_SEQUENCE_NUMBER", first))
        buffer = ShardBuffer(routing=routing)
        loop = asyncio.get_running_loop()
        # Read until ``last`` is seen or the shard provably ends; an empty page, a zero or
        # missing MillisBehindLatest prove nothing (Kinesis answers empty pages while
        # records follow), so they only wait and read again.
        while buffer.last is None or buffer.last < last:
            # Past its hold the range is still read whole: pages of a quarter of the hold.
            free = max(room - buffer.charge, room // 4)
            reader.limit = read_limit(free, self.record_charge, self.raw_bytes)
            batch = await reader.read()
            before = buffer.charge
            past = False
            for n, record in enumerate(batch.records, 1):
                meta = record_meta(self.shard_id, record)
                if meta.sequence_number > last:
                    past = True
                    break
                buffer.add(record["Data"], meta, self.ctx.decoders, loop.time(), dedupe)
                if n % YIELD_EVERY == 0:
                    await asyncio.sleep(0)
            self._learn_record_size(buffer, batch.records, before)
            if past or batch.shard_end or self._passed_end(reader):
                break
            if not batch.records:
                await reader.idle()
        if buffer.last != last:
            log.error(
                "range no longer readable; flushing what was read",
                extra={"shard_id": self.shard_id, "wanted": str(last), "got": str(buffer.last)},
            )
        return buffer

    def _learn_record_size(
        self, buffer: ShardBuffer, records: list[dict[str, Any]], before: int
    ) -> None:
        """Follow the flush charge per record of the page just read (sizes the next read);
        ``before``: the buffer's charge before the page, less what was flushed part way."""
        if records:
            self.record_charge = max(1, (buffer.charge - before) // len(records))
            self.raw_bytes = sum(len(r["Data"]) for r in records) // len(records)

    def _passed_end(self, reader: ShardReader) -> bool:
        return self.closed and passed_end(reader, self.ending)

    def _start(self) -> Position:
        """Where reading resumes; the configured start only for a shard never checkpointed."""
        checkpoint = self.checkpoint
        if isinstance(checkpoint, int):
            return Position("AFTER_SEQUENCE_NUMBER", checkpoint)
        if checkpoint is FROM_START:
            return Position("TRIM_HORIZON")
        if checkpoint is SHARD_END:
            raise AssertionError(f"{self.shard_id} is finished and must not be read")
        if self.lease.start_at_ms is not None:  # LATEST as the first owner resolved it
            return Position("AT_TIMESTAMP", timestamp=self.lease.start_at_ms / 1000)
        return self.ctx.start

    async def _consume(self, stop: asyncio.Event, *, drain: bool) -> Outcome:
        reader = self.reader = self._reader(self._start())
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            # The page is sized to what this shard may still charge (its share, at most what is
            # free); a page that decodes larger than estimated is flushed part way (below), so
            # the allowance is a hard bound.
            allowance = self.account.allowance()
            room = allowance - self.buffer.charge
            if room < self.record_charge and (self.buffer or self.account.others_hold()):
                # No room for one more record: flush what is held (that frees it), or, holding
                # nothing, wait until replays or flushes elsewhere give memory back, rather
                # than write one tiny file per record.
                if self.buffer:
                    await self._flush_buffer("memory")
                else:
                    await unless_stopped(reader.idle(), stop)
                continue
            reader.limit = read_limit(room, self.record_charge, self.raw_bytes)
            batch = await unless_stopped(reader.read(), stop)
            if batch is None:
                break
            if batch.millis_behind is not None:
                self.millis_behind = batch.millis_behind
            m = self.ctx.metrics
            before = self.buffer.charge
            for n, record in enumerate(batch.records, 1):
                data: bytes = record["Data"]
                meta = record_meta(self.shard_id, record)
                self.buffer.add(data, meta, self.ctx.decoders, loop.time(), self.dedupe)
                m.records_read.inc()
                m.bytes_read.inc(len(data))
                self.account.follow(self.buffer.charge)
                if self.buffer.charge >= allowance:
                    before -= self.buffer.charge
                    await self._flush_buffer("memory")
                if n % YIELD_EVERY == 0:
                    await asyncio.sleep(0)
            self._learn_record_size(self.buffer, batch.records, before)
            await self.pending.issue_due(self.ctx, self.shard_id)
            # A closed shard ends when Kinesis returns no next iterator or the reader has
            # passed its EndingSequenceNumber; an empty page at the tip is no proof.
            if batch.shard_end or self._passed_end(reader):
                await self._flush_buffer("shard_end")
                await self._checkpoint(SHARD_END)
                return Outcome.FINISHED
            if drain and batch.at_tip and not self.closed:
                await self._flush_buffer("drain")
                return Outcome.AT_TIP
            reason = self.ctx.policy.reason(self.buffer, loop.time(), self.budget_share())
            if reason:
                await self._flush_buffer(reason)
            if not batch.records:
                await unless_stopped(reader.idle(), stop)
        await self._flush_buffer("shutdown")
        return Outcome.STOPPED

    async def _flush_buffer(self, reason: str) -> None:
        buffer, self.buffer = self.buffer, ShardBuffer(routing=self.ctx.routing())
        if buffer.last is not None:
            await self._flush(buffer, buffer.last, reason=reason)
        self.account.release()  # the flush is done: what the buffer held is free again

    async def _flush(
        self,
        buffer: ShardBuffer,
        last: int,
        *,
        reason: str,
        first: int | None = None,
        pinned: Pin | None = None,
    ) -> None:
        """The flush protocol for ``[first, last]`` (``first`` defaults to the buffer's),
        under ``pinned`` (a replay's) or this process's own plan."""
        ctx = self.ctx
        if first is None:
            first = buffer.first if buffer.first is not None else last
        if pinned is None:
            layout = ctx.own_layout(self.opened)
            pinned = Pin(layout, ctx.mapping, None, KeyListing())
        layout, mapping = pinned.layout, pinned.mapping
        document = pinned.document or plan_document(layout, mapping)
        state, charge, routing = self._dedupe_at_checkpoint, buffer.charge, buffer.routing

        def reread() -> Awaitable[ShardBuffer]:  # the dedupe state as of ``first``
            return self._read_range(first, last, charge, routing, ShardDedupe.decode(state))

        started = time.perf_counter()
        # A new trace per flush, linked to the request spans whose lines it writes (at most
        # MAX_FLUSH_LINKS): one flush serves many requests, so they cannot all be parents.
        # Sequence numbers go out as strings: they overflow the int64 of span attributes.
        attributes = {"shard_id": self.shard_id, "reason": reason}
        attributes |= {"first": str(first), "last": str(last)}
        with span("tideway.flush", attributes=attributes, links=flush_links(buffer.records)):
            with span("tideway.encode"):
                async with self.budget.planning if self.budget else contextlib.nullcontext():
                    plan, dead_reasons = await plan_range(
                        self.ctx, self.shard_id, buffer, layout, mapping, reread=reread
                    )
            # A replay keeps the listing it found beside its own: should it die before the
            # stale objects are deleted, the next replay still knows them.
            listing = planned_keys(plan).union(pinned.keys)
            await ctx.leases.write_intent(
                self.shard_id,
                ctx.worker_id,
                self.epoch,
                first,
                last,
                nbytes=buffer.charge,  # what its replay holds of the budget
                dedupe=self._dedupe_at_checkpoint,
                plan=document,
                keys=listing.encode(),
            )
            with (
                aws_span("S3", "PutObject", objects=len(plan.objects), bytes=plan.bytes_out),
                ctx.metrics.aws_call("s3_upload"),
            ):
                ours = await land(
                    ctx, self.shard_id, self.alive, plan, last, epoch=self.epoch, reason=reason
                )
            stale = await find_stale(
                ctx, self.shard_id, pinned.keys if ours else KeyListing(), plan, (first, last)
            )
            if ctx.catalog is not None:
                await ctx.catalog.register_plan(plan)
            self.opened = plan.opened or self.opened
            self.pending.add(stale)
            at_ms = int(ctx.wall_clock() * 1000)  # a failed checkpoint ends this consumer
            self.progress = self.progress.after_flush(plan, dead_reasons, self.millis_behind, at_ms)
            await self._checkpoint(last)  # lists the stale keys: deleted only once it landed
            await self.pending.issue_due(self.ctx, self.shard_id)
            ctx.metrics.observe_flush(
                reason,
                plan,
                dead_reasons,
                buffer.skipped,
                time.perf_counter() - started,
            )
            log.info(
                "flushed",
                extra={
                    "shard_id": self.shard_id,
                    "first": str(first),
                    "last": str(last),
                    "rows": plan.rows,
                    "files": len(plan.objects),
                    "dead_letters": plan.dead_letters,
                    "reason": reason,
                },
            )

    async def _checkpoint(self, seq: Checkpoint) -> None:
        # Flushes run between records, so the state now is the state after ``seq``.
        state = self.dedupe.encode()
        await self.ctx.leases.checkpoint(
            self.shard_id,
            self.ctx.worker_id,
            self.epoch,
            seq,
            dedupe=state,
            partitions=self.opened.encode(),
            pending=self.pending.encode(),
            progress=self.progress,
        )
        self.checkpoint = seq
        self._dedupe_at_checkpoint = state
