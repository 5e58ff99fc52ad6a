"""The DynamoDB lease table: one item per shard, one heartbeat item per worker (I/O).

Item ``shard_id=<shard>``: ``owner``, ``epoch`` (the fencing token, +1 on every change of
owner), ``checkpoint`` (last flushed sequence number, or SHARD_END), ``intent_first`` /
``intent_last`` (a flush that may be half written), ``parents``, ``dedupe`` (the envelopes
landed up to the checkpoint, service/consume/dedupe.py) and ``intent_dedupe`` (the same as
of the intent's first record, so a replay drops exactly what the first reading dropped).
Item ``shard_id=worker#<id>``: ``expires_at`` (epoch ms) and ``leaving`` (set on SIGTERM:
still alive and owning its shards, but no longer given any). Every write a worker makes to a
shard is conditioned on ``owner`` and ``epoch`` still being its own (fencing); every change
of owner bumps ``epoch``, so the owner seen with an epoch is the owner at that epoch.

``checkpoint`` holds a sequence number or one of two sentinels: ``SHARD_END`` (closed shard
read to its end) and ``TRIM_HORIZON`` (read from the shard's first record: the children of
a shard the fleet consumed, so nothing written to them before they are acquired is lost).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from service.aws import error_code
from service.errors import LeaseLostError

WORKER_PREFIX = "worker#"
SHARD_END = "SHARD_END"
FROM_START = "TRIM_HORIZON"
_CONDITION_FAILED = "ConditionalCheckFailedException"
_SCANNED = (
    "shard_id, #o, epoch, checkpoint, intent_first, intent_last, parents, expires_at, leaving"
)


@dataclass(frozen=True, slots=True)
class ShardLease:
    """What the table says about one shard."""

    shard_id: str
    owner: str | None
    epoch: int
    checkpoint: str | None
    intent_first: str | None
    intent_last: str | None
    parents: tuple[str, ...]
    dedupe: bytes | None = None
    intent_dedupe: bytes | None = None

    @property
    def finished(self) -> bool:
        return self.checkpoint == SHARD_END


@dataclass(frozen=True, slots=True)
class WorkerBeat:
    worker_id: str
    expires_at_ms: int
    leaving: bool = False


def _lease_from_item(item: dict[str, Any]) -> ShardLease:
    def s(name: str) -> str | None:
        value = item.get(name)
        return value["S"] if value else None

    return ShardLease(
        shard_id=item["shard_id"]["S"],
        owner=s("owner"),
        epoch=int(item.get("epoch", {"N": "0"})["N"]),
        checkpoint=s("checkpoint"),
        intent_first=s("intent_first"),
        intent_last=s("intent_last"),
        parents=tuple(p["S"] for p in item.get("parents", {"L": []})["L"]),
        dedupe=item["dedupe"]["B"] if "dedupe" in item else None,
        intent_dedupe=item["intent_dedupe"]["B"] if "intent_dedupe" in item else None,
    )


def _fence(
    worker_id: str, epoch: int, dedupe: bytes | None, values: dict[str, Any]
) -> dict[str, Any]:
    """``values`` plus the fencing token's (and the dedupe state as ``:d``, if any)."""
    out = {**values, ":me": {"S": worker_id}, ":e": {"N": str(epoch)}}
    if dedupe is not None:
        out[":d"] = {"B": dedupe}
    return out


