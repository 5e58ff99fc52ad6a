"""``tideway redrive``: land the dead letters that today's decoders and mapping can read,
exactly once (I/O around the pure ``deadletters`` planner).

Per shard, under the claim ``repair#redrive-envelopes#<shard>`` (its envelopes redriven so
far, the consumer's dedupe rule), then per dead-letter object ``K`` (docs/operations.md
"Redrive and replay"), under a claim on
the item ``repair#redrive#K`` of the lease table (service/repair/claims.py):
  1. read ``K`` (its digest ``D`` names every key the redrive writes) and plan;
  2. fenced write of the intent: ``D``, the digest of the body ``K`` will be rewritten to,
     the planned keys;
  3. upload the Parquet objects (deterministic keys and bytes), each PutObject only while
     the claim is fresh; delete what an earlier attempt of ``D`` listed and this one does not;
  4. rewrite ``K`` with the entries still dead (today's reason), or delete it;
  5. fenced release: the intent cleared (``done``: the new body's digest, for people).
A run that finds an intent rebuilds it when ``K`` is still ``D`` (same objects, rewritten)
and only finishes it when ``K`` is already the rewritten body. Only objects whose flush is
checkpointed (no open consumer intent can rewrite them) are redriven.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from botocore.exceptions import ClientError

from service.aws import aws_clients, error_code
from service.consume.context import ShardContext, shard_context
from service.consume.dedupe import ShardDedupe
from service.consume.flush import FencedS3
from service.consume.leases import SHARD_END
from service.errors import DecodeError, TidewayError
from service.repair.claims import (
    Claim,
    ClaimTable,
    binary,
    crash_for_test,
    retrying,
    text,
)
from service.repair.deadletters import (
    RedrivePlan,
    body_digest,
    dead_key_range,
    parse_entries,
    plan_redrive,
)
from service.settings import Settings
from service.sink.plan import KeyListing
from service.sink.s3 import delete_keys, list_keys, upload_objects

log = logging.getLogger(__name__)
DELETED = "deleted"  # the digest of a dead-letter object that nothing is left in


@dataclass(frozen=True, slots=True)
class RedriveReport:
    """What one redrive did: rows landed, entries left dead, objects redriven, and objects
    passed over (done before by another run, not yet checkpointed by the consumer, or
    unreadable)."""

    landed: int = 0
    still_dead: int = 0
    objects: int = 0
    skipped_already_done: int = 0
    skipped_unsettled: int = 0
    skipped_on_purpose: int = 0  # records that now decode to no lines (a control message)
    unreadable: int = 0
    missing: int = 0  # a key given that names no object (and no redrive deleted it)
    duplicates: int = 0  # envelope copies whose first copy landed (the consumer's rule)

    def __add__(self, other: RedriveReport) -> RedriveReport:
        return RedriveReport(
            *(getattr(self, f.name) + getattr(other, f.name) for f in dataclasses.fields(self))
        )


async def redrive(settings: Settings, *, keys: Sequence[str] | None = None) -> RedriveReport:
    """Redrive ``keys`` (dead-letter object keys), or every dead-letter object; exactly
    once per object whatever runs at the same time or was killed before."""
    return await run_redrive(settings, keys=keys)


async def run_redrive(
    settings: Settings,
    *,
    keys: Sequence[str] | None = None,
    date: str | None = None,
    crash_after: str | None = None,
) -> RedriveReport:
    """``redrive`` with the CLI's options: ``date`` (YYYY-MM-DD) limits the listing to one
    day's objects; ``crash_after`` is the test hook (CRASH_POINTS)."""
    dead_prefix = f"{settings.prefix}dead-letter/"
    async with aws_clients("s3", "dynamodb") as aws:
        ctx = shard_context(settings, None, aws.s3, aws.dynamodb, f"redrive-{uuid.uuid4()}")
        claims = ClaimTable(
            aws.dynamodb, settings.lease_table, ctx.worker_id, settings.lease_duration
        )
        if keys is None:
            listed = dead_prefix + (f"dt={date}/" if date else "")
            keys = [
                k
                for k in await list_keys(aws.s3, settings.bucket, listed)
                if k.endswith(".ndjson.gz")
            ]
        for key in keys:
            if not key.startswith(dead_prefix) or not key.endswith(".ndjson.gz"):
                raise TidewayError(
                    f"{key} is not a dead-letter object ({dead_prefix}dt=YYYY-MM-DD/….ndjson.gz)"
                )
        report = RedriveReport()
        for shard, of_shard in _by_shard(ctx.stream, keys):
            if shard is None:  # not a name the consumer writes: left alone as unsettled
                for key in of_shard:
                    report += await _one(ctx, claims, None, key, crash_after)
                continue
            envelopes_key = ClaimTable.item_key(ENVELOPES, shard)
            held = await retrying(shard, functools.partial(claims.take, envelopes_key))
            async with claims.holding(held):
                envelopes = _Envelopes(held)
                first = envelopes.open_key  # a killed run's object comes first
                ordered = [first, *(k for k in of_shard if k != first)] if first else of_shard
                for key in ordered:
                    report += await _one(ctx, claims, envelopes, key, crash_after)
                await retrying(shard, functools.partial(claims.update, held, {}, release=True))
        log.info("redrive finished", extra=dataclasses.asdict(report))
        return report


