"""``tideway compact``: settings -> the Iceberg table's compaction (sink/compact.py) (I/O)."""

from __future__ import annotations

import asyncio
import functools
import random
import re
import time
from collections.abc import Callable
from typing import Any

from pyiceberg.catalog import Catalog
from pyiceberg.table import Table

from service.aws import aws_clients
from service.consume.context import iceberg_properties
from service.errors import SettingsError
from service.settings import Settings
from service.sink.compact import compact, expire_snapshots
from service.sink.iceberg import open_catalog, split_identifier
from service.sink.iceberg_commit import WATERMARK_PREFIX
from service.sink.orphans import StoredObject, referenced_paths, select_orphans
from service.sink.s3 import delete_keys

DEFAULT_OLDER_THAN = 3600.0  # an hour past its end, a partition takes few late rows
# A consumer's upload is unreferenced until its commit lands: normally seconds later; at
# worst 30 commit attempts of ~6 catalog and S3 calls, each hanging to its client timeout
# on every retry, about 30 hours (docs/tables.md). A margin under 2 days is refused.
MIN_ORPHAN_AGE = 2 * 86400.0
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str, option: str = "--older-than") -> float:
    """Seconds of ``90``, ``90s``, ``30m``, ``2h`` or ``1d``; ValueError (one line naming
    ``option``) else."""
    match = _DURATION.fullmatch(text.strip())
    if not match:
        raise ValueError(f"{option} {text!r}: use a number with s, m, h or d (e.g. 2h)")
    return float(match.group(1)) * _UNITS[match.group(2)]


def check_orphan_age(seconds: float) -> float:
    """``seconds`` if it is a safe orphan margin; ValueError (one line) else."""
    if seconds < MIN_ORPHAN_AGE:
        raise ValueError(
            f"--remove-orphans-older-than {seconds:g}s: must be at least 2d, longer than any"
            " consumer's upload-to-commit time (docs/tables.md)"
        )
    return seconds


async def run_compaction(
    settings: Settings,
    older_than: float,
    expire_after: float | None = None,
    orphans_older_than: float | None = None,
) -> dict[str, Any]:
    """Compact TIDEWAY_ICEBERG_TABLE's closed partitions, then (``expire_after`` seconds
    given) forget older snapshots, then (``orphans_older_than`` given) delete data files no
    snapshot references that are older than that; the same for each pipeline table; the
    report as a dict (the pipelines' tables' reports under ``pipeline_tables``)."""
    if settings.table_format != "iceberg":
        raise SettingsError(
            "setting TIDEWAY_TABLE_FORMAT is invalid: tideway compact needs iceberg"
            " (a Hive layout cannot be rewritten atomically)"
        )
    async with aws_clients("s3") as aws:
        props = iceberg_properties(settings, aws.s3)
        catalog = await asyncio.to_thread(open_catalog, props)
        reports = []
        for identifier in await asyncio.to_thread(tideway_tables, catalog, settings):
            report = await _compact_and_expire(
                settings, catalog, identifier, older_than, expire_after
            )
            if orphans_older_than is not None:
                load = functools.partial(catalog.load_table, identifier)
                removed = await remove_orphans(aws.s3, load, time.time(), orphans_older_than)
                report["orphans_removed"] = len(removed)
            reports.append(report)
    # The default table's report as before; the pipelines' tables (DESIGN §12) beside it.
    return {**reports[0], "pipeline_tables": reports[1:]}


def tideway_tables(catalog: Catalog, settings: Settings) -> list[str]:
    """TIDEWAY_ICEBERG_TABLE, then the other tables of its namespace that live under the
    consumer's prefix (a pipeline's ``namespace.waf`` at ``{prefix}waf``) or that this
    stream's consumers committed to (a table the catalog placed elsewhere), by name."""
    namespace, _ = split_identifier(settings.iceberg_table)
    root = f"s3://{settings.bucket}/{settings.prefix}"
    ours = f"{WATERMARK_PREFIX}{settings.stream}."
    others = []
    for ident in catalog.list_tables(namespace):
        identifier = ".".join(ident)
        if identifier == settings.iceberg_table:
            continue
        table = catalog.load_table(identifier)
        here = table.location().rstrip("/") == f"{root}{ident[-1]}"
        if here or any(key.startswith(ours) for key in table.properties):
            others.append(identifier)
    return [settings.iceberg_table, *sorted(others)]


async def _compact_and_expire(
    settings: Settings,
    catalog: Catalog,
    identifier: str,
    older_than: float,
    expire_after: float | None,
) -> dict[str, Any]:
    def load() -> Table:
        return catalog.load_table(identifier)

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
    return {"table": identifier, **report.as_dict(), "snapshots_expired": expired}


async def list_objects(s3: Any, location: str) -> list[StoredObject]:
    """Every object under the ``s3://`` ``location``, with its last-modified time."""
    bucket, _, prefix = location.removeprefix("s3://").partition("/")
    found: list[StoredObject] = []
    kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix.rstrip("/") + "/"}
    while True:
        page = await s3.list_objects_v2(**kwargs)
        found.extend(
            StoredObject(f"s3://{bucket}/{o['Key']}", o["LastModified"].timestamp())
            for o in page.get("Contents", [])
        )
        if not page.get("IsTruncated"):
            return found
        kwargs["ContinuationToken"] = page["NextContinuationToken"]


async def remove_orphans(
    s3: Any, load_table: Callable[[], Table], now: float, older_than: float
) -> list[str]:
    """Delete the table's orphan data files older than ``older_than`` seconds (see
    sink/orphans.py); the URIs deleted. S3 is listed before the table is read, so a file
    committed meanwhile is either in the table read or younger than the margin."""
    location = (await asyncio.to_thread(load_table)).metadata.location
    listed = await list_objects(s3, location)
    table = await asyncio.to_thread(load_table)
    referenced = await asyncio.to_thread(referenced_paths, table)
    doomed = select_orphans(location, listed, referenced, now=now, older_than=older_than)
    by_bucket: dict[str, list[str]] = {}
    for uri in doomed:
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        by_bucket.setdefault(bucket, []).append(key)
    for bucket, keys in by_bucket.items():
        await delete_keys(s3, bucket, keys)
    return doomed
