"""The worker's heartbeat (I/O), as KCL's LeaseRenewer: a worker owns its leases while
peers see its heartbeat counter move (liveness.py).

The heartbeat runs in its own task, owned by the worker's TaskGroup, so it keeps flowing
while flushes run and while SIGTERM waits for the last ones; lease rounds never carry it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from service.consume.leases import LeaseTable
from service.consume.reader import wall_time

log = logging.getLogger(__name__)


class LeaseRenewer:
    """Beats every ``interval`` seconds and knows when a beat last landed (loop time)."""

    def __init__(
        self,
        table: LeaseTable,
        worker_id: str,
        lease_duration: float,
        wall_clock: Callable[[], float] = wall_time,
        lag_ms: Callable[[], int] | None = None,
    ) -> None:
        self.table = table
        self.worker_id = worker_id
        self.lease_duration = lease_duration
        self.interval = min(1.0, lease_duration / 5)
        self.wall_clock = wall_clock
        self.lag_ms = lag_ms  # its shards' largest lag, carried by each beat (for the console)
        self.beats = 0
        self.leaving = False
        self.beat_at: float | None = None  # loop time of the last heartbeat that landed
        self._wake = asyncio.Event()

    async def beat(self) -> None:
        """Write one heartbeat (the counter moves by one); raises what DynamoDB raises."""
        loop = asyncio.get_running_loop()
        sent = loop.time()
        self.beats += 1
        written_at = int(self.wall_clock() * 1000)
        lag = None if self.lag_ms is None else self.lag_ms()
        await self.table.heartbeat(
            self.worker_id, self.beats, written_at, leaving=self.leaving, lag_ms=lag
        )
        self.beat_at = sent

    def leave(self) -> None:
        """From now on beat as leaving (alive, owning its shards, but given none); at once."""
        self.leaving = True
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Beat until ``stop``; a failed beat is logged and the next one tried on time."""
        while not stop.is_set():
            try:
                await asyncio.wait_for(self.beat(), self.interval)
            except Exception as exc:  # DynamoDB unreachable, throttled or slow: try again
                log.warning("heartbeat failed", extra={"error": f"{type(exc).__name__}: {exc}"})
            self._wake.clear()
            waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
            try:
                await asyncio.wait(waits, timeout=self.interval, return_when="FIRST_COMPLETED")
            finally:
                for w in waits:
                    w.cancel()

    def expired(self, margin: float) -> bool:
        """No heartbeat landed for a lease duration (less ``margin``): peers may own our shards."""
        if self.beat_at is None:
            return False
        now = asyncio.get_running_loop().time()
        return now - self.beat_at > self.lease_duration - margin

    async def remove(self) -> None:
        await self.table.remove_worker(self.worker_id)
