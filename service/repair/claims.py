"""Claims of the repair tools in the lease table (I/O): one item per claimed thing
(``repair#redrive#<dead-letter key>``, ``repair#replay#<prefix>#<shard>``), fenced as the
consumer's leases are: ``owner`` and ``epoch`` (+1 on every change of owner) condition every
write, ``beats`` is the holder's heartbeat. A claim whose ``beats`` a waiting run sees
unchanged for ``lease_duration`` on its own monotonic clock is taken over (a killed run);
a live one is waited out (two operators at once). ``LeaseTable.scan`` skips these items.

Every write also sets the table's TTL attribute ``expires_at`` to CLAIM_TTL from now: the
heartbeat keeps moving it while a claim is held, so a claim in progress never expires; a
finished (or abandoned) one goes CLAIM_TTL after its last write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from service.aws import error_code
from service.consume.leases import REPAIR_PREFIX, TTL_ATTRIBUTE
from service.errors import LeaseLostError

log = logging.getLogger(__name__)
_CONDITION_FAILED = "ConditionalCheckFailedException"
Item = dict[str, Any]
_T = TypeVar("_T")
# 30 days past a claim's last write: far beyond any claim's life between two writes (a
# holder writes every second); long enough that a later run still finds what an earlier
# one did (a redriven object's "done", a finished replay's progress).
CLAIM_TTL = 30 * 86400


def expiry() -> Item:
    """The TTL attribute's value: CLAIM_TTL from now, in epoch seconds (wall clock: that is
    what DynamoDB's TTL reads)."""
    return {"N": str(int(time.time()) + CLAIM_TTL)}


@dataclass
class Claim:
    """A claim this run holds at ``epoch``; ``item`` is the item as the claim wrote it (what
    an earlier holder left: an open intent, progress)."""

    key: str
    epoch: int
    item: Item
    last_beat: float = 0.0  # loop time the last heartbeat that landed was sent
    lost: bool = field(default=False)


def text(item: Item, name: str) -> str | None:
    value = item.get(name)
    return None if value is None else str(value.get("S", value.get("N")))


def binary(item: Item, name: str) -> bytes | None:
    value = item.get(name)
    return None if value is None else bytes(value["B"])


# What a retry of a whole step may follow (botocore's own three attempts were not enough):
# throttling, 5xx, a dropped connection, and a claim that went stale meanwhile.
CONNECTION_ERRORS = (BotoConnectionError, HTTPClientError, TimeoutError)
_RETRYABLE_CODES = {
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "SlowDown",
    "InternalFailure",
    "InternalError",
    "ServiceUnavailable",
}
ATTEMPTS = 8  # per object (redrive) or shard (replay); backoff capped at MAX_BACKOFF
MAX_BACKOFF = 5.0


def transient(exc: BaseException) -> bool:
    """A failure that running the step again (from the claim's item) may get past."""
    if isinstance(exc, BaseExceptionGroup):
        return all(transient(e) for e in exc.exceptions)
    if isinstance(exc, (LeaseLostError, *CONNECTION_ERRORS)):
        return True
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return error_code(exc) in _RETRYABLE_CODES or int(status) >= 500
    return False


