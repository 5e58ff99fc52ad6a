"""The parts of a flush around the intent protocol (I/O): the plan a flush runs under
(this process's, or an open intent's pinned one), the pure planner run off the loop with
poisoned ranges dead-lettered, and the removal of objects a replayed intent listed that
its plan no longer writes. ``shard.py`` runs them in the protocol's order."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from service.consume.buffer import ShardBuffer
from service.consume.context import ShardContext
from service.decode.detect import TRANSIENT
from service.errors import DecodeError
from service.sink.opened import OpenedPartitions
from service.sink.plan import (
    DeadLetter,
    FlushPlan,
    KeyListing,
    Layout,
    dead_letter_plan,
    key_in_range,
    plan_from_document,
)
from service.sink.rules import FieldMapping
from service.sink.s3 import delete_keys, list_keys

log = logging.getLogger(__name__)
# A range the planner (pure mapping and encoding, no AWS) fails on this many times in a row
# is poisoned: its records are written as dead letters under the same intent protocol and
# the shard moves on (issue 15). AWS errors never count here: they retry with backoff.
PLAN_ATTEMPTS = 3
# The dead-letter reason's prefix for a poisoned range (its own class, telemetry/reasons.py).
POISONED = f"poisoned: flush failed {PLAN_ATTEMPTS} times"
_T = TypeVar("_T")


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
    ctx: ShardContext, shard_id: str, buffer: ShardBuffer, layout: Layout, mapping: FieldMapping
) -> tuple[FlushPlan, list[str]]:
    """The flush's objects and its records' dead-letter reasons. A range the planner
    still fails on after PLAN_ATTEMPTS is dead-lettered whole (deterministic: a replay
    fails the same way and writes the same objects); MemoryError propagates."""
    error: Exception | None = None
    for attempt in range(1, PLAN_ATTEMPTS + 1):
        try:
            plan = await asyncio.to_thread(
                ctx.planner, shard_id, buffer.records, buffer.dead, layout, mapping
            )
        except TRANSIENT:
            raise
        except Exception as exc:  # a pure function failing: retried, then dead letters
            error = exc
            log.warning(
                "flush plan failed",
                extra={"shard_id": shard_id, "attempt": attempt, "error": repr(exc)},
            )
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


async def remove_stale(
    ctx: ShardContext,
    shard_id: str,
    listing: KeyListing,
    plan: FlushPlan,
    span: tuple[int, int],
) -> None:
    """Delete the objects an intent listed that ``plan`` no longer writes (the replaying
    code names keys differently): the range then exists once, under the new keys."""
    if not listing.keys and not listing.prefixes:
        return
    first, last = span
    candidates = set(listing.keys)
    for prefix in sorted(listing.prefixes):
        listed = await list_keys(ctx.s3, ctx.bucket, prefix)
        candidates.update(k for k in listed if key_in_range(k, prefix, first, last))
    stale = candidates - {o.key for o in plan.objects}
    if stale:
        log.warning(
            "replay removes objects its plan no longer has",
            extra={"shard_id": shard_id, "objects": len(stale)},
        )
        await delete_keys(ctx.s3, ctx.bucket, sorted(stale))


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
