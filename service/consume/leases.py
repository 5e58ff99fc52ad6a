"""The DynamoDB lease table: one item per shard, one heartbeat item per worker (I/O).

Item ``shard_id=<shard>``: ``owner``, ``epoch`` (the fencing token, +1 on every change of
owner), ``checkpoint`` (last flushed sequence number, or SHARD_END), ``intent_first`` /
``intent_last`` (a flush that may be half written), ``intent_bytes``, ``intent_plan`` and
``intent_keys`` (the pinned plan: the plan document and the key listing of that flush,
zstd binary, service/sink/plan.py; read only by a replay, never by a lease round), ``start_at``,
``parents``, ``dedupe`` (the envelopes landed up to the checkpoint, service/consume/dedupe.py)
and ``intent_dedupe`` (the same as of the intent's first record, so a replay drops exactly
what the first reading dropped), ``opened_partitions`` (the partitions the shard opened in the
current hour as of the checkpoint, at most ``max_partitions`` 8-byte digests,
service/sink/opened.py; a replay takes them from the intent's pinned plan), ``pending_deletes``
(stale objects a replay's checkpoint listed for deletion, deleted after it by whoever owns
the shard, for a grace period: service/consume/flush.py PendingDeletes), ``progress`` (lag,
last flush, rows/s and running totals, written with each checkpoint: progress.py); the
``handoff*``/``committed_*`` of a flush handed to the elected committer (committer_lease.py).
Item ``shard_id=worker#<id>``: ``beats`` (a counter the worker increments with every
heartbeat: peers judge it alive while they see it change, on their own monotonic clock),
``written_at`` (the writer's wall clock, epoch ms, for people only), ``lag_ms`` (the largest
lag over its shards) and ``leaving`` (set on SIGTERM: still alive and owning its shards, but
no longer given any). Every write a worker makes to a shard is conditioned on ``owner`` and
``epoch`` still being its own (fencing); every change of owner bumps ``epoch``, so the owner
seen with an epoch is the owner at that epoch.

``checkpoint`` holds a sequence number or one of two sentinels (sequence.py): ``SHARD_END``
(closed shard read to its end) and ``TRIM_HORIZON`` (read from the shard's first record: the
children of a shard the fleet consumed, so nothing written to them before they are acquired
is lost). Strings live only in the items; this module hands out ints and Sentinels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from service.aws import error_code
from service.consume.conditional import CONDITION_FAILED, conditional_update
from service.consume.progress import PROGRESS_ATTRIBUTE, ShardProgress, progress_from_item
from service.consume.sequence import (
    FROM_START,
    SHARD_END,
    Checkpoint,
    checkpoint_from_wire,
    checkpoint_to_wire,
    sequence_from_wire,
)

__all__ = ["FROM_START", "SHARD_END", "LeaseTable", "ShardLease", "WorkerBeat"]
WORKER_PREFIX = "worker#"
REPAIR_PREFIX = "repair#"  # items of the repair tools (redrive claims, replay progress)
TTL_ATTRIBUTE = "expires_at"  # epoch s; only repair items carry it (no lease ever expires)
CONFIG_PREFIX = "config#"  # items that are no lease: the stored pipeline document (reload.py)
COMMITTER_PREFIX = "committer#"  # a table's elected committer (committer_lease.py)
# Every attribute a lease round reads; the dedupe states and the pinned plan stay out.
_SCANNED = (
    "shard_id, #o, epoch, checkpoint, intent_first, intent_last, intent_bytes, start_at, "
    "parents, beats, written_at, leaving"
)
# The console's Scan also reads the progress and the workers' lag (a lease round never does).
_SCANNED_FOR_PEOPLE = _SCANNED + ", lag_ms, " + PROGRESS_ATTRIBUTE


@dataclass(frozen=True, slots=True)
class ShardLease:
    """What the table says about one shard."""

    shard_id: str
    owner: str | None
    epoch: int
    checkpoint: Checkpoint | None
    intent_first: int | None
    intent_last: int | None
    parents: tuple[str, ...]
    start_at_ms: int | None = None  # LATEST resolved by the first owner: read from this time
    intent_bytes: int | None = None  # the open intent's flush charge (its replay holds it)
    dedupe: bytes | None = None
    intent_dedupe: bytes | None = None
    partitions: bytes | None = None  # partitions opened this hour, as of the checkpoint
    pending_deletes: bytes | None = None  # stale keys the checkpoint listed for deletion
    progress: ShardProgress | None = None  # lag, last flush, totals: progress.py

    @property
    def finished(self) -> bool:
        return self.checkpoint is SHARD_END


@dataclass(frozen=True, slots=True)
class WorkerBeat:
    worker_id: str
    beats: int
    leaving: bool = False
    written_at_ms: int = 0  # the writer's wall clock: shown to people, never compared
    lag_ms: int | None = None  # the largest lag over its shards as of that beat


def _lease_from_item(item: dict[str, Any]) -> ShardLease:
    def s(name: str) -> str | None:
        value = item.get(name)
        return value["S"] if value else None

    def seq(name: str) -> int | None:
        text = s(name)
        return None if text is None else sequence_from_wire(text)

    return ShardLease(
        shard_id=item["shard_id"]["S"],
        owner=s("owner"),
        epoch=int(item.get("epoch", {"N": "0"})["N"]),
        checkpoint=checkpoint_from_wire(s("checkpoint")),
        intent_first=seq("intent_first"),
        intent_last=seq("intent_last"),
        parents=tuple(p["S"] for p in item.get("parents", {"L": []})["L"]),
        start_at_ms=int(item["start_at"]["N"]) if "start_at" in item else None,
        intent_bytes=int(item["intent_bytes"]["N"]) if "intent_bytes" in item else None,
        dedupe=item["dedupe"]["B"] if "dedupe" in item else None,
        intent_dedupe=item["intent_dedupe"]["B"] if "intent_dedupe" in item else None,
        partitions=item["opened_partitions"]["B"] if "opened_partitions" in item else None,
        pending_deletes=item["pending_deletes"]["B"] if "pending_deletes" in item else None,
        progress=progress_from_item(item.get(PROGRESS_ATTRIBUTE)),
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

    async def scan(
        self, *, progress: bool = False
    ) -> tuple[dict[str, ShardLease], dict[str, WorkerBeat]]:
        """Every shard lease and worker heartbeat (consistent read); with ``progress``, also
        each shard's progress and each worker's lag (the console's view)."""
        leases: dict[str, ShardLease] = {}
        workers: dict[str, WorkerBeat] = {}
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "ConsistentRead": True,
            # Not the dedupe states (~120 KB each per shard): only the acquire needs them.
            "ProjectionExpression": _SCANNED_FOR_PEOPLE if progress else _SCANNED,
            "ExpressionAttributeNames": {"#o": "owner"},
        }
        while True:
            page = await self._ddb.scan(**kwargs)
            for item in page.get("Items", []):
                key = item["shard_id"]["S"]
                if key.startswith((REPAIR_PREFIX, CONFIG_PREFIX, COMMITTER_PREFIX)):
                    continue
                if key.startswith(WORKER_PREFIX):
                    wid = key.removeprefix(WORKER_PREFIX)
                    leaving = bool(item.get("leaving", {}).get("BOOL", False))
                    workers[wid] = WorkerBeat(
                        wid,
                        int(item.get("beats", {"N": "0"})["N"]),
                        leaving,
                        int(item.get("written_at", {"N": "0"})["N"]),
                        int(item["lag_ms"]["N"]) if "lag_ms" in item else None,
                    )
                else:
                    leases[key] = _lease_from_item(item)
            if "LastEvaluatedKey" not in page:
                return leases, workers
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    async def heartbeat(
        self,
        worker_id: str,
        beats: int,
        written_at_ms: int,
        *,
        leaving: bool = False,
        lag_ms: int | None = None,
    ) -> None:
        """Write the worker's heartbeat (unconditional: only it writes it) and its largest lag."""
        item = {
            "shard_id": {"S": WORKER_PREFIX + worker_id},
            "beats": {"N": str(beats)},
            "written_at": {"N": str(written_at_ms)},
            "leaving": {"BOOL": leaving},
        }
        if lag_ms is not None:
            item["lag_ms"] = {"N": str(lag_ms)}
        await self._ddb.put_item(TableName=self.table, Item=item)

    async def remove_worker(self, worker_id: str) -> None:
        await self._ddb.delete_item(
            TableName=self.table, Key={"shard_id": {"S": WORKER_PREFIX + worker_id}}
        )

    async def ensure_shard(
        self, shard_id: str, parents: tuple[str, ...], checkpoint: Checkpoint | None = None
    ) -> None:
        """Create the shard's lease item unless it exists (idempotent)."""
        item: dict[str, Any] = {
            "shard_id": {"S": shard_id},
            "epoch": {"N": "0"},
            "parents": {"L": [{"S": p} for p in parents]},
        }
        if checkpoint is not None:
            item["checkpoint"] = {"S": checkpoint_to_wire(checkpoint)}
        try:
            await self._ddb.put_item(
                TableName=self.table,
                Item=item,
                ConditionExpression="attribute_not_exists(shard_id)",
            )
        except ClientError as exc:
            if error_code(exc) != CONDITION_FAILED:
                raise

    async def acquire(
        self, lease: ShardLease, worker_id: str, *, start_at_ms: int | None = None
    ) -> ShardLease:
        """Take the shard if its owner did not change since ``lease`` was read.

        Returns the item as written, never ``lease``: the previous owner may have written an
        intent or a checkpoint after the scan (those do not bump the epoch), and the new owner
        must start from them. Raises LeaseLostError if someone else changed the owner first
        or the shard is finished (SHARD_END): a finished shard is never taken again.
        ``start_at_ms`` (LATEST resolved to a time) is recorded unless a previous owner
        recorded one already, so every owner starts a never-checkpointed shard at one point.
        """
        new_epoch = lease.epoch + 1
        update = "SET #o = :me, epoch = :new"
        values: dict[str, Any] = {
            ":me": {"S": worker_id},
            ":new": {"N": str(new_epoch)},
            ":seen": {"N": str(lease.epoch)},
            ":end": {"S": checkpoint_to_wire(SHARD_END)},
        }
        if start_at_ms is not None:
            update += ", start_at = if_not_exists(start_at, :at)"
            values[":at"] = {"N": str(start_at_ms)}
        # SHARD_END does not bump the epoch, so a scan that saw the shard unfinished may still
        # hold the current epoch: the condition itself refuses a finished shard.
        item = await self._fenced_update(
            lease.shard_id,
            update,
            "epoch = :seen AND (attribute_not_exists(checkpoint) OR checkpoint <> :end)",
            values,
            returns=True,
        )
        return _lease_from_item(item)

    async def write_intent(
        self,
        shard_id: str,
        worker_id: str,
        epoch: int,
        first: int,
        last: int,
        *,
        nbytes: int = 0,
        dedupe: bytes | None = None,
        plan: bytes | None = None,
        keys: bytes | None = None,
    ) -> None:
        """Step 1 of a flush: record the exact range about to be written, its buffered size
        (so a replay can wait for that much of its worker's memory budget), the dedupe
        state as of its first record, and the pinned plan (plan document, key listing)."""
        values = _fence(
            worker_id,
            epoch,
            dedupe,
            {":f": {"S": str(first)}, ":l": {"S": str(last)}, ":b": {"N": str(nbytes)}},
        )
        update = "SET intent_first = :f, intent_last = :l, intent_bytes = :b"
        if dedupe is not None:
            update += ", intent_dedupe = :d"
        remove = []
        for name, value in (("intent_plan", plan), ("intent_keys", keys)):
            if value is None:
                remove.append(name)  # never leave an older intent's pin beside this range
            else:
                values[f":{name}"] = {"B": value}
                update += f", {name} = :{name}"
        if remove:
            update += " REMOVE " + ", ".join(remove)
        await self._fenced_update(shard_id, update, "#o = :me AND epoch = :e", values)

    async def checkpoint(
        self,
        shard_id: str,
        worker_id: str,
        epoch: int,
        seq: Checkpoint,
        *,
        dedupe: bytes | None = None,
        partitions: bytes | None = None,
        pending: bytes | None = None,
        progress: ShardProgress | None = None,
    ) -> None:
        """Step 3: the range is in S3; advance the checkpoint (with the dedupe state, the
        partitions opened this hour after it, the stale keys still to delete, ``pending``,
        and the shard's progress: written under the same fence, so a fenced owner lists
        none) and clear the intent."""
        values = _fence(worker_id, epoch, dedupe, {":c": {"S": checkpoint_to_wire(seq)}})
        update = "SET checkpoint = :c" + (", dedupe = :d" if dedupe is not None else "")
        if partitions is not None:
            values[":p"] = {"B": partitions}
            update += ", opened_partitions = :p"  # "partitions" is a reserved word
        if progress is not None:
            values[":pg"] = progress.to_item()
            update += f", {PROGRESS_ATTRIBUTE} = :pg"
        remove = " REMOVE intent_first, intent_last, intent_bytes, intent_dedupe, intent_plan,"
        remove += " intent_keys, handoff, handoff_last, committed_last, committed_epoch"
        if pending is None:
            remove += ", pending_deletes"
        else:
            values[":pd"] = {"B": pending}
            update += ", pending_deletes = :pd"
        await self._fenced_update(
            shard_id,
            update + remove,
            "#o = :me AND epoch = :e",
            values,
        )

    async def intent_pin(self, shard_id: str) -> tuple[bytes | None, bytes | None]:
        """The open intent's plan document and key listing (either None when absent)."""
        resp = await self._ddb.get_item(
            TableName=self.table,
            Key={"shard_id": {"S": shard_id}},
            ConsistentRead=True,
        )
        item = resp.get("Item") or {}
        plan = item["intent_plan"]["B"] if "intent_plan" in item else None
        keys = item["intent_keys"]["B"] if "intent_keys" in item else None
        return plan, keys

    async def lease(self, shard_id: str) -> ShardLease | None:
        """The shard's whole lease item (consistent read); None when it has none."""
        resp = await self._ddb.get_item(
            TableName=self.table, Key={"shard_id": {"S": shard_id}}, ConsistentRead=True
        )
        item = resp.get("Item")
        return None if item is None else _lease_from_item(item)

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
        return await conditional_update(
            self._ddb,
            self.table,
            shard_id,
            update=update,
            condition=condition,
            values=values,
            lost=f"lease on {shard_id} is no longer ours",
            returns=returns,
        )
