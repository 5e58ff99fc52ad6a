"""Shard discovery and parents-first readiness (pure), as KCL's shard syncer cuts them.

A shard is read only once every parent still in the stream is finished (checkpoint
``SHARD_END``), so a key's records are landed in order across a split or a merge. These
functions take the ListShards answer and the lease table as data and return data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from service.consume.leases import ShardLease
from service.consume.sequence import FROM_START, SHARD_END, Sentinel, sequence_from_wire


@dataclass(frozen=True, slots=True)
class ShardInfo:
    """One shard as ListShards describes it."""

    shard_id: str
    parents: tuple[str, ...]
    closed: bool
    ending_sequence: int | None = None  # EndingSequenceNumber of a closed shard


def shard_info(listing: Mapping[str, Any]) -> ShardInfo:
    """The ShardInfo of one ListShards entry."""
    parents = tuple(
        p for p in (listing.get("ParentShardId"), listing.get("AdjacentParentShardId")) if p
    )
    # moto never ends a closed shard's iterator nor names its children; a closed shard is
    # one whose range has an EndingSequenceNumber (DESIGN §8).
    ending = listing.get("SequenceNumberRange", {}).get("EndingSequenceNumber")
    return ShardInfo(
        listing["ShardId"],
        parents,
        closed=ending is not None,
        ending_sequence=None if ending is None else sequence_from_wire(ending),
    )


def ready_shards(shards: Mapping[str, ShardInfo], leases: Mapping[str, ShardLease]) -> list[str]:
    """Unfinished shards whose parents are finished (or gone from the stream): parents first.

    A shard without a lease item is not ready (its item is created first); a parent no
    longer listed (trimmed past retention) never blocks its children.
    """
    out = []
    for sid, info in shards.items():
        lease = leases.get(sid)
        if lease is None or lease.finished:
            continue
        if all(p not in shards or (p in leases and leases[p].finished) for p in info.parents):
            out.append(sid)
    return out


def initial_checkpoint(
    info: ShardInfo, leases: Mapping[str, ShardLease], start_kind: str
) -> Sentinel | None:
    """Where a shard first seen now starts, whatever the configured start position.

    A child of a shard the fleet tracks starts at its first record: records written to it
    while its parents were still being read must not be skipped by LATEST or AT_TIMESTAMP
    (KCL does the same). With LATEST, a shard already closed when first seen has nothing
    new to give and is finished at once. Otherwise None: the configured position applies.
    """
    if any(p in leases for p in info.parents):
        return FROM_START
    if info.closed and start_kind == "LATEST":
        return SHARD_END
    return None
