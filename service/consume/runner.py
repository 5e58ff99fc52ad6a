"""Runs ``tideway consume``: the worker plus its HTTP status port (I/O)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import socket
import uuid
from datetime import datetime
from typing import Any

import pyarrow as pa
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.aws import aws_clients
from service.consume.buffer import FlushPolicy
from service.consume.leases import LeaseTable
from service.consume.reader import Position
from service.consume.shard import ShardContext
from service.consume.worker import ConsumerWorker
from service.decode import DecoderConfig
from service.decode.avro import load_config, load_schema
from service.errors import DecodeError, SettingsError
from service.schema import extra_fields
from service.settings import Settings, logs_location, partition_keys
from service.sink.glue import PartitionCatalog
from service.sink.partition import PartitionTemplate
from service.sink.plan import ARROW_TO_PARQUET, Layout
from service.sink.rules import FieldMapping
from service.telemetry.metrics import ConsumerMetrics
from service.telemetry.names import ROLE_CONSUME
from service.telemetry.session import service_telemetry

log = logging.getLogger(__name__)
DEFAULT_PORT = 9090
WORKER: web.AppKey[ConsumerWorker] = web.AppKey("worker", ConsumerWorker)


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def decoder_config(settings: Settings) -> DecoderConfig:
    if settings.avro_schema is None and settings.avro_schema_dir is None:
        return DecoderConfig(max_decompressed_bytes=settings.max_decompressed_bytes)
    try:
        return load_config(
            settings.avro_schema,
            settings.avro_schema_dir,
            max_decompressed_bytes=settings.max_decompressed_bytes,
        )
    except DecodeError as exc:
        name = "TIDEWAY_AVRO_SCHEMA" if settings.avro_schema else "TIDEWAY_AVRO_SCHEMA_DIR"
        raise SettingsError(f"setting {name} is invalid: {exc.reason}") from None


def extra_columns(settings: Settings) -> tuple[pa.Field[Any], ...]:
    """The typed columns of TIDEWAY_EXTRA_COLUMNS (none when unset); raise SettingsError
    (one line) for a missing or bad .avsc, a non-record schema, an unsupported type or a
    name taken by a canonical column or partition key."""
    path = settings.extra_columns
    if path is None:
        return ()
    name = "TIDEWAY_EXTRA_COLUMNS"
    try:
        return extra_fields(load_schema(path, name), partition_keys(settings.partition_template))
    except DecodeError as exc:
        raise SettingsError(f"setting {name} is invalid: {exc.reason}") from None
    except ValueError as exc:
        raise SettingsError(f"setting {name} is invalid: {path}: {exc}") from None


def shard_context(
    settings: Settings, kinesis: object, s3: object, dynamodb: object, worker_id: str
) -> ShardContext:
    start = Position(
        settings.start_position,
        timestamp=settings.start_timestamp if settings.start_position == "AT_TIMESTAMP" else None,
    )
    return ShardContext(
        kinesis=kinesis,
        s3=s3,
        bucket=settings.bucket,
        stream=settings.stream,
        leases=LeaseTable(dynamodb, settings.lease_table),
        layout=Layout(
            settings.stream,
            settings.prefix,
            PartitionTemplate(settings.partition_template),
            settings.max_partitions_per_flush,
            settings.file_target_bytes,
        ),
        mapping=FieldMapping(
            max_past_us=int(settings.event_time_max_past * 1e6),
            max_future_us=int(settings.event_time_max_future * 1e6),
            extra_columns=extra_columns(settings),
        ),
        decoders=decoder_config(settings),
        policy=FlushPolicy(settings.file_target_bytes * ARROW_TO_PARQUET, settings.flush_max_age),
        worker_id=worker_id,
        start=start,
        metrics=ConsumerMetrics(),
        idle_wait=settings.idle_wait,
    )


def status_view(worker: ConsumerWorker) -> dict[str, Any]:
    """The /status document: this worker, the fleet as of its last round, every shard."""
    st = worker.state
    running = worker.running
    owners: dict[str, int] = {}
    shards: dict[str, dict[str, Any]] = {}
    for sid in sorted(set(st.leases) | set(st.shards)):
        lease = st.leases.get(sid)
        info = st.shards.get(sid)
        view: dict[str, Any] = {
            "owner": lease.owner if lease else None,
            "epoch": lease.epoch if lease else None,
            "checkpoint": lease.checkpoint if lease else None,
            "intent": [lease.intent_first, lease.intent_last]
            if lease and lease.intent_last
            else None,
            "parents": list(lease.parents if lease else info.parents if info else ()),
            "closed": info.closed if info else None,
            "finished": lease.finished if lease else False,
            "assigned_to": st.assignment.get(sid),
        }
        if lease and lease.owner:
            owners[lease.owner] = owners.get(lease.owner, 0) + 1
        consumer = running.get(sid)
        if consumer is not None:
            reader = consumer.reader
            view["here"] = {
                "epoch": consumer.epoch,
                "millis_behind": consumer.millis_behind,
                "last_read": reader.last_sequence if reader else None,
                "checkpoint": consumer.checkpoint,
                "buffered_records": len(consumer.buffer.records) + len(consumer.buffer.dead),
                "buffered_bytes": consumer.buffer.size,
                "read_errors": dict(reader.errors) if reader else {},
            }
        shards[sid] = view
    return {
        "worker_id": st.worker_id,
        "leaving": st.leaving,
        "ready": worker.ready.is_set(),
        "live_workers": st.live_workers,
        "leaving_workers": st.leaving_workers,
        "lag_ms": worker.lag_ms,
        "owned": sorted(running),
        "leases_by_owner": dict(sorted(owners.items())),
        "rounds": st.rounds,
        "failed_rounds": st.failed_rounds,
        "last_error": st.last_error,
        "shards": shards,
        "time": datetime.now().astimezone().isoformat(),
    }


async def _status(request: web.Request) -> web.StreamResponse:
    return web.json_response(status_view(request.app[WORKER]))


async def _health(request: web.Request) -> web.StreamResponse:
    return web.json_response({"status": "ok"})


async def _ready(request: web.Request) -> web.StreamResponse:
    worker = request.app[WORKER]
    # Not ready before the first good round, while leaving (SIGTERM), or once the last
    # round failed (DynamoDB or Kinesis unreachable).
    ok = worker.ready.is_set() and not worker.state.leaving and not worker.state.last_round_failed
    return web.json_response({"ready": ok}, status=200 if ok else 503)


async def _metrics(request: web.Request) -> web.StreamResponse:
    registry = request.app[WORKER].ctx.metrics.registry
    return web.Response(
        body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


def status_app(worker: ConsumerWorker) -> web.Application:
    app = web.Application()
    app[WORKER] = worker
    app.router.add_get("/healthz", _health)
    app.router.add_get("/readyz", _ready)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/status", _status)
    return app


async def consume(
    settings: Settings, stop: asyncio.Event, *, drain: bool = False
) -> ConsumerWorker:
    """Consume until ``stop`` (or, with ``drain``, until every shard is at its tip)."""
    worker_id = settings.worker_id or default_worker_id()
    names = ("kinesis", "s3", "dynamodb") + (("glue",) if settings.glue_database else ())
    async with aws_clients(*names) as aws:
        ctx = shard_context(settings, aws.kinesis, aws.s3, aws.dynamodb, worker_id)
        if settings.glue_database and settings.glue_table:
            ctx = dataclasses.replace(
                ctx,
                catalog=PartitionCatalog(
                    aws.glue, settings.glue_database, settings.glue_table, logs_location(settings)
                ),
            )
        worker = ConsumerWorker(
            ctx,
            lease_duration=settings.lease_duration,
            memory_budget=settings.memory_budget_bytes,
            drain=drain,
        )
        runner = web.AppRunner(status_app(worker), access_log=None)
        await runner.setup()
        port = DEFAULT_PORT if settings.port is None else settings.port
        if not drain or settings.port is not None:
            await web.TCPSite(runner, settings.host, port, reuse_address=True).start()
        log.info(
            "consuming", extra={"worker_id": worker_id, "stream": settings.stream, "drain": drain}
        )
        try:
            async with service_telemetry(settings, ROLE_CONSUME, ctx.metrics):
                await worker.run(stop)
        finally:
            await runner.cleanup()
        return worker
