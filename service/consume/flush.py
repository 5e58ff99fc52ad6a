"""The parts of a flush around the intent protocol (I/O): the plan a flush runs under
(this process's, or an open intent's pinned one), the pure planner run off the loop with
poisoned ranges dead-lettered, the objects a replayed intent listed that its plan no longer
writes (found before the checkpoint, written with it, deleted after it: ``PendingDeletes``)
and the self-fencing of uploads (``FencedS3``). ``shard.py`` runs them in the protocol's
order."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from service.consume.buffer import ShardBuffer
from service.consume.context import ShardContext
from service.consume.handoff import hand_off
from service.decode.detect import TRANSIENT
from service.errors import DecodeError, LeaseLostError
from service.sink.keys import key_in_range
from service.sink.opened import OpenedPartitions
from service.sink.placement import Placement
from service.sink.plan import (
    DeadLetter,
    FlushPlan,
    KeyListing,
    Layout,
    dead_letter_plan,
    plan_from_document,
)
from service.sink.rules import FieldMapping
from service.sink.s3 import delete_keys, list_keys, upload_objects

log = logging.getLogger(__name__)
# A range the planner (pure mapping and encoding, no AWS) fails on this many times in a row
# is poisoned: its records are written as dead letters under the same intent protocol and
# the shard moves on (issue 15). AWS errors never count here: they retry with backoff.
PLAN_ATTEMPTS = 3
# The dead-letter reason's prefix for a poisoned range (its own class, telemetry/reasons.py).
POISONED = f"poisoned: flush failed {PLAN_ATTEMPTS} times"
_T = TypeVar("_T")
# S3 refuses a SigV4 request whose X-Amz-Date is more than 15 minutes from its own clock,
# so an upload a fenced owner signed lands at the latest 15 minutes (plus that owner's clock
# skew) after it was signed. The keys a checkpoint lists for deletion are deleted again,
# by whoever owns the shard, until this long after the owner first saw them (seconds).
DELETE_GRACE = 20 * 60.0
# S3 calls that create objects: each one is sent only while the lease is fresh.
_S3_WRITES = frozenset(
    ("put_object", "create_multipart_upload", "upload_part", "complete_multipart_upload")
)


@dataclass(frozen=True, slots=True)
class Pin:
    """The plan a flush runs under: layout and mapping, the document that pins them (None:
    write this process's), and the objects an earlier attempt of the range listed."""

    layout: Layout
    mapping: FieldMapping
    document: bytes | None
    keys: KeyListing

    def with_opened(self, opened: OpenedPartitions) -> Pin:
        """This pin, with ``opened`` as the partitions opened earlier in the hour unless
        its plan pins them (a document of older code, or none readable, does not)."""
        if self.layout.opened is not None:
            return self
        return dataclasses.replace(self, layout=dataclasses.replace(self.layout, opened=opened))


def opened_at_checkpoint(shard_id: str, state: bytes | None) -> OpenedPartitions:
    """The partitions the shard opened this hour as of its checkpoint (the lease item's
    ``partitions``); none when absent or unreadable (the bound then restarts this hour)."""
    try:
        return OpenedPartitions.decode(state)
    except DecodeError as exc:
        log.warning(
            "opened partitions unreadable", extra={"shard_id": shard_id, "error": exc.reason}
        )
        return OpenedPartitions()


async def intent_pin(ctx: ShardContext, shard_id: str) -> Pin:
    """The open intent's pinned plan; this process's own layout and mapping when the
    intent has none (written by older code) or one it cannot read (newer code)."""
    document, listing = await ctx.leases.intent_pin(shard_id)
    layout, mapping = ctx.layout, ctx.mapping
    if document is not None:
        try:
            layout, mapping = plan_from_document(document)
        except DecodeError as exc:
            log.warning(
                "intent's plan unreadable; replaying with this process's settings",
                extra={"shard_id": shard_id, "error": exc.reason},
            )
            document = None
    keys = KeyListing()
    if listing is not None:
        try:
            keys = KeyListing.decode(listing)
        except DecodeError as exc:
            log.warning(
                "intent's key listing unreadable", extra={"shard_id": shard_id, "error": exc.reason}
            )
    return Pin(layout, mapping, document, keys)


async def plan_range(
    ctx: ShardContext,
    shard_id: str,
    buffer: ShardBuffer,
    layout: Layout,
    mapping: FieldMapping,
    *,
    reread: Callable[[], Awaitable[ShardBuffer]] | None = None,
) -> tuple[FlushPlan, list[str]]:
    """The flush's objects and its records' dead-letter reasons. A range the planner
    still fails on after PLAN_ATTEMPTS is dead-lettered whole (deterministic: a replay
    fails the same way and writes the same objects); MemoryError propagates. With
    ``reread`` the first attempt takes the buffer's records over (the planner leaves them
    hollow and the scanner lets their bytes go as it maps them, docs/writer.md); should it
    fail, the range is read again from Kinesis and the later attempts keep their records."""
    error: Exception | None = None
    release = reread is not None
    for attempt in range(1, PLAN_ATTEMPTS + 1):
        try:
            plan = await asyncio.to_thread(
                ctx.planner, shard_id, buffer.records, buffer.dead, layout, mapping, release=release
            )
        except TRANSIENT:
            raise
        except Exception as exc:  # a pure function failing: retried, then dead letters
            error = exc
            log.warning(
                "flush plan failed",
                extra={"shard_id": shard_id, "attempt": attempt, "error": repr(exc)},
            )
            if reread is not None and release:  # its records are hollow: read them again
                buffer, release = await reread(), False
        else:
            return plan, [d.reason for d in buffer.dead]
    reason = f"{POISONED}: {type(error).__name__}: {error}"[:500]
    dead = list(buffer.dead) + [
        DeadLetter(r.meta, r.raw or b"\n".join(b.payload for b in r.batches), reason)
        for r in buffer.records
    ]
    log.error(
        "flush poisoned; dead-lettering the range",
        extra={"shard_id": shard_id, "records": len(dead), "error": reason},
    )
    ctx.metrics.flush_poisoned.inc()
    return dead_letter_plan(shard_id, dead, layout), [d.reason for d in dead]


async def find_stale(
    ctx: ShardContext,
    shard_id: str,
    listing: KeyListing,
    plan: FlushPlan,
    span: tuple[int, int],
) -> frozenset[str]:
    """The objects an intent listed that ``plan`` no longer writes (the replaying code
    names keys differently). Only read here: they are deleted after the checkpoint that
    lists them (PendingDeletes), so a fenced owner, whose checkpoint fails, deletes nothing."""
    if not listing.keys and not listing.prefixes:
        return frozenset()
    first, last = span
    candidates = set(listing.keys)
    where = await placement(ctx, listing.prefixes)
    for prefix in sorted(listing.prefixes):
        bucket, stored = where.locate(prefix)
        listed = await list_keys(ctx.s3, bucket, stored)
        candidates.update(
            prefix + k[len(stored) :] for k in listed if key_in_range(k, stored, first, last)
        )
    return frozenset(candidates - {o.key for o in plan.objects})


async def placement(ctx: ShardContext, keys: Iterable[str]) -> Placement:
    """Where the layout keys ``keys`` are stored: the tables they name opened (not created)
    first, so a table the catalog placed elsewhere is found there (sink/placement.py)."""
    if ctx.table is None:
        return ctx.placement()
    return await ctx.table.place(keys, create=False)


class PendingDeletes:
    """Stale keys the shard's checkpoint lists (lease attribute ``pending_deletes``), each
    with the loop time this process first saw it. Deleted after every checkpoint that lists
    them and every DELETE_GRACE / 4 between, until a delete sent DELETE_GRACE after that
    time succeeded: by then no upload a fenced owner signed can still land and re-create it."""

    def __init__(
        self, encoded: bytes | None = None, loop: asyncio.AbstractEventLoop | None = None
    ) -> None:
        now = 0.0 if loop is None else loop.time()
        self.since: dict[str, float] = dict.fromkeys(self.decode(encoded), now)
        self.due_at = now  # a new owner deletes what it inherited at once

    @staticmethod
    def decode(data: bytes | None) -> frozenset[str]:
        if data is None:
            return frozenset()
        try:
            return KeyListing.decode(data).keys
        except DecodeError as exc:
            log.warning("pending deletes unreadable", extra={"error": exc.reason})
            return frozenset()

    def encode(self) -> bytes | None:
        """The lease attribute (zstd JSON, never reduced to prefixes); None when empty."""
        if not self.since:
            return None
        return KeyListing(frozenset(self.since)).encode(limit=1 << 62)

    def add(self, keys: frozenset[str]) -> None:
        now = asyncio.get_running_loop().time()
        for key in keys:
            self.since.setdefault(key, now)
        if keys:
            self.due_at = now

    async def issue_due(self, ctx: ShardContext, shard_id: str) -> None:
        """When due, delete every pending key (a missing key counts as deleted); forget those
        whose grace had passed when this delete was sent (the next checkpoint drops them)."""
        now = asyncio.get_running_loop().time()
        if not self.since or now < self.due_at:
            return
        log.warning(
            "deleting objects a replayed plan no longer has",
            extra={"shard_id": shard_id, "objects": len(self.since)},
        )
        where = await placement(ctx, self.since)
        for bucket, keys in where.by_bucket(sorted(self.since)).items():
            await delete_keys(ctx.s3, bucket, [stored for _, stored in keys])
        self.since = {k: t for k, t in self.since.items() if now - t < DELETE_GRACE}
        self.due_at = now + DELETE_GRACE / 4


class FencedS3:
    """An S3 client whose object-creating calls are each sent only while ``fresh()`` says
    this worker's lease is still its own on its monotonic clock (self-fencing): a node
    paused past its lease stops before its next PutObject instead of re-creating keys the
    heir deleted. Reads, deletes and aborts pass through."""

    def __init__(self, s3: Any, fresh: Callable[[], bool], shard_id: str) -> None:
        self._s3, self._fresh, self._shard_id = s3, fresh, shard_id

    def __getattr__(self, name: str) -> Any:
        call = getattr(self._s3, name)
        if name not in _S3_WRITES:
            return call

        async def fenced(**kwargs: Any) -> Any:
            if not self._fresh():
                raise LeaseLostError(f"lease on {self._shard_id} may have expired; not uploading")
            return await call(**kwargs)

        return fenced


async def upload_fenced(
    ctx: ShardContext, shard_id: str, alive: Callable[[], bool], plan: FlushPlan
) -> None:
    """Upload ``plan``'s objects, each PutObject sent only while ``alive()``; a stale lease
    raises LeaseLostError (the shard is given up), also out of the upload's task group."""
    if not alive():
        raise LeaseLostError(f"lease on {shard_id} may have expired; not uploading")
    objects = {o.key: o for o in plan.objects}
    fenced = FencedS3(ctx.s3, alive, shard_id)
    try:
        for bucket, keys in ctx.placement().by_bucket(objects).items():
            stored = [dataclasses.replace(objects[key], key=at) for key, at in keys]
            await upload_objects(fenced, bucket, stored)
    except BaseExceptionGroup as group:
        if group.subgroup(LeaseLostError) is None:
            raise
        raise LeaseLostError(f"lease on {shard_id} may have expired; upload stopped") from group


async def land(
    ctx: ShardContext,
    shard_id: str,
    alive: Callable[[], bool],
    plan: FlushPlan,
    last: int,
    *,
    epoch: int,
    reason: str,
) -> bool:
    """Upload ``plan`` and, with an Iceberg table, commit its data files (exactly once, by
    the shard's watermark in the table: sink/iceberg_commit.py), through the elected
    committer when there is one (consume/handoff.py; ``epoch``: the shard's lease). False
    when the range was in the table already (a replay of a committed flush, ``reason``
    "replay"): then the objects an earlier attempt listed may be the table's and must not
    be deleted as stale."""
    table = ctx.table
    if table is None:
        await upload_fenced(ctx, shard_id, alive, plan)
        return True
    if reason == "replay" and (await table.committed(shard_id) or -1) >= last:
        return False  # committed before its checkpoint: nothing to upload again
    data = [(o.key, o.body) for o in plan.objects if o.key.endswith(".parquet")]
    await table.place([key for key, _ in data], create=True)  # each table's place known
    await upload_fenced(ctx, shard_id, alive, plan)
    if not data:
        return (await table.committed(shard_id) or -1) < last
    # TableCommitError (or a catalog error) propagates: the worker gives the shard up and
    # backs off; the intent stays open, so the next owner replays and commits these files.
    if ctx.handoff is not None and table.cut_fits([key for key, _ in data], plan.template):
        return await hand_off(
            ctx.handoff,
            table,
            data,
            worker_id=ctx.worker_id,
            shard_id=shard_id,
            epoch=epoch,
            last=last,
            cut_by=plan.template,
        )
    return await table.commit(shard_id, last, data, plan.template)


async def unless_stopped(work: Coroutine[Any, Any, _T], stop: asyncio.Event) -> _T | None:
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
