"""What the console reads (I/O): the lease table, workers' /status, dead-letter objects in S3.

Every read is bounded: one paginated Scan of the lease table, a short timeout per worker, and a
cap on the objects listed or opened per page.
"""

from __future__ import annotations

import asyncio
import gzip
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from service.console.shards import ShardView, lags_from_statuses, shard_view
from service.consume.leases import LeaseTable, ShardLease

MAX_LISTED = 1000  # objects listed per dead-letter page
MAX_OPENED = 50  # objects read to show their entries
_WORKER_TIMEOUT = aiohttp.ClientTimeout(total=1.5)


@dataclass(frozen=True, slots=True)
class WorkerStatus:
    url: str
    document: dict[str, Any] | None
    error: str | None


async def worker_statuses(http: aiohttp.ClientSession, urls: Sequence[str]) -> list[WorkerStatus]:
    """Each consume worker's /status, or why it could not be read (never raises)."""

    async def one(url: str) -> WorkerStatus:
        try:
            async with http.get(url.rstrip("/") + "/status", timeout=_WORKER_TIMEOUT) as resp:
                if resp.status != 200:
                    return WorkerStatus(url, None, f"HTTP {resp.status}")
                return WorkerStatus(url, orjson.loads(await resp.read()), None)
        except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError) as exc:
            return WorkerStatus(url, None, type(exc).__name__)

    return list(await asyncio.gather(*(one(u) for u in urls)))


@dataclass(frozen=True, slots=True)
class Fleet:
    """One read of the fleet: the lease items, the view of them, the workers' /status."""

    leases: dict[str, ShardLease]
    view: ShardView
    statuses: list[WorkerStatus]


async def scan_fleet(
    dynamodb: Any, table: str, http: aiohttp.ClientSession, workers: Sequence[str]
) -> Fleet:
    """One (paginated) Scan of the lease table, and the workers' /status read at the same
    time (their lag, fresher than the one written with the last checkpoint, wins)."""
    (leases, beats), statuses = await asyncio.gather(
        LeaseTable(dynamodb, table).scan(progress=True), worker_statuses(http, workers)
    )
    lags = lags_from_statuses(s.document for s in statuses if s.document is not None)
    return Fleet(leases, shard_view(leases, beats, lags), statuses)


async def read_fleet(
    dynamodb: Any, table: str, http: aiohttp.ClientSession, workers: Sequence[str]
) -> tuple[ShardView, list[WorkerStatus]]:
    """The shard view (scan_fleet's) and the workers' statuses."""
    fleet = await scan_fleet(dynamodb, table, http, workers)
    return fleet.view, fleet.statuses


@dataclass(frozen=True, slots=True)
class DeadObject:
    key: str
    size: int
    modified: str


class DeadLetters:
    """The dead-letter prefix of the bucket: ``{prefix}dead-letter/dt=YYYY-MM-DD/…``."""

    def __init__(self, s3: Any, bucket: str, prefix: str) -> None:
        self._s3 = s3
        self.bucket = bucket
        self.root = f"{prefix}dead-letter/"

    async def dates(self) -> list[str]:
        """The ``dt=`` folders, newest first."""
        out: list[str] = []
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.root, "Delimiter": "/"}
        while True:
            page = await self._s3.list_objects_v2(**kwargs)
            out.extend(
                p["Prefix"][len(self.root) :].rstrip("/") for p in page.get("CommonPrefixes", [])
            )
            if not page.get("IsTruncated"):
                return sorted(out, reverse=True)
            kwargs["ContinuationToken"] = page["NextContinuationToken"]

    async def objects(self, date: str, limit: int = MAX_LISTED) -> tuple[list[DeadObject], bool]:
        """Up to ``limit`` objects of one ``dt=`` folder, and whether more exist."""
        out: list[DeadObject] = []
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": f"{self.root}{date}/"}
        while True:
            page = await self._s3.list_objects_v2(**kwargs)
            for obj in page.get("Contents", []):
                if len(out) == limit:
                    return out, True
                out.append(DeadObject(obj["Key"], obj["Size"], obj["LastModified"].isoformat()))
            if not page.get("IsTruncated"):
                return out, False
            kwargs["ContinuationToken"] = page["NextContinuationToken"]

    def owns(self, key: str) -> bool:
        """Whether ``key`` is a dead-letter object of this deployment (no path tricks)."""
        return key.startswith(self.root) and ".." not in key and key.endswith(".ndjson.gz")

    async def entries(self, key: str) -> list[dict[str, Any] | str]:
        """The object's NDJSON entries; a line that is no JSON object stays as its text."""
        body = await (await self._s3.get_object(Bucket=self.bucket, Key=key))["Body"].read()
        try:
            text = gzip.decompress(body)
        except (OSError, EOFError, zlib.error):
            return [f"not gzip: {len(body)} bytes"]
        out: list[dict[str, Any] | str] = []
        for line in text.splitlines():
            if not line.strip():
                continue
            try:
                value = orjson.loads(line)
            except orjson.JSONDecodeError:
                out.append(line.decode("utf-8", "replace"))
                continue
            out.append(value if isinstance(value, dict) else line.decode("utf-8", "replace"))
        return out
