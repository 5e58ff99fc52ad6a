"""The one place that knows how the consumer is built and run (adapt here when the
consumer's constructor or entry point changes).

A node is the real ``ConsumerWorker`` (real ShardConsumer, ShardReader, LeaseTable,
decoders and writer), built by the real ``shard_context`` from real ``Settings``, with the
simulation's fake clients in place of aiobotocore's.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
from pyiceberg.catalog import Catalog

import service.consume.dedupe as dedupe_module
import service.consume.flush as flush_module
import service.consume.shard as shard_module
import service.sink.s3 as s3_upload
from benchmarks import iceberg_io
from service.consume.context import handoff_mode
from service.consume.runner import shard_context
from service.consume.worker import ConsumerWorker
from service.schema import table_schema
from service.settings import Settings, iceberg_catalog_properties, logs_location
from service.sink.iceberg import ensure_table, open_catalog
from service.sink.iceberg_tables import TableRouter
from service.sink.plan import FlushPlan, Layout, plan_flush

STREAM = "sim-stream"
BUCKET = "sim-bucket"
LEASE_TABLE = "sim-leases"
LEASE_KEY = "shard_id"  # the lease table's hash key
LEASE_DURATION = 5.0
# S3 refuses a SigV4 request 15 minutes after it was signed; real leases are 10-60 s, so
# scaled to this lease a signature stays valid for two leases: pauses of 1.2-3 leases
# (world.py) land some late uploads and have others refused.
SIGNATURE_VALIDITY = 2 * LEASE_DURATION
# The consumer's flush.DELETE_GRACE, scaled the same way: longer than a signature's validity.
DELETE_GRACE = SIGNATURE_VALIDITY + LEASE_DURATION / 2


def sim_settings() -> Settings:
    return Settings(
        stream=STREAM,
        bucket=BUCKET,
        lease_table=LEASE_TABLE,
        lease_duration=LEASE_DURATION,
        flush_max_age=6.0,
        idle_wait=0.5,
        file_target_bytes=64 * 1024,
        start_position="TRIM_HORIZON",
    )


# Every batch a node's committers landed: (node, snapshots added, flushes in them). Cleared
# by iceberg_settings; read by world.py for the run's stats (snapshots per table).
COMMITS: list[tuple[str, int, int]] = []


def iceberg_settings(settings: Settings, catalog_db: Path, committer: str = "elected") -> Settings:
    """``settings`` committing to an Iceberg table (issue 17): pyiceberg's SQL catalog on a
    SQLite file, the table's metadata in memory (benchmarks/iceberg_io.py: pyiceberg cannot
    reach the S3 model); created as ``tideway setup`` creates it. The commits run inline,
    as every ``to_thread`` does in the simulation (loop.py)."""
    iceberg_io.OBJECTS.clear()
    COMMITS.clear()
    catalog = {"type": "sql", "py-io-impl": "benchmarks.iceberg_io.MemoryFileIO"}
    settings = settings.model_copy(
        update={
            "table_format": "iceberg",
            "iceberg_catalog": orjson.dumps(catalog).decode(),
            "iceberg_catalog_uri": f"sqlite:///{catalog_db}",
            "iceberg_committer": committer,
        }
    )
    ensure_table(
        open_iceberg(settings),
        settings.iceberg_table,
        logs_location(settings),
        table_schema(service=True),
    )
    return settings


def open_iceberg(settings: Settings) -> Catalog:
    """A catalog client of its own (each node is a process of its own)."""
    return open_catalog(iceberg_catalog_properties(settings))


def build_worker(
    settings: Settings,
    worker_id: str,
    *,
    kinesis: Any,
    s3: Any,
    dynamodb: Any,
    drain: bool,
    other_code: bool = False,
) -> ConsumerWorker:
    ctx = shard_context(settings, kinesis, s3, dynamodb, worker_id)
    if settings.table_format == "iceberg":
        router = TableRouter(
            open_iceberg(settings),
            settings.iceberg_table,
            stream=settings.stream,
            bucket=settings.bucket,
            prefix=settings.prefix,
            schema=table_schema(service=True),
            rng=random.Random(worker_id),
            on_commit=lambda stats: COMMITS.append((worker_id, stats.commits, stats.flushes)),
        )
        # TIDEWAY_ICEBERG_COMMITTER: elected (the default) hands flushes to the committer.
        ctx = dataclasses.replace(ctx, table=router, handoff=handoff_mode(settings, dynamodb))
    if other_code:
        ctx = dataclasses.replace(ctx, planner=other_code_planner)
    return ConsumerWorker(
        ctx,
        lease_duration=settings.lease_duration,
        memory_budget=settings.memory_budget_bytes,
        drain=drain,
    )


def other_code_planner(
    shard_id: str, records: Any, dead: Any, layout: Layout, mapping: Any, *, release: bool = False
) -> FlushPlan:
    """The planner of another code version: it cuts one file per Kinesis record whatever the pinned size,
    so the keys (``first-last``) of a replayed range differ from the other version's."""
    smaller = dataclasses.replace(layout, file_target_bytes=1)
    return plan_flush(shard_id, records, dead, smaller, mapping, release=release)


