"""Shared fixtures: one AWS backend per session (reset per test), settings, in-process
services on loopback, and read-back of what landed in S3."""

from __future__ import annotations

import asyncio
import gzip
import itertools
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import boto3
import orjson
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from pyarrow import fs

from service.consume.runner import consume
from service.ingest.server import serve
from service.resources import setup
from service.settings import Settings
from tests.backend import backend, reset_backend

_names = itertools.count()


@dataclass
class Aws:
    kind: str
    endpoint: str

    def client(self, name: str) -> Any:
        return boto3.client(name, endpoint_url=self.endpoint, region_name="us-east-1")

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for a subprocess that should reach this backend."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("TIDEWAY_")}
        env.update(extra)
        return env


@pytest.fixture(scope="session")
def aws_backend() -> Iterator[Aws]:
    with backend() as (kind, endpoint):
        yield Aws(kind, endpoint)


@pytest.fixture
def aws(aws_backend: Aws) -> Aws:
    reset_backend(aws_backend.kind, aws_backend.endpoint)
    os.environ["AWS_ENDPOINT_URL"] = aws_backend.endpoint
    return aws_backend


@pytest.fixture
def settings(aws: Aws) -> Settings:
    n = next(_names)
    return Settings.load(
        None,
        stream=f"logs-{n}",
        bucket=f"tideway-test-{n}",
        shard_count=2,
        flush_max_age=1.0,
        idle_wait=0.1,
        lease_duration=3.0,
        host="127.0.0.1",
        port=0,
        grpc_port=0,  # off: tests that use gRPC pick a free port (4317 may be taken)
    )


@pytest.fixture
async def ready(settings: Settings) -> Settings:
    """Settings whose stream, bucket and lease table exist."""
    await setup(settings)
    return settings


@dataclass
class Server:
    url: str
    stop: asyncio.Event


@pytest.fixture
async def server(ready: Settings) -> AsyncIterator[Server]:
    """``tideway serve`` in this process on a free loopback port."""
    stop = asyncio.Event()
    bound: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(ready, stop, bound))
    port = await asyncio.wait_for(bound, 30)
    try:
        yield Server(f"http://127.0.0.1:{port}", stop)
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


async def drain(settings: Settings, **overrides: Any) -> None:
    """``tideway consume --drain`` in this process."""
    run = settings.model_copy(update={"port": None, **overrides})
    await asyncio.wait_for(consume(run, asyncio.Event(), drain=True), 240)


def s3fs(aws: Aws) -> fs.S3FileSystem:
    url = urlparse(aws.endpoint)
    return fs.S3FileSystem(
        endpoint_override=url.netloc,
        scheme=url.scheme,
        region="us-east-1",
        access_key="testing",
        secret_key="testing",
    )


def object_keys(aws: Aws, bucket: str, prefix: str = "") -> list[str]:
    s3 = aws.client("s3")
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(o["Key"] for o in page.get("Contents", []))
    return sorted(keys)


def read_table(aws: Aws, settings: Settings) -> pa.Table:
    """Everything under logs/, as Athena would see it (hive partitions as columns)."""
    base = f"{settings.bucket}/{settings.prefix}logs"
    if not object_keys(aws, settings.bucket, f"{settings.prefix}logs/"):
        return pa.table({})
    return ds.dataset(base, filesystem=s3fs(aws), format="parquet", partitioning="hive").to_table()


def read_dead_letters(aws: Aws, settings: Settings) -> list[dict[str, Any]]:
    s3 = aws.client("s3")
    out: list[dict[str, Any]] = []
    for key in object_keys(aws, settings.bucket, f"{settings.prefix}dead-letter/"):
        body = s3.get_object(Bucket=settings.bucket, Key=key)["Body"].read()
        out.extend(orjson.loads(line) for line in gzip.decompress(body).splitlines() if line)
    return out


def lineage_counts(table: pa.Table) -> dict[tuple[str, str, int], int]:
    counts: dict[tuple[str, str, int], int] = {}
    cols = [
        table.column(c).to_pylist()
        for c in ("kinesis_shard_id", "kinesis_sequence_number", "kinesis_sub_sequence")
    ]
    for key in zip(*cols, strict=True):
        counts[key] = counts.get(key, 0) + 1
    return counts