@dataclass
class _Envelopes:
    """The shard's redrive item ``repair#redrive-envelopes#<shard>``, held: the envelopes
    redriven so far (``dedupe``, the consumer's ShardDedupe over them) and the object a
    redrive is landing (``open_key``), whose plan was made from that state."""

    claim: Claim

    @property
    def open_key(self) -> str | None:
        return text(self.claim.item, "open_key")

    def state(self) -> ShardDedupe:
        saved = binary(self.claim.item, "dedupe")
        return ShardDedupe.decode(saved) if saved else ShardDedupe()

    async def opening(self, claims: ClaimTable, key: str) -> None:
        await claims.update(self.claim, {"open_key": {"S": key}})
        self.claim.item["open_key"] = {"S": key}

    async def closing(self, claims: ClaimTable, key: str, state: bytes | None) -> None:
        """``key`` is done: while it is the open object, its plan's ``state`` (when known)
        becomes the shard's and it is open no more."""
        if self.open_key != key:
            return
        saved = {} if state is None else {"dedupe": {"B": state}}
        await claims.update(self.claim, saved, ("open_key",))
        self.claim.item.pop("open_key", None)
        self.claim.item |= saved


ENVELOPES = "redrive-envelopes"


def _by_shard(stream: str, keys: Sequence[str]) -> list[tuple[str | None, list[str]]]:
    """``keys`` by shard, each shard's in stream order (the order the consumer read them)."""
    groups: dict[str | None, list[tuple[int, str]]] = {}
    for key in dict.fromkeys(keys):
        parsed = dead_key_range(stream, key)
        groups.setdefault(parsed and parsed[0], []).append((parsed[1] if parsed else 0, key))
    return [
        (shard, [k for _, k in sorted(groups[shard])])
        for shard in sorted(groups, key=lambda s: (s is None, s or ""))
    ]


async def _one(
    ctx: ShardContext,
    claims: ClaimTable,
    envelopes: _Envelopes | None,
    key: str,
    crash_after: str | None,
) -> RedriveReport:
    async def attempt() -> RedriveReport:  # each attempt resumes from the claim's item
        claim = await claims.take(ClaimTable.item_key("redrive", key))
        async with claims.holding(claim):
            return await _redrive_object(
                ctx, claims, claim, key, envelopes=envelopes, crash_after=crash_after
            )

    return await retrying(key, attempt)


async def _redrive_object(
    ctx: ShardContext,
    claims: ClaimTable,
    claim: Claim,
    key: str,
    *,
    envelopes: _Envelopes | None,
    crash_after: str | None,
) -> RedriveReport:
    item = claim.item
    intent, following = text(item, "intent_digest"), text(item, "intent_next")
    body = await _get(ctx, key)
    digest = DELETED if body is None else body_digest(body)
    if intent is not None and digest == following and digest != intent:
        # An earlier run landed and rewrote; only its release was missing.
        if envelopes is not None:
            await envelopes.closing(claims, key, binary(item, "intent_envelopes"))
        await claims.update(claim, {"done": {"S": digest}}, _INTENT, release=True)
        return RedriveReport(skipped_already_done=1)
    if body is None:
        if envelopes is not None:
            await envelopes.closing(claims, key, None)
        await claims.update(claim, {}, release=True)
        if text(item, "done") == DELETED:  # every entry landed: that run deleted the object
            return RedriveReport(skipped_already_done=1)
        log.warning("no such dead-letter object", extra={"key": key})
        return RedriveReport(missing=1)
    if not await _settled(ctx, key):
        await claims.update(claim, {}, release=True)
        return RedriveReport(skipped_unsettled=1)
    dedupe = None if envelopes is None else envelopes.state()
    try:  # off the loop: the claim's heartbeat must keep beating while it plans
        plan = await asyncio.to_thread(_plan, ctx, key, body, digest, dedupe)
    except DecodeError as exc:
        log.warning("dead-letter object unreadable", extra={"key": key, "error": exc.reason})
        await claims.update(claim, {}, release=True)
        return RedriveReport(unreadable=1)
    if intent is None and not plan.objects and plan.remaining == body:  # nothing to change
        await claims.update(claim, {}, release=True)
        return RedriveReport(still_dead=plan.still_dead, objects=1)
    state = None if dedupe is None else dedupe.encode()
    if envelopes is not None:
        await envelopes.opening(claims, key)
    following = await _land(
        ctx, claims, claim, key, digest=digest, plan=plan, state=state, crash_after=crash_after
    )
    if envelopes is not None:  # before the release: a rerun finds the intent and closes it
        await envelopes.closing(claims, key, state)
    await claims.update(claim, {"done": {"S": following}}, _INTENT, release=True)
    return RedriveReport(
        landed=plan.rows,
        still_dead=plan.still_dead,
        objects=1,
        skipped_on_purpose=plan.skipped,
        duplicates=plan.duplicates,
    )


