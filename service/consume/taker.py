"""Taking and releasing shard leases (I/O), as KCL's LeaseTaker: apart from the worker loop.

Every write is fenced by (owner, epoch) in the lease table, so a take that races another
worker's loses cleanly (LeaseLostError -> None here) and a release by a worker that is no
longer the owner changes nothing.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Container, Mapping

from service.consume.leases import LeaseTable, ShardLease
from service.consume.sequence import checkpoint_to_wire
from service.errors import LeaseLostError
from service.telemetry.metrics import ConsumerMetrics

log = logging.getLogger(__name__)


class LeaseTaker:
    """Takes leases the assignment gives this worker, releases the ones it no longer runs."""

    def __init__(self, table: LeaseTable, worker_id: str, metrics: ConsumerMetrics) -> None:
        self.table = table
        self.worker_id = worker_id
        self.metrics = metrics

    def may_take(self, lease: ShardLease, alive: Container[str]) -> bool:
        """Free, ours, or held by a worker no longer alive (a live owner hands it off)."""
        return lease.owner in (None, self.worker_id) or lease.owner not in alive

    async def take(self, lease: ShardLease, *, start_at_ms: int | None = None) -> ShardLease | None:
        """The lease as written after taking it, or None if another worker changed it first
        (or it is finished). ``start_at_ms``: LATEST resolved to a time (leases.acquire)."""
        try:
            fresh = await self.table.acquire(lease, self.worker_id, start_at_ms=start_at_ms)
        except LeaseLostError:
            return None
        self.metrics.observe_acquired(lease.owner, self.worker_id)
        log.info(
            "lease acquired",
            extra={
                "shard_id": lease.shard_id,
                "epoch": fresh.epoch,
                "from": lease.owner,
                "checkpoint": None
                if fresh.checkpoint is None
                else checkpoint_to_wire(fresh.checkpoint),
                "intent": fresh.intent_last is not None,
            },
        )
        return fresh

    async def release(self, shard_id: str, epoch: int, reason: str) -> bool:
        """Give the shard up so its next owner starts at once; False if it was not ours."""
        try:
            await self.table.release(shard_id, self.worker_id, epoch)
        except LeaseLostError:
            return False
        self.metrics.handoffs.inc()
        log.info("lease released", extra={"shard_id": shard_id, "outcome": reason})
        return True

    async def release_strays(
        self,
        leases: Mapping[str, ShardLease],
        desired: Mapping[str, str],
        running: Container[str],
    ) -> None:
        """Release leases the table says are ours but no consumer runs (a round cancelled
        mid-acquire, a failed release): otherwise their next owner would wait for us forever."""
        me = self.worker_id
        for sid, lease in leases.items():
            if lease.owner != me or sid in running or desired.get(sid) == me or lease.finished:
                continue
            with contextlib.suppress(LeaseLostError):
                await self.table.release(sid, me, lease.epoch)
                log.info("stray lease released", extra={"shard_id": sid, "epoch": lease.epoch})
