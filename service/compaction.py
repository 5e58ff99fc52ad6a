"""``tideway compact``: settings -> the Iceberg table's compaction (sink/compact.py) (I/O)."""

from __future__ import annotations

import asyncio
import random
import re
import time
from typing import Any

from pyiceberg.table import Table

from service.aws import aws_clients
from service.consume.context import iceberg_properties
from service.errors import SettingsError
from service.settings import Settings
from service.sink.compact import compact, expire_snapshots
from service.sink.iceberg import open_catalog

DEFAULT_OLDER_THAN = 3600.0  # an hour past its end, a partition takes few late rows
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str, option: str = "--older-than") -> float:
    """Seconds of ``90``, ``90s``, ``30m``, ``2h`` or ``1d``; ValueError (one line naming
    ``option``) else."""
    match = _DURATION.fullmatch(text.strip())
    if not match:
        raise ValueError(f"{option} {text!r}: use a number with s, m, h or d (e.g. 2h)")
    return float(match.group(1)) * _UNITS[match.group(2)]


async def run_compaction(
    settings: Settings, older_than: float, expire_after: float | None = None
) -> dict[str, Any]:
    """Compact TIDEWAY_ICEBERG_TABLE's closed partitions, then (``expire_after`` seconds
    given) forget older snapshots; the report as a dict."""
    if settings.table_format != "iceberg":
        raise SettingsError(
            "setting TIDEWAY_TABLE_FORMAT is invalid: tideway compact needs iceberg"
            " (a Hive layout cannot be rewritten atomically)"
        )
    async with aws_clients("s3") as aws:
        props = iceberg_properties(settings, aws.s3)
    catalog = await asyncio.to_thread(open_catalog, props)

    def load() -> Table:
        return catalog.load_table(settings.iceberg_table)

    now, rng = time.time(), random.Random()
    report = await asyncio.to_thread(
        compact,
        load,
        now=now,
        older_than=older_than,
        target=settings.file_target_bytes,
        rng=rng,
    )
    expired = 0
    if expire_after is not None:
        expired = await asyncio.to_thread(
            expire_snapshots, load, now=now, keep_for=expire_after, rng=rng
        )
    return {"table": settings.iceberg_table, **report.as_dict(), "snapshots_expired": expired}
