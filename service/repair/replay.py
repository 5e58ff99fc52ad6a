"""``tideway replay``: re-read a time window of the stream into a side prefix (or an Iceberg
side table: side_table.py), exactly once,
apart from the live consumer (I/O around the consumer's reader, buffer and pure planner).

Per shard, under a claim on ``repair#replay#<prefix>#<shard>`` of the lease table (never a
live lease: the consumer's checkpoints and leases are only read by nobody here), the
consumer's own protocol (docs/operations.md "Redrive and replay"):
  1. fenced write of the intent ``[first, last]`` with the pinned plan document;
  2. upload that range's objects under ``<prefix>logs/`` and ``<prefix>dead-letter/``
     (deterministic keys and bytes), each PutObject only while the claim is fresh;
  3. fenced progress: ``checkpoint = last``, the intent cleared.
Reading starts ``AT_TIMESTAMP`` the window's start (or after the progress checkpoint) and
stops at the first record that arrived after its end, at the tip, or at a closed shard's
end; then the item says ``finished``. A rerun resumes from the item: an open intent is
rebuilt exactly first, a finished shard is left alone.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from service.aws import aws_clients
from service.consume.buffer import FlushPolicy, ShardBuffer
from service.consume.context import ShardContext, shard_context
from service.consume.dedupe import ShardDedupe
from service.consume.discovery import ShardInfo
from service.consume.flush import land, plan_range
from service.consume.reader import Position, ShardReader, list_shards, record_meta
from service.consume.shard import YIELD_EVERY
from service.errors import DecodeError, TidewayError
from service.repair.claims import Claim, ClaimTable, binary, crash_for_test, retrying, text
from service.repair.side_table import check_table, names_table, side_table
from service.settings import Settings
from service.sink.plan import ARROW_TO_PARQUET, plan_document, plan_from_document

log = logging.getLogger(__name__)
SHARDS_AT_ONCE = 4  # shards replayed concurrently; each buffers a quarter of the budget


@dataclass(frozen=True, slots=True)
class Window:
    """Records that arrived in ``[start, end]`` (epoch seconds), written under ``into``."""

    start: float
    end: float
    into: str
    shards: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.start!r}..{self.end!r}"


@dataclass(frozen=True, slots=True)
class ReplayReport:
    shards: int = 0  # shards replayed to the window's end by this run
    already_finished: int = 0  # shards an earlier run had finished
    records: int = 0
    rows: int = 0
    dead_letters: int = 0
    files: int = 0

    def __add__(self, other: ReplayReport) -> ReplayReport:
        return ReplayReport(
            *(getattr(self, f.name) + getattr(other, f.name) for f in dataclasses.fields(self))
        )


@dataclass(frozen=True, slots=True)
class ShardProgress:
    """A replay's progress record of one shard, as the console and people read it."""

    into: str
    shard_id: str
    window: str | None  # "{from}..{to}" in epoch seconds
    checkpoint: int | None  # last sequence number landed
    intent: tuple[int, int] | None  # a range that may be half written
    finished: bool
    owner: str | None  # the run holding the claim (None: nobody runs it now)


async def replay_progress(dynamodb: Any, settings: Settings) -> list[ShardProgress]:
    """Every replay's progress records in the lease table, by prefix then shard."""
    head = ClaimTable.item_key("replay", "")
    kwargs: dict[str, Any] = {
        "TableName": settings.lease_table,
        "ConsistentRead": True,
        "FilterExpression": "begins_with(shard_id, :p)",
        "ExpressionAttributeValues": {":p": {"S": head}},
    }
    found = []
    while True:
        page = await dynamodb.scan(**kwargs)
        for item in page.get("Items", []):
            into, _, shard = item["shard_id"]["S"].removeprefix(head).rpartition("#")
            checkpoint, first, last = (
                text(item, n) for n in ("checkpoint", "intent_first", "intent_last")
            )
            found.append(
                ShardProgress(
                    into,
                    shard,
                    text(item, "window"),
                    None if checkpoint is None else int(checkpoint),
                    None if first is None or last is None else (int(first), int(last)),
                    "finished" in item,
                    text(item, "owner"),
                )
            )
        if "LastEvaluatedKey" not in page:
            return sorted(found, key=lambda p: (p.into, p.shard_id))
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def parse_instant(value: str) -> float:
    """Epoch seconds of RFC 3339 (``2026-12-01T03:00:00Z``; no zone means UTC) or of epoch
    seconds; TidewayError (one line) for anything else."""
    try:
        return float(value)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise TidewayError(
            f"{value!r} is neither RFC 3339 (2026-12-01T03:00:00Z) nor epoch seconds"
        ) from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def check_window(settings: Settings, window: Window) -> None:
    """TidewayError (one line) for a window that cannot be replayed as asked."""
    if window.end < window.start:
        raise TidewayError("replay: --to is before --from")
    if names_table(window.into):
        check_table(settings, window.into)
        return
    if not window.into or window.into.startswith("/"):
        raise TidewayError("replay: --into must be a key prefix such as 'backfill/'")
    if window.into == settings.prefix:
        raise TidewayError("replay: --into is TIDEWAY_PREFIX, the live table; choose a side prefix")


