"""Parquet footers of objects in S3, read by ranged GETs (I/O): what the elected committer
needs of a flush another worker uploaded (sink/iceberg_handoff.py). One GET of the tail
usually; a second of exactly the footer when it is larger than the first read."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from service.sink.iceberg_commit import TableFile
from service.sink.iceberg_handoff import FOOTER_TAIL, footer_from_tail, footer_length, tail_range

_CONCURRENCY = 16  # footer GETs in flight per committer round


async def _range(s3: Any, bucket: str, key: str, first: int, last: int) -> bytes:
    resp = await s3.get_object(Bucket=bucket, Key=key, Range=f"bytes={first}-{last}")
    data: bytes = await resp["Body"].read()
    return data


async def table_file(s3: Any, bucket: str, key: str, size: int) -> TableFile:
    """The committer's record of the ``size``-byte object ``key`` (footer only, no body)."""
    first, last = tail_range(size, FOOTER_TAIL)
    tail = await _range(s3, bucket, key, first, last)
    need = footer_length(tail) + 8
    if need > len(tail):
        first, last = tail_range(size, need)
        tail = await _range(s3, bucket, key, first, last)
    return TableFile(f"s3://{bucket}/{key}", size, footer_from_tail(tail))


async def table_files(s3: Any, objects: Sequence[tuple[str, str, int]]) -> list[TableFile]:
    """``table_file`` of each (bucket, key, size), in order, a bounded number at once."""
    gate = asyncio.Semaphore(_CONCURRENCY)

    async def one(bucket: str, key: str, size: int) -> TableFile:
        async with gate:
            return await table_file(s3, bucket, key, size)

    return list(await asyncio.gather(*(one(b, k, n) for b, k, n in objects)))
