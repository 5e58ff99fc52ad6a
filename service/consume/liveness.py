"""Which workers are alive, judged on the observer's own clock (pure), as KCL does.

A worker is alive while its heartbeat counter is seen to change: the observer notes, on
its own monotonic clock, when it last saw each counter move, and a worker whose counter
has not moved for ``lease_duration`` is dead. No two machines' clocks are ever compared,
so clock skew changes nothing. A worker first seen counts as alive for one lease duration
(it may have beaten just before), and a worker whose item is gone is dead at once.
"""

from __future__ import annotations

from collections.abc import Mapping

from service.consume.leases import WorkerBeat


class Liveness:
    """What one observer has seen of the fleet's heartbeat counters."""

    def __init__(self, lease_duration: float) -> None:
        self.lease_duration = lease_duration
        self._moved: dict[str, tuple[int, float]] = {}  # worker -> (counter, when it moved)

    def observe(self, beats: Mapping[str, WorkerBeat], now: float) -> set[str]:
        """Record a scan made at monotonic time ``now``; return the workers alive at ``now``."""
        for worker in list(self._moved):
            if worker not in beats:
                del self._moved[worker]
        for worker, beat in beats.items():
            seen = self._moved.get(worker)
            if seen is None or seen[0] != beat.beats:
                self._moved[worker] = (beat.beats, now)
        return {w for w, (_, moved) in self._moved.items() if now - moved < self.lease_duration}