@contextlib.contextmanager
def scaled_delete_grace() -> Iterator[None]:
    """The consumer re-issues stale deletes for DELETE_GRACE (scaled) instead of 20 minutes."""
    saved = flush_module.DELETE_GRACE
    flush_module.DELETE_GRACE = DELETE_GRACE
    try:
        yield
    finally:
        flush_module.DELETE_GRACE = saved


@contextlib.contextmanager
def small_multipart(threshold: int = 2048, part: int = 1024) -> Iterator[None]:
    """Send the small objects of a simulation through the multipart path."""
    saved = s3_upload.MULTIPART_THRESHOLD, s3_upload.PART_SIZE
    s3_upload.MULTIPART_THRESHOLD, s3_upload.PART_SIZE = threshold, part
    try:
        yield
    finally:
        s3_upload.MULTIPART_THRESHOLD, s3_upload.PART_SIZE = saved


@contextlib.contextmanager
def uploads_dropping(drop: Callable[[str], bool]) -> Iterator[None]:
    """A broken sink for the harness's own tests: objects whose key ``drop`` names are
    silently not uploaded (the flush still checkpoints)."""
    name = "upload_objects"  # what service.consume.flush calls to write a flush
    real = getattr(flush_module, name)

    async def upload(s3: Any, bucket: str, objects: Sequence[Any]) -> None:
        await real(s3, bucket, [o for o in objects if not drop(o.key)])

    setattr(flush_module, name, upload)
    try:
        yield
    finally:
        setattr(flush_module, name, real)


@contextlib.contextmanager
def stale_kept() -> Iterator[None]:
    """A broken consumer for the harness's own tests: a replay never deletes the objects
    its plan no longer has, so a range replayed by other code lands under both key sets."""
    name = "find_stale"  # what service.consume.shard asks for the stale keys
    real = getattr(shard_module, name)

    async def keep(*args: Any) -> frozenset[str]:
        return frozenset()

    setattr(shard_module, name, keep)
    try:
        yield
    finally:
        setattr(shard_module, name, real)


@contextlib.contextmanager
def dedupe_forgetting() -> Iterator[None]:
    """A broken consumer for the harness's own tests: every envelope is admitted, so a
    re-sent copy lands twice."""
    cls = dedupe_module.ShardDedupe
    real = cls.admit

    def admit(self: Any, producer_id: bytes, seq: int, created_us: int) -> bool:
        real(self, producer_id, seq, created_us)
        return True

    cls.admit = admit  # type: ignore[method-assign]
    try:
        yield
    finally:
        cls.admit = real  # type: ignore[method-assign]


@contextlib.contextmanager
def commits_skipped() -> Iterator[None]:
    """A broken committer for the harness's own tests: every flush is reported committed,
    none reaches the Iceberg table."""
    real, real_many = TableRouter.commit, TableRouter.commit_many

    async def skip(self: Any, shard_id: str, last: int, keys: Any, cut_by: Any = None) -> bool:
        return True

    async def skip_many(self: Any, flushes: Any) -> frozenset[str]:
        return frozenset(shard_id for shard_id, _, _ in flushes)  # the elected committer's

    TableRouter.commit = skip  # type: ignore[method-assign]
    TableRouter.commit_many = skip_many  # type: ignore[method-assign]
    try:
        yield
    finally:
        TableRouter.commit = real  # type: ignore[method-assign]
        TableRouter.commit_many = real_many  # type: ignore[method-assign]


async def run_worker(worker: ConsumerWorker, stop: asyncio.Event) -> None:
    """Run until ``stop`` is set (or, draining, until every shard is at its tip)."""
    await worker.run(stop)


# What the lease items look like: the invariants read the model's table through these.
CHECKPOINT = "checkpoint"
OWNER = "owner"
EPOCH = "epoch"
FENCED_FIELDS = ("checkpoint", "intent_first", "intent_last")
SHARD_END = "SHARD_END"
WORKER_PREFIX = "worker#"  # heartbeat items share the table
