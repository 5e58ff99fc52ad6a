"""Shard assignment: bounded-load rendezvous hashing over live workers (pure).

Every worker computes the same answer from the same inputs, so the fleet converges in one
round with no leader. Rendezvous ranks move only the shards whose top-ranked worker
changed; the load bound (ceil(shards / workers)) keeps the spread within one shard.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def _rank(shard_id: str, worker_id: str) -> int:
    digest = hashlib.blake2b(f"{shard_id}\x00{worker_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def assign(shards: Iterable[str], workers: Iterable[str]) -> dict[str, str]:
    """Map each shard to one worker; empty when there are no workers."""
    shard_list = sorted(set(shards))
    worker_list = sorted(set(workers))
    if not worker_list:
        return {}
    capacity = -(-len(shard_list) // len(worker_list))
    load = dict.fromkeys(worker_list, 0)
    out: dict[str, str] = {}
    # Shards in a fixed order; each goes to its best-ranked worker that still has room.
    for shard in shard_list:
        ranked = sorted(worker_list, key=lambda w: _rank(shard, w), reverse=True)
        for worker in ranked:
            if load[worker] < capacity:
                out[shard] = worker
                load[worker] += 1
                break
    return out
