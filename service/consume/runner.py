"""Runs ``tideway consume``: the worker plus its HTTP status port (I/O)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import socket
import uuid
from typing import Any

from aiohttp import web
from botocore.exceptions import ClientError

from service.aws import aws_clients, error_code
from service.consume.context import (
    decoder_config,
    extra_columns,
    handoff_mode,
    shard_context,
    table_committer,
)
from service.consume.reload import LivePipelines
from service.consume.status import status_app
from service.consume.worker import ConsumerWorker
from service.settings import Settings, logs_location
from service.sink.glue import PartitionCatalog, evolve_table
from service.sink.rules import FieldMapping
from service.telemetry.iceberg import IcebergMetrics
from service.telemetry.names import ROLE_CONSUME
from service.telemetry.session import service_telemetry

# decoder_config, extra_columns and shard_context live in context.py; re-exported for callers
# that still import them from here.
__all__ = ["consume", "decoder_config", "default_worker_id", "extra_columns", "shard_context"]
log = logging.getLogger(__name__)
DEFAULT_PORT = 9090


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


async def evolved_mapping(
    glue: Any, database: str, table: str, mapping: FieldMapping
) -> FieldMapping:
    """``mapping`` with the extra columns the Glue table agrees with (missing ones appended
    to the table first; on a type conflict the table's type wins, so files always match
    what Athena reads). A table that cannot be read leaves the mapping as configured."""
    if not mapping.extra_columns:
        return mapping
    try:
        evolution = await evolve_table(glue, database, table, mapping.extra_columns)
    except ClientError as exc:
        log.warning(
            "glue table not evolved; writing the configured extra columns",
            extra={"table": f"{database}.{table}", "error": error_code(exc)},
        )
        return mapping
    return dataclasses.replace(mapping, extra_columns=evolution.written)


async def consume(
    settings: Settings, stop: asyncio.Event, *, drain: bool = False
) -> ConsumerWorker:
    """Consume until ``stop`` (or, with ``drain``, until every shard is at its tip)."""
    worker_id = settings.worker_id or default_worker_id()
    names = ("kinesis", "s3", "dynamodb") + (("glue",) if settings.glue_database else ())
    async with aws_clients(*names) as aws:
        ctx = shard_context(settings, aws.kinesis, aws.s3, aws.dynamodb, worker_id)
        if settings.pipelines_reload:
            live = LivePipelines(
                aws.dynamodb, settings.lease_table, settings.pipelines_reload, ctx.layout.pipelines
            )
            await live.start()
            ctx = dataclasses.replace(ctx, live=live)
        if settings.glue_database and settings.glue_table:
            ctx = dataclasses.replace(
                ctx,
                catalog=PartitionCatalog(
                    aws.glue, settings.glue_database, settings.glue_table, logs_location(settings)
                ),
                mapping=await evolved_mapping(
                    aws.glue, settings.glue_database, settings.glue_table, ctx.mapping
                ),
            )
        metrics: IcebergMetrics | None = None
        if settings.table_format == "iceberg":
            seed = hash(worker_id) & 0xFFFFFFFF  # retry jitter only; never decides data
            metrics = IcebergMetrics(ctx.metrics.registry)
            table = await table_committer(settings, aws.s3, seed, metrics)
            handoff = handoff_mode(settings, aws.dynamodb, metrics)
            ctx = dataclasses.replace(ctx, table=table, handoff=handoff)
        worker = ConsumerWorker(
            ctx,
            lease_duration=settings.lease_duration,
            memory_budget=settings.memory_budget_bytes,
            drain=drain,
            on_committer_held=None if metrics is None else metrics.observe_held,
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
