"""Uploads flush objects to S3 (I/O). Keys and bytes are deterministic, so a retried or
zombie upload rewrites identical objects."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from service.sink.plan import FlushObject

log = logging.getLogger(__name__)

MULTIPART_THRESHOLD = 64 * 1024 * 1024
PART_SIZE = 16 * 1024 * 1024
_CONCURRENCY = 8  # objects in flight per flush
_PART_CONCURRENCY = 4  # parts in flight per object: at most 64 MiB of copies at once


def _content_type(key: str) -> str:
    return "application/vnd.apache.parquet" if key.endswith(".parquet") else "application/gzip"


async def upload_objects(s3: Any, bucket: str, objects: Sequence[FlushObject]) -> None:
    """Write every object; raises the first error after the others finish or fail."""
    gate = asyncio.Semaphore(_CONCURRENCY)

    async def one(obj: FlushObject) -> None:
        async with gate:
            if len(obj.body) >= MULTIPART_THRESHOLD:
                await _multipart(s3, bucket, obj)
            else:
                await s3.put_object(
                    Bucket=bucket, Key=obj.key, Body=obj.body, ContentType=_content_type(obj.key)
                )

    async with asyncio.TaskGroup() as tg:
        for obj in objects:
            tg.create_task(one(obj))


async def _multipart(s3: Any, bucket: str, obj: FlushObject) -> None:
    """Upload ``obj`` in PART_SIZE parts, at most _PART_CONCURRENCY at a time; on any failure
    (or cancellation) abort the upload so no orphaned parts are billed, then re-raise."""
    created = await s3.create_multipart_upload(
        Bucket=bucket, Key=obj.key, ContentType=_content_type(obj.key)
    )
    upload_id = created["UploadId"]
    view = memoryview(obj.body)
    starts = range(0, len(view), PART_SIZE)
    etags: dict[int, str] = {}
    gate = asyncio.Semaphore(_PART_CONCURRENCY)

    async def part(number: int, start: int) -> None:
        async with gate:  # bounds the bytes in flight, not only the number of tasks
            resp = await s3.upload_part(
                Bucket=bucket,
                Key=obj.key,
                UploadId=upload_id,
                PartNumber=number,
                Body=bytes(view[start : start + PART_SIZE]),
            )
            etags[number] = resp["ETag"]

    try:
        async with asyncio.TaskGroup() as tg:
            for number, start in enumerate(starts, start=1):
                tg.create_task(part(number, start))
        parts = [{"ETag": etags[n], "PartNumber": n} for n in sorted(etags)]
        await s3.complete_multipart_upload(
            Bucket=bucket, Key=obj.key, UploadId=upload_id, MultipartUpload={"Parts": parts}
        )
    except BaseException:
        # The upload's own error is the one to report; a failed abort only leaves parts for
        # the bucket's abort-incomplete-multipart lifecycle rule.
        try:
            await asyncio.shield(
                s3.abort_multipart_upload(Bucket=bucket, Key=obj.key, UploadId=upload_id)
            )
        except Exception as abort_error:
            log.warning(
                "multipart abort failed", extra={"key": obj.key, "error": repr(abort_error)}
            )
        raise


async def list_keys(s3: Any, bucket: str, prefix: str) -> list[str]:
    """Every key under ``prefix``."""
    keys: list[str] = []
    kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
    while True:
        page = await s3.list_objects_v2(**kwargs)
        keys.extend(o["Key"] for o in page.get("Contents", []))
        if not page.get("IsTruncated"):
            return keys
        kwargs["ContinuationToken"] = page["NextContinuationToken"]


async def delete_keys(s3: Any, bucket: str, keys: Sequence[str]) -> None:
    """Delete ``keys`` (1,000 per request); raises if any could not be deleted."""
    ordered = sorted(keys)
    for start in range(0, len(ordered), 1000):
        batch = [{"Key": k} for k in ordered[start : start + 1000]]
        resp = await s3.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
        if resp.get("Errors"):
            first = resp["Errors"][0]
            raise RuntimeError(f"S3 refused to delete {first.get('Key')}: {first.get('Code')}")