async def _land(
    ctx: ShardContext,
    claims: ClaimTable,
    claim: Claim,
    key: str,
    *,
    digest: str,
    plan: RedrivePlan,
    state: bytes | None,
    crash_after: str | None,
) -> str:
    """Steps 2-4 of the protocol for ``plan`` of the object ``key`` at ``digest``; the
    digest of what ``key`` now holds (``DELETED``). ``state``: the shard's envelope state
    after the plan, kept with the intent for a rerun that only has to close it."""
    earlier = KeyListing()
    intent = text(claim.item, "intent_digest")
    item = claim.item
    if intent == digest and (listing := binary(item, "intent_keys")) is not None:
        earlier = KeyListing.decode(listing)
    mine = KeyListing(frozenset(o.key for o in plan.objects))
    following = DELETED if plan.remaining is None else body_digest(plan.remaining)
    await claims.update(
        claim,
        {
            "intent_digest": {"S": digest},
            "intent_next": {"S": following},
            "intent_keys": {"B": mine.union(earlier).encode(limit=1 << 62)},
            "intent_rows": {"N": str(plan.rows)},
        }
        | ({} if state is None else {"intent_envelopes": {"B": state}}),
    )
    crash_for_test(crash_after, "intent")
    fenced = FencedS3(ctx.s3, lambda: claims.fresh(claim), key)
    if not claims.fresh(claim):  # a beat late (a slow or throttled table): beat now
        await claims.renew(claim)
    await upload_objects(fenced, ctx.bucket, plan.objects)
    crash_for_test(crash_after, "upload")
    if not claims.fresh(claim):  # deletes are not fenced by FencedS3: beat first
        await claims.renew(claim)
    stale = sorted(earlier.keys - mine.keys)
    if stale:  # an earlier attempt of the same object under other settings
        await delete_keys(ctx.s3, ctx.bucket, stale)
    if plan.remaining is None:
        await delete_keys(ctx.s3, ctx.bucket, [key])
    else:
        await fenced.put_object(
            Bucket=ctx.bucket, Key=key, Body=plan.remaining, ContentType="application/gzip"
        )
    crash_for_test(crash_after, "rewrite")
    log.info(
        "redriven",
        extra={
            "key": key,
            "rows": plan.rows,
            "still_dead": plan.still_dead,
            "files": len(plan.objects),
        },
    )
    return following


_INTENT = ("intent_digest", "intent_next", "intent_keys", "intent_rows", "intent_envelopes")


def _plan(
    ctx: ShardContext, key: str, body: bytes, digest: str, dedupe: ShardDedupe | None
) -> RedrivePlan:
    entries = parse_entries(key, body)
    return plan_redrive(digest, entries, ctx.decoders, ctx.layout, ctx.mapping, dedupe=dedupe)


async def _get(ctx: ShardContext, key: str) -> bytes | None:
    try:
        resp = await ctx.s3.get_object(Bucket=ctx.bucket, Key=key)
    except ClientError as exc:
        if error_code(exc) in ("NoSuchKey", "404"):
            return None
        raise
    async with resp["Body"] as stream:
        return bytes(await stream.read())


async def _settled(ctx: ShardContext, key: str) -> bool:
    """The consumer's flush that wrote ``key`` is checkpointed and no pending delete lists
    it: no replay of an open intent can rewrite it after this redrive."""
    parsed = dead_key_range(ctx.stream, key)
    if parsed is None:
        return False
    shard, _, last = parsed
    lease = await ctx.leases.lease(shard)
    if lease is None:
        return True  # no consumer tracks the shard: nothing can rewrite the object
    if lease.pending_deletes and key in _pending(lease.pending_deletes):
        return False
    if lease.intent_first is not None and lease.intent_first <= last:
        return False
    checkpoint = lease.checkpoint
    return checkpoint is SHARD_END or (isinstance(checkpoint, int) and checkpoint >= last)


def _pending(encoded: bytes) -> frozenset[str]:
    try:
        return KeyListing.decode(encoded).keys
    except DecodeError:
        return frozenset()
