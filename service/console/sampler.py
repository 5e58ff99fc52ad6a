"""The console's sampler (I/O): reads the lease table every TIDEWAY_CONSOLE_SAMPLE_INTERVAL
seconds into the fleet history (history.py) while the console runs; its one task is owned by
a TaskGroup and cancelled with the console."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

from service.console.history import FleetHistory, fleet_sample
from service.console.sources import Fleet, scan_fleet
from service.settings import Settings

log = logging.getLogger(__name__)


def record(history: FleetHistory, fleet: Fleet, at_ms: int) -> None:
    """Keep one read of the fleet as a sample."""
    history.add(fleet_sample(at_ms, fleet.leases.values(), fleet.view.shards))


async def sample_forever(
    settings: Settings,
    dynamodb: Any,
    http: aiohttp.ClientSession,
    history: FleetHistory,
    clock: Callable[[], float] = time.time,
) -> None:
    """Sample until cancelled; a failed read is logged and the next one tried on time."""
    while True:
        try:
            fleet = await scan_fleet(dynamodb, settings.lease_table, http, settings.console_workers)
            record(history, fleet, int(clock() * 1000))
        except Exception as exc:  # DynamoDB throttled or unreachable: a gap in the charts
            log.warning("console: fleet sample failed", extra={"error": repr(exc)})
        await asyncio.sleep(settings.console_sample_interval)


@asynccontextmanager
async def fleet_sampler(
    settings: Settings, dynamodb: Any, http: aiohttp.ClientSession
) -> AsyncIterator[FleetHistory]:
    """The history, filled by a sampling task for as long as the context is open."""
    history = FleetHistory()
    async with asyncio.TaskGroup() as group:
        task = group.create_task(sample_forever(settings, dynamodb, http, history))
        try:
            yield history
        finally:
            task.cancel()  # the group awaits it