async def retrying(what: str, step: Callable[[], Awaitable[_T]]) -> _T:
    """``step()`` again (jittered, capped backoff) after a transient failure, at most
    ATTEMPTS times; every step resumes from its claim's item, so a rerun is exact."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return await step()
        except Exception as exc:
            if attempt == ATTEMPTS or not transient(exc):
                raise
            log.warning("repair step failed; retrying", extra={"step": what, "error": repr(exc)})
            await asyncio.sleep(random.uniform(0, min(MAX_BACKOFF, 0.2 * 2**attempt)))
    raise AssertionError("unreachable")


def crash_for_test(crash_after: str | None, point: str) -> None:
    """The CLI's hidden ``--crash-after`` (tests/repair): SIGKILL this process after the
    step ``point``, as kill -9 would, to prove a rerun lands nothing twice."""
    if crash_after == point:
        os.kill(os.getpid(), signal.SIGKILL)


class ClaimTable:
    """Fenced claims of ``owner`` (this run's id) on repair items of the lease table."""

    def __init__(self, dynamodb: Any, table: str, owner: str, lease_duration: float) -> None:
        self._ddb = dynamodb
        self.table = table
        self.owner = owner
        self.lease_duration = lease_duration

    @staticmethod
    def item_key(*parts: str) -> str:
        return REPAIR_PREFIX + "#".join(parts)

    async def get(self, key: str) -> Item | None:
        resp = await self._ddb.get_item(
            TableName=self.table, Key={"shard_id": {"S": key}}, ConsistentRead=True
        )
        item = resp.get("Item")
        return None if item is None else dict(item)

    async def take(self, key: str) -> Claim:
        """Claim ``key``: at once when free, after its holder stopped beating for a whole
        ``lease_duration`` (seen on this run's clock) when held; never while it beats."""
        loop = asyncio.get_running_loop()
        seen: tuple[str | None, ...] | None = None
        since = loop.time()
        while True:
            item = await self.get(key) or {}
            owner, epoch, beats = text(item, "owner"), text(item, "epoch"), text(item, "beats")
            values: Item = {":e": {"N": epoch or "0"}}
            if owner == self.owner:
                # Ours already: a take whose answer was lost, or a retry after a transient
                # failure. Not fresh until a beat lands (``renew``).
                return Claim(key, int(epoch or "0"), item)
            if owner is None:
                condition = (
                    "attribute_not_exists(#o) AND (attribute_not_exists(epoch) OR epoch = :e)"
                )
            else:
                state = (owner, epoch, beats)
                if state != seen:
                    seen, since = state, loop.time()
                if loop.time() - since < self.lease_duration:
                    await asyncio.sleep(self.lease_duration / 10)
                    continue
                log.warning("taking over a stale repair claim", extra={"key": key, "owner": owner})
                condition = "#o = :o AND epoch = :e AND beats = :b"
                values |= {":o": {"S": owner}, ":b": {"N": beats or "0"}}
            new = int(epoch or "0") + 1
            sent = loop.time()
            try:
                resp = await self._ddb.update_item(
                    TableName=self.table,
                    Key={"shard_id": {"S": key}},
                    UpdateExpression="SET #o = :me, epoch = :new, beats = :zero, #t = :t",
                    ConditionExpression=condition,
                    ExpressionAttributeNames={"#o": "owner", "#t": TTL_ATTRIBUTE},
                    ExpressionAttributeValues=values
                    | {
                        ":me": {"S": self.owner},
                        ":new": {"N": str(new)},
                        ":zero": {"N": "0"},
                        ":t": expiry(),
                    },
                    ReturnValues="ALL_NEW",
                )
            except ClientError as exc:
                if error_code(exc) != _CONDITION_FAILED:
                    raise
                continue  # someone else moved first: look again
            return Claim(key, new, dict(resp["Attributes"]), last_beat=sent)

    async def update(
        self, claim: Claim, values: Item, remove: tuple[str, ...] = (), *, release: bool = False
    ) -> None:
        """SET ``values`` (attribute name -> DynamoDB value) and REMOVE ``remove`` while the
        claim is ours; ``release`` also gives the claim up. LeaseLostError when fenced."""
        names = {"#o": "owner", "#t": TTL_ATTRIBUTE}
        attrs: Item = {":me": {"S": self.owner}, ":e": {"N": str(claim.epoch)}, ":t": expiry()}
        sets = ["#t = :t"]
        for n, (name, value) in enumerate(sorted(values.items())):
            names[f"#a{n}"] = name
            attrs[f":a{n}"] = value
            sets.append(f"#a{n} = :a{n}")
        removed = [*remove, "#o"] if release else list(remove)
        update = "SET " + ", ".join(sets) + (" REMOVE " + ", ".join(removed) if removed else "")
        try:
            await self._ddb.update_item(
                TableName=self.table,
                Key={"shard_id": {"S": claim.key}},
                UpdateExpression=update.strip(),
                ConditionExpression="#o = :me AND epoch = :e",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=attrs,
            )
        except ClientError as exc:
            if error_code(exc) != _CONDITION_FAILED:
                raise
            if release and await self._released(claim):
                return  # our release landed; its answer was lost and the resend found it done
            claim.lost = True
            raise LeaseLostError(f"repair claim {claim.key} is no longer ours") from None

    async def _released(self, claim: Claim) -> bool:
        item = await self.get(claim.key) or {}
        return text(item, "owner") is None and text(item, "epoch") == str(claim.epoch)

    async def renew(self, claim: Claim) -> None:
        """Beat now: afterwards the claim is fresh; LeaseLostError when it is not ours."""
        if not await self._beat(claim):
            raise LeaseLostError(f"repair claim {claim.key} is no longer ours")

    async def _beat(self, claim: Claim) -> bool:
        """``beats`` + 1 (and the expiry moved) while the claim is ours; False when not."""
        sent = asyncio.get_running_loop().time()
        try:
            await self._ddb.update_item(
                TableName=self.table,
                Key={"shard_id": {"S": claim.key}},
                UpdateExpression="SET beats = beats + :one, #t = :t",
                ConditionExpression="#o = :me AND epoch = :e",
                ExpressionAttributeNames={"#o": "owner", "#t": TTL_ATTRIBUTE},
                ExpressionAttributeValues={
                    ":one": {"N": "1"},
                    ":me": {"S": self.owner},
                    ":e": {"N": str(claim.epoch)},
                    ":t": expiry(),
                },
            )
        except ClientError as exc:
            if error_code(exc) != _CONDITION_FAILED:
                raise
            claim.lost = True
            return False
        claim.last_beat = max(claim.last_beat, sent)
        return True

    def fresh(self, claim: Claim) -> bool:
        """The claim is still ours on this run's clock: its last heartbeat landed less than
        the lease duration (less a margin) ago. Uploads are sent only while it holds."""
        margin = min(1.0, self.lease_duration / 5)
        age = asyncio.get_running_loop().time() - claim.last_beat
        return not claim.lost and age < self.lease_duration - margin

    @contextlib.asynccontextmanager
    async def holding(self, claim: Claim) -> AsyncIterator[Claim]:
        """Heartbeat ``claim`` (``beats`` + 1 every lease_duration / 5, at most 1 s) while
        the block runs."""
        period = min(1.0, self.lease_duration / 5)

        async def beat() -> None:
            while True:
                await asyncio.sleep(period)
                try:
                    if not await self._beat(claim):
                        return
                except (ClientError, *CONNECTION_ERRORS) as exc:
                    log.warning("repair heartbeat failed", extra={"error": repr(exc)})

        task = asyncio.create_task(beat())
        try:
            yield claim
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
