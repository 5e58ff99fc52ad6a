"""Shard assignment: sticky, balanced rendezvous hashing over live workers (pure).

Every worker computes the same answer from the same inputs (the ready shards, the live
workers and the current owners read from the lease table), so the fleet converges in one
round with no leader.

The answer is balanced: every worker gets ``floor(S/W)`` or ``ceil(S/W)`` shards. Within
that bound it moves as few shards as possible from the current owners:

* the ``S mod W`` "ceil" slots go to the workers that already hold the most shards;
* a worker keeps ``min(held, target)`` of its shards (those it ranks highest);
* only the remainder (shards of dead or leaving workers, unowned shards, and the excess of
  workers above their target) is dealt out, each to its best-ranked worker with room.

So a leave moves exactly the leaver's shards, and a join moves exactly the newcomer's
share; nothing cascades. With no current owners this is plain bounded-load rendezvous.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping


def rank(shard_id: str, worker_id: str) -> int:
    """The rendezvous weight of ``worker_id`` for ``shard_id`` (higher is preferred)."""
    digest = hashlib.blake2b(f"{shard_id}\x00{worker_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def assign(
    shards: Iterable[str],
    workers: Iterable[str],
    current: Mapping[str, str | None] | None = None,
) -> dict[str, str]:
    """Map each shard to one worker; empty when there are no workers.

    ``current`` maps shards to their present owner (owners not in ``workers`` are ignored).
    Guarantees: every shard is assigned exactly once; loads differ by at most one; the
    result depends only on the three inputs (not their order); and the number of shards
    whose owner changes is the minimum any balanced assignment needs.
    """
    shard_list = sorted(set(shards))
    worker_list = sorted(set(workers))
    if not worker_list:
        return {}
    owners = current or {}
    held: dict[str, list[str]] = {w: [] for w in worker_list}
    for shard in shard_list:
        owner = owners.get(shard)
        if owner is not None and owner in held:
            held[owner].append(shard)
    base, extra = divmod(len(shard_list), len(worker_list))
    # The extra slots go to the workers holding the most, so the fewest shards move; ties
    # by a hash of the worker id, so the slots do not always land on the same names.
    by_held = sorted(worker_list, key=lambda w: (-len(held[w]), rank("", w), w))
    target = {w: base + (1 if i < extra else 0) for i, w in enumerate(by_held)}

    out: dict[str, str] = {}
    for worker, mine in held.items():
        mine.sort(key=lambda s: (rank(s, worker), s), reverse=True)
        for shard in mine[: target[worker]]:
            out[shard] = worker
    room = {w: target[w] - min(len(held[w]), target[w]) for w in worker_list}
    for shard in shard_list:
        if shard in out:
            continue
        best = max((w for w in worker_list if room[w] > 0), key=lambda w: (rank(shard, w), w))
        out[shard] = best
        room[best] -= 1
    return out


def moved(before: Mapping[str, str], after: Mapping[str, str]) -> int:
    """How many shards that had an owner in ``before`` have a different one in ``after``."""
    return sum(1 for shard, owner in before.items() if after.get(shard, owner) != owner)