async def replay(
    settings: Settings, window: Window, *, crash_after: str | None = None
) -> ReplayReport:
    """Replay ``window`` of every shard (or ``window.shards``) into ``window.into``; exactly
    once per record whatever ran before. ``crash_after``: the test hook ("intent", "upload")."""
    check_window(settings, window)
    async with aws_clients("kinesis", "s3", "dynamodb") as aws:
        owner = f"replay-{uuid.uuid4()}"
        ctx = shard_context(settings, aws.kinesis, aws.s3, aws.dynamodb, owner)
        prefix, table = window.into, None
        if names_table(window.into):
            prefix, table = await side_table(settings, window.into, aws.s3)
        layout = dataclasses.replace(ctx.layout, prefix=prefix)
        ctx = dataclasses.replace(ctx, layout=layout, table=table)
        claims = ClaimTable(aws.dynamodb, settings.lease_table, owner, settings.lease_duration)
        shards = await list_shards(aws.kinesis, settings.stream)
        unknown = sorted(set(window.shards) - set(shards))
        if unknown:
            raise TidewayError(f"replay: no shard {unknown[0]} in stream {settings.stream}")
        chosen = [shards[s] for s in sorted(window.shards or shards)]
        share = settings.memory_budget_bytes // SHARDS_AT_ONCE
        gate = asyncio.Semaphore(SHARDS_AT_ONCE)
        run = _ShardReplay(ctx, claims, window, share, crash_after)

        async def one(info: ShardInfo) -> ReplayReport:
            async with gate:
                ended = await retrying(info.shard_id, lambda: run.shard(info))
                return ended + run.flushed.get(info.shard_id, ReplayReport())

        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(one(info)) for info in chosen]
        report = sum((t.result() for t in tasks), ReplayReport())
        log.info("replay finished", extra=dataclasses.asdict(report))
        return report


