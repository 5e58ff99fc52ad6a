"""The worker's heartbeat (I/O), as KCL's LeaseRenewer: a worker owns its leases while its
heartbeat item in the lease table is alive."""

from __future__ import annotations

import time

from service.consume.leases import LeaseTable, WorkerBeat


class LeaseRenewer:
    """Writes this worker's heartbeat and knows when it last landed (monotonic time)."""

    def __init__(self, table: LeaseTable, worker_id: str, lease_duration: float) -> None:
        self.table = table
        self.worker_id = worker_id
        self.lease_duration = lease_duration
        self.lease_ms = int(lease_duration * 1000)
        self.beat_at: float | None = None  # monotonic time of the last heartbeat that landed

    async def beat(self, *, leaving: bool = False) -> int:
        """Write one heartbeat; returns the wall-clock ms it was sent at."""
        sent = time.monotonic()
        now_ms = int(time.time() * 1000)
        await self.table.heartbeat(self.worker_id, now_ms + self.lease_ms, leaving=leaving)
        self.beat_at = sent
        return now_ms

    def expired(self, margin: float) -> bool:
        """No heartbeat landed for a lease duration (less ``margin``): peers may own our shards."""
        if self.beat_at is None:
            return False
        return time.monotonic() - self.beat_at > self.lease_duration - margin

    async def remove(self) -> None:
        await self.table.remove_worker(self.worker_id)


def live_workers(beats: dict[str, WorkerBeat], now_ms: int) -> set[str]:
    """Workers whose heartbeat has not expired at ``now_ms`` (wall clock, epoch ms)."""
    return {w for w, b in beats.items() if b.expires_at_ms > now_ms}