class LeaseTable:
    """Fenced operations on the lease table."""

    def __init__(self, dynamodb: Any, table: str) -> None:
        self._ddb = dynamodb
        self.table = table

    async def scan(self) -> tuple[dict[str, ShardLease], dict[str, WorkerBeat]]:
        """Every shard lease and worker heartbeat (consistent read)."""
        leases: dict[str, ShardLease] = {}
        workers: dict[str, WorkerBeat] = {}
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "ConsistentRead": True,
            # Every attribute but the dedupe states (up to ~120 KB each per shard): a round
            # runs every second, and only the acquire, which returns the whole item, needs them.
            "ProjectionExpression": _SCANNED,
            "ExpressionAttributeNames": {"#o": "owner"},
        }
        while True:
            page = await self._ddb.scan(**kwargs)
            for item in page.get("Items", []):
                key = item["shard_id"]["S"]
                if key.startswith(WORKER_PREFIX):
                    wid = key.removeprefix(WORKER_PREFIX)
                    leaving = bool(item.get("leaving", {}).get("BOOL", False))
                    workers[wid] = WorkerBeat(wid, int(item["expires_at"]["N"]), leaving)
                else:
                    leases[key] = _lease_from_item(item)
            if "LastEvaluatedKey" not in page:
                return leases, workers
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    async def heartbeat(self, worker_id: str, expires_at_ms: int, *, leaving: bool = False) -> None:
        await self._ddb.put_item(
            TableName=self.table,
            Item={
                "shard_id": {"S": WORKER_PREFIX + worker_id},
                "expires_at": {"N": str(expires_at_ms)},
                "leaving": {"BOOL": leaving},
            },
        )

    async def remove_worker(self, worker_id: str) -> None:
        await self._ddb.delete_item(
            TableName=self.table, Key={"shard_id": {"S": WORKER_PREFIX + worker_id}}
        )

    async def ensure_shard(
        self, shard_id: str, parents: tuple[str, ...], checkpoint: str | None = None
    ) -> None:
        """Create the shard's lease item unless it exists (idempotent)."""
        item: dict[str, Any] = {
            "shard_id": {"S": shard_id},
            "epoch": {"N": "0"},
            "parents": {"L": [{"S": p} for p in parents]},
        }
        if checkpoint is not None:
            item["checkpoint"] = {"S": checkpoint}
        try:
            await self._ddb.put_item(
                TableName=self.table,
                Item=item,
                ConditionExpression="attribute_not_exists(shard_id)",
            )
        except ClientError as exc:
            if error_code(exc) != _CONDITION_FAILED:
                raise

    async def acquire(self, lease: ShardLease, worker_id: str) -> ShardLease:
        """Take the shard if its owner did not change since ``lease`` was read.

        Returns the item as written, never ``lease``: the previous owner may have written an
        intent or a checkpoint after the scan (those do not bump the epoch), and the new owner
        must start from them. Raises LeaseLostError if someone else changed the owner first.
        """
        new_epoch = lease.epoch + 1
        item = await self._fenced_update(
            lease.shard_id,
            "SET #o = :me, epoch = :new",
            "epoch = :seen",
            {
                ":me": {"S": worker_id},
                ":new": {"N": str(new_epoch)},
                ":seen": {"N": str(lease.epoch)},
            },
            returns=True,
        )
        return _lease_from_item(item)

    async def write_intent(
        self,
        shard_id: str,
        worker_id: str,
        epoch: int,
        first: str,
        last: str,
        *,
        dedupe: bytes | None = None,
    ) -> None:
        """Step 1 of a flush: record the exact range about to be written (and the dedupe
        state as of its first record)."""
        values = _fence(worker_id, epoch, dedupe, {":f": {"S": first}, ":l": {"S": last}})
        update = "SET intent_first = :f, intent_last = :l"
        if dedupe is not None:
            update += ", intent_dedupe = :d"
        await self._fenced_update(shard_id, update, "#o = :me AND epoch = :e", values)

    async def checkpoint(
        self, shard_id: str, worker_id: str, epoch: int, seq: str, *, dedupe: bytes | None = None
    ) -> None:
        """Step 3: the range is in S3; advance the checkpoint (with the dedupe state after
        it) and clear the intent."""
        values = _fence(worker_id, epoch, dedupe, {":c": {"S": seq}})
        update = "SET checkpoint = :c" + (", dedupe = :d" if dedupe is not None else "")
        await self._fenced_update(
            shard_id,
            update + " REMOVE intent_first, intent_last, intent_dedupe",
            "#o = :me AND epoch = :e",
            values,
        )

    async def dedupe_states(self, shard_ids: tuple[str, ...]) -> list[bytes]:
        """The checkpointed dedupe states of ``shard_ids`` (a child's parents), in order."""
        out: list[bytes] = []
        for shard_id in shard_ids:
            resp = await self._ddb.get_item(
                TableName=self.table, Key={"shard_id": {"S": shard_id}}, ConsistentRead=True
            )
            item = resp.get("Item") or {}
            if "dedupe" in item:
                out.append(item["dedupe"]["B"])
        return out

    async def release(self, shard_id: str, worker_id: str, epoch: int) -> None:
        """Give the shard up (after a final flush) so the next owner starts at once."""
        await self._fenced_update(
            shard_id,
            "REMOVE #o SET epoch = :next",
            "#o = :me AND epoch = :e",
            {":me": {"S": worker_id}, ":e": {"N": str(epoch)}, ":next": {"N": str(epoch + 1)}},
        )

    async def _fenced_update(
        self,
        shard_id: str,
        update: str,
        condition: str,
        values: dict[str, Any],
        *,
        returns: bool = False,
    ) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "Key": {"shard_id": {"S": shard_id}},
            "UpdateExpression": update,
            "ConditionExpression": condition,
            "ExpressionAttributeValues": values,
        }
        if "#o" in update or "#o" in condition:
            kwargs["ExpressionAttributeNames"] = {"#o": "owner"}
        if returns:
            kwargs["ReturnValues"] = "ALL_NEW"
        try:
            resp = await self._ddb.update_item(**kwargs)
        except ClientError as exc:
            if error_code(exc) == _CONDITION_FAILED:
                raise LeaseLostError(f"lease on {shard_id} is no longer ours") from None
            raise
        return dict(resp.get("Attributes", {}))