class _ShardReplay:
    def __init__(
        self,
        ctx: ShardContext,
        claims: ClaimTable,
        window: Window,
        share: int,
        crash_after: str | None,
    ) -> None:
        self.ctx, self.claims, self.window = ctx, claims, window
        self.policy = FlushPolicy(ctx.layout.file_target_bytes * ARROW_TO_PARQUET, float("inf"))
        self.share = share
        self.crash_after = crash_after
        self.flushed: dict[str, ReplayReport] = {}  # by shard: what its flushes landed

    async def shard(self, info: ShardInfo) -> ReplayReport:
        claim = await self.claims.take(
            ClaimTable.item_key("replay", self.window.into, info.shard_id)
        )
        async with self.claims.holding(claim):
            item = claim.item
            if text(item, "window") not in (None, self.window.name):
                await self.claims.update(claim, {}, release=True)
                raise TidewayError(
                    f"replay: {self.window.into} holds a replay of another window"
                    f" ({text(item, 'window')}); choose another --into"
                )
            await self.claims.update(claim, {"window": {"S": self.window.name}})
            if "finished" in item:
                await self.claims.update(claim, {}, release=True)
                return ReplayReport(already_finished=1)
            saved = binary(item, "dedupe")
            dedupe = ShardDedupe.decode(saved) if saved else ShardDedupe()
            first, last = text(item, "intent_first"), text(item, "intent_last")
            if first is not None and last is not None:
                await self._rebuild(claim, info, dedupe, int(first), int(last))
            checkpoint = text(claim.item, "checkpoint")
            start = (
                Position("AT_TIMESTAMP", timestamp=self.window.start)
                if checkpoint is None
                else Position("AFTER_SEQUENCE_NUMBER", int(checkpoint))
            )
            await self._read(claim, info, dedupe, start)
            await self.claims.update(claim, {"finished": {"BOOL": True}}, release=True)
            return ReplayReport(shards=1)

    def _reader(self, shard_id: str, start: Position) -> ShardReader:
        ctx = self.ctx
        return ShardReader(ctx.kinesis, ctx.stream, shard_id, start, idle_wait=ctx.idle_wait)

    async def _rebuild(
        self, claim: Claim, info: ShardInfo, dedupe: ShardDedupe, first: int, last: int
    ) -> ReplayReport:
        """The open intent's range, read again whole and flushed under its pinned plan."""
        reader = self._reader(info.shard_id, Position("AT_SEQUENCE_NUMBER", first))
        buffer = ShardBuffer(routing=self.ctx.routing())
        loop = asyncio.get_running_loop()
        while buffer.last is None or buffer.last < last:
            batch = await reader.read()
            for n, record in enumerate(batch.records, 1):
                if n % YIELD_EVERY == 0:
                    await asyncio.sleep(0)
                meta = record_meta(info.shard_id, record)
                if meta.sequence_number > last:
                    break
                buffer.add(record["Data"], meta, self.ctx.decoders, loop.time(), dedupe)
            if batch.shard_end or batch.at_tip or (buffer.last or 0) >= last:
                break
        return await self._flush(claim, info.shard_id, buffer, dedupe, first=first, last=last)

    async def _read(
        self, claim: Claim, info: ShardInfo, dedupe: ShardDedupe, start: Position
    ) -> ReplayReport:
        reader = self._reader(info.shard_id, start)
        loop = asyncio.get_running_loop()
        buffer = ShardBuffer(routing=self.ctx.routing())
        report = ReplayReport()
        start_us, end_us = int(self.window.start * 1_000_000), int(self.window.end * 1_000_000)
        while True:
            batch = await reader.read()
            past = False
            for n, record in enumerate(batch.records, 1):
                if n % YIELD_EVERY == 0:  # decoding runs on the loop: let the heartbeat beat
                    await asyncio.sleep(0)
                meta = record_meta(info.shard_id, record)
                if meta.arrival_us > end_us:
                    past = True
                    break
                if meta.arrival_us < start_us:  # AT_TIMESTAMP may start up to a second early
                    continue
                buffer.add(record["Data"], meta, self.ctx.decoders, loop.time(), dedupe)
                if self.policy.reason(buffer, loop.time(), self.share):
                    report += await self._flush_buffer(claim, info.shard_id, buffer, dedupe)
                    buffer = ShardBuffer(routing=self.ctx.routing())
            ended = info.closed and (reader.last_sequence or 0) >= (info.ending_sequence or 0)
            if past or batch.shard_end or batch.at_tip or ended:
                report += await self._flush_buffer(claim, info.shard_id, buffer, dedupe)
                return report

    async def _flush_buffer(
        self, claim: Claim, shard_id: str, buffer: ShardBuffer, dedupe: ShardDedupe
    ) -> ReplayReport:
        if buffer.first is None or buffer.last is None:
            return ReplayReport()
        return await self._flush(
            claim, shard_id, buffer, dedupe, first=buffer.first, last=buffer.last
        )

    async def _flush(
        self,
        claim: Claim,
        shard_id: str,
        buffer: ShardBuffer,
        dedupe: ShardDedupe,
        *,
        first: int,
        last: int,
    ) -> ReplayReport:
        """Intent, upload, progress: the consumer's three steps on the replay's item."""
        ctx, claims = self.ctx, self.claims
        rebuild = "intent_first" in claim.item
        document = binary(claim.item, "intent_plan") if rebuild else None
        layout, mapping = ctx.layout, ctx.mapping
        if document is not None:
            try:
                layout, mapping = plan_from_document(document)
            except DecodeError:
                document = None
        document = document or plan_document(layout, mapping)
        plan, _ = await plan_range(ctx, shard_id, buffer, layout, mapping)
        intent = {
            "intent_first": {"S": str(first)},
            "intent_last": {"S": str(last)},
            "intent_plan": {"B": document},
        }
        await claims.update(claim, intent)
        crash_for_test(self.crash_after, "intent")
        if not claims.fresh(claim):  # a beat late (a slow or throttled table): beat now
            await claims.renew(claim)
        # Upload, and with a side table commit under the shard's watermark (the consumer's).
        # Never through the elected committer: the replay's claim is no shard lease, so its
        # context has no hand-off and commits itself (epoch 0 is never used).
        reason = "replay" if rebuild else "repair"
        await land(ctx, shard_id, lambda: claims.fresh(claim), plan, last, epoch=0, reason=reason)
        crash_for_test(self.crash_after, "upload")
        progress: dict[str, Any] = {
            "checkpoint": {"S": str(last)},
            "dedupe": {"B": dedupe.encode()},
        }
        await claims.update(claim, progress, ("intent_first", "intent_last", "intent_plan"))
        claim.item = {k: v for k, v in claim.item.items() if not k.startswith("intent_")}
        claim.item |= progress
        records = len(buffer.records) + len(buffer.dead)
        landed = ReplayReport(
            records=records, rows=plan.rows, dead_letters=plan.dead_letters, files=len(plan.objects)
        )
        self.flushed[shard_id] = self.flushed.get(shard_id, ReplayReport()) + landed
        return landed
