"""The elected committer's items in the lease table (I/O; docs/tables.md).

Item ``shard_id=committer#<table identifier>``: ``owner`` (the worker holding the table's
commits) and ``epoch`` (+1 on every change of holder, as a shard's). Its liveness is its
holder's heartbeat (``worker#<id>``), judged as for shards; so it needs no heartbeat of its
own. The lease round skips these items (leases.py).

On a shard's item, beside its intent: ``handoff_last`` and ``handoff`` (the uploaded flush
its owner hands to the committer, written fenced on the owner's lease), then
``committed_last`` and ``committed_epoch`` (the committer's mark once its snapshot
landed, conditioned on the hand-off still being that flush). The checkpoint removes all
four (leases.py). sink/iceberg_handoff.py says what they mean.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from service.consume.conditional import conditional_update
from service.consume.leases import COMMITTER_PREFIX
from service.errors import LeaseLostError
from service.sink.iceberg_handoff import Handoff, Mark, decode_handoff

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CommitterHold:
    """Who holds a table's commits, at which epoch (None: nobody)."""

    owner: str | None
    epoch: int


class CommitterLeases:
    """Fenced operations on the committer items and the hand-off attributes."""

    def __init__(self, dynamodb: Any, table: str) -> None:
        self._ddb = dynamodb  # the lease table's client: the same table as the shards'
        self.table = table

    @staticmethod
    def key(identifier: str) -> str:
        return COMMITTER_PREFIX + identifier

    async def hold(self, identifier: str) -> CommitterHold:
        """The committer item as it is now (consistent read); epoch 0 and no owner if none."""
        resp = await self._ddb.get_item(
            TableName=self.table,
            Key={"shard_id": {"S": self.key(identifier)}},
            ConsistentRead=True,
        )
        item = resp.get("Item") or {}
        owner = item.get("owner", {}).get("S")
        return CommitterHold(owner, int(item.get("epoch", {"N": "0"})["N"]))

    async def take(self, identifier: str, worker_id: str, seen: CommitterHold) -> int:
        """Become the holder if the item did not change since ``seen``; the new epoch.
        Raises LeaseLostError when another worker changed it first."""
        new = seen.epoch + 1
        condition = "attribute_not_exists(shard_id) OR epoch = :seen"
        await self._update(
            self.key(identifier),
            "SET #o = :me, epoch = :new",
            condition,
            {":me": {"S": worker_id}, ":new": {"N": str(new)}, ":seen": {"N": str(seen.epoch)}},
        )
        return new

    async def release(self, identifier: str, worker_id: str, epoch: int) -> None:
        """Give the commits up (leaving) so the next holder starts at once."""
        await self._update(
            self.key(identifier),
            "REMOVE #o SET epoch = :next",
            "#o = :me AND epoch = :e",
            {":me": {"S": worker_id}, ":e": {"N": str(epoch)}, ":next": {"N": str(epoch + 1)}},
        )

    async def hand_off(
        self, shard_id: str, worker_id: str, epoch: int, last: int, handoff: bytes
    ) -> None:
        """Record an uploaded flush for the committer, fenced on the owner's shard lease
        (raises LeaseLostError when the shard is no longer ours: a zombie hands off nothing)."""
        await self._update(
            shard_id,
            "SET handoff_last = :l, handoff = :h REMOVE committed_last, committed_epoch",
            "#o = :me AND epoch = :e",
            {
                ":me": {"S": worker_id},
                ":e": {"N": str(epoch)},
                ":l": {"S": str(last)},
                ":h": {"B": handoff},
            },
        )

    async def handoffs(self) -> list[tuple[Handoff, Mark | None]]:
        """Every flush handed off and not yet checkpointed, with its mark if any (a
        consistent scan; the other items come back as their key alone: a filter would
        cost the same reads)."""
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "ConsistentRead": True,
            "ProjectionExpression": (
                "shard_id, handoff_last, handoff, committed_last, committed_epoch"
            ),
        }
        out: list[tuple[Handoff, Mark | None]] = []
        while True:
            page = await self._ddb.scan(**kwargs)
            for item in page.get("Items", []):
                if "handoff_last" not in item or "handoff" not in item:
                    continue
                try:
                    last = int(item["handoff_last"]["S"])
                    one = decode_handoff(item["shard_id"]["S"], last, item["handoff"]["B"])
                except (KeyError, ValueError) as exc:
                    # Left out, not a failed round: one bad item must not stall every
                    # flush; its owner commits it itself at its deadline.
                    log.warning(
                        "hand-off skipped: malformed",
                        extra={"shard_id": item["shard_id"]["S"], "error": str(exc)},
                    )
                    continue
                out.append((one, _mark(item)))
            if "LastEvaluatedKey" not in page:
                return out
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    async def mark(self, handoff: Handoff, epoch: int) -> bool:
        """Tell the owner its flush is in the table (with the epoch of the hand-off whose
        objects it holds), while the item still hands off that flush (its owner may have
        checkpointed and moved on); False when it did not."""
        try:
            await self._update(
                handoff.shard_id,
                "SET committed_last = :l, committed_epoch = :e",
                "handoff_last = :l",
                {":l": {"S": str(handoff.last)}, ":e": {"N": str(epoch)}},
            )
        except LeaseLostError:
            return False
        return True

    async def marked(self, shard_id: str) -> Mark | None:
        """The committer's mark on the shard's item, if any (consistent read)."""
        resp = await self._ddb.get_item(
            TableName=self.table,
            Key={"shard_id": {"S": shard_id}},
            ConsistentRead=True,
            ProjectionExpression="committed_last, committed_epoch",
        )
        return _mark(resp.get("Item") or {})

    async def _update(self, key: str, update: str, condition: str, values: dict[str, Any]) -> None:
        await conditional_update(
            self._ddb,
            self.table,
            key,
            update=update,
            condition=condition,
            values=values,
            lost=f"{key} changed; the write was refused",
        )


def _mark(item: dict[str, Any]) -> Mark | None:
    if "committed_last" not in item or "committed_epoch" not in item:
        return None
    return Mark(int(item["committed_last"]["S"]), int(item["committed_epoch"]["N"]))
