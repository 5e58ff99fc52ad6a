"""Per-node clocks over the loop's virtual time, put where the consumer reads ``time``.

Every node runs its tasks in a context naming the node (a ContextVar: tasks copy the
context they are created in), so ``time.time()`` inside the consumer answers with the
virtual wall clock plus that node's skew, and ``time.monotonic()`` with the virtual clock
plus that node's own arbitrary origin.
"""

from __future__ import annotations

import contextlib
import random
import sys
import time as real_time
import types
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from tests.sim.loop import VirtualTimeLoop

# 2026-03-01T00:00:00Z: the virtual wall clock of every simulation starts here.
EPOCH = 1772323200.0


@dataclass
class NodeClock:
    name: str = ""
    skew: float = 0.0  # seconds this node's wall clock is ahead of true time
    mono_origin: float = 1000.0  # monotonic clocks of two machines share no origin


CURRENT: ContextVar[NodeClock | None] = ContextVar("sim_node_clock", default=None)


class SimTime(types.SimpleNamespace):
    """Stands in for the ``time`` module inside the code under test."""

    def __init__(self, loop: VirtualTimeLoop) -> None:
        super().__init__()
        self._loop = loop

    def _clock(self) -> NodeClock:
        return CURRENT.get() or NodeClock()

    def time(self) -> float:
        return EPOCH + self._loop.time() + self._clock().skew

    def time_ns(self) -> int:
        return int(self.time() * 1e9)

    def monotonic(self) -> float:
        return self._clock().mono_origin + self._loop.time()

    def monotonic_ns(self) -> int:
        return int(self.monotonic() * 1e9)

    perf_counter = monotonic

    def __getattr__(self, name: str) -> Any:
        return getattr(real_time, name)


def true_wall(loop: VirtualTimeLoop) -> float:
    """The virtual wall clock with no skew (what the AWS models stamp)."""
    return EPOCH + loop.time()


_PATCHED_PREFIXES = ("service.consume.", "service.sink.")


@contextlib.contextmanager
def patched_modules(sim_time: SimTime, rng: random.Random) -> Iterator[None]:
    """Point ``time`` and ``random`` (and names imported from them) in the consumer's and
    sink's modules at the simulation's clock and seeded generator; restore on exit."""
    swaps = {
        id(real_time): sim_time,
        id(real_time.time): sim_time.time,
        id(real_time.monotonic): sim_time.monotonic,
        id(real_time.perf_counter): sim_time.perf_counter,
        id(random): rng,
        id(random.random): rng.random,
        id(random.uniform): rng.uniform,
    }
    saved: list[tuple[Any, str, Any]] = []
    for name, module in list(sys.modules.items()):
        if module is None or not name.startswith(_PATCHED_PREFIXES):
            continue
        for attr, value in list(vars(module).items()):
            new = swaps.get(id(value))
            if new is not None:
                saved.append((module, attr, value))
                setattr(module, attr, new)
    try:
        yield
    finally:
        for module, attr, value in saved:
            setattr(module, attr, value)
