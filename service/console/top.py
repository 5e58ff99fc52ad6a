"""``tideway status`` (I/O): read the shard view once, or refresh it top-style until stopped."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime

import aiohttp

from service.aws import aws_clients
from service.console.shards import ShardView
from service.console.sources import read_fleet
from service.console.terminal import status_json, status_text
from service.settings import Settings

CLEAR = "\x1b[H\x1b[2J"  # cursor home, clear screen: what top does between frames


async def read_status(
    settings: Settings, dynamodb: object, http: aiohttp.ClientSession
) -> ShardView:
    view, _ = await read_fleet(dynamodb, settings.lease_table, http, settings.console_workers)
    return view


async def status(
    settings: Settings,
    stop: asyncio.Event,
    write: Callable[[str], None],
    *,
    as_json: bool = False,
    watch: float | None = None,
) -> None:
    """Write the shard view once; with ``watch`` every ``watch`` seconds until ``stop``."""
    async with aws_clients("dynamodb") as aws, aiohttp.ClientSession() as http:
        while True:
            view = await read_status(settings, aws.dynamodb, http)
            if as_json:
                write(status_json(view))
            else:
                title = f"tideway status · {settings.lease_table} · " + datetime.now(UTC).strftime(
                    "%H:%M:%S UTC"
                )
                write((CLEAR if watch else "") + status_text(view, title=title))
            if watch is None:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), watch)
            if stop.is_set():
                return
