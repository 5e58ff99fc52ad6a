"""Runs ``tideway serve`` until stopped, then drains (I/O)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import web
from botocore.exceptions import ClientError

from service.aws import aws_clients
from service.ingest.app import IngestState, build_app
from service.ingest.body import BodyLimits
from service.ingest.producer import Producer
from service.settings import Settings
from service.telemetry.metrics import IngestMetrics

log = logging.getLogger(__name__)
DEFAULT_PORT = 8080
_PROBE_INTERVAL = 10.0


async def _probe_kinesis(state: IngestState, kinesis: object, stream: str) -> None:
    """Keep /readyz honest: false while the stream cannot be described."""
    while True:
        try:
            await kinesis.describe_stream_summary(StreamName=stream)  # type: ignore[attr-defined]
            state.kinesis_ok = True
        except (ClientError, OSError) as exc:
            state.kinesis_ok = False
            log.warning("kinesis probe failed", extra={"error": repr(exc)})
        await asyncio.sleep(_PROBE_INTERVAL)


async def serve(
    settings: Settings, stop: asyncio.Event, started: asyncio.Future[int] | None = None
) -> None:
    """Serve until ``stop`` is set; then refuse new work, finish in-flight requests, flush."""
    limits = BodyLimits(
        settings.max_body_bytes, settings.max_decompressed_bytes, settings.max_line_bytes
    )
    metrics = IngestMetrics()
    port = DEFAULT_PORT if settings.port is None else settings.port
    async with (
        aws_clients("kinesis") as aws,
        Producer(
            aws.kinesis,
            settings.stream,
            metrics=metrics,
            record_target_bytes=settings.record_target_bytes,
            linger=settings.linger_ms / 1000,
            deadline=settings.put_deadline,
            max_inflight_bytes=settings.max_inflight_bytes,
        ) as producer,
    ):
        state = IngestState(settings, producer, limits)
        runner = web.AppRunner(
            build_app(state),
            access_log=None,
            shutdown_timeout=settings.shutdown_grace,
            # We decompress ourselves, within limits (a bomb never allocates past them).
            auto_decompress=False,
        )
        await runner.setup()
        site = web.TCPSite(runner, settings.host, port, reuse_address=True)
        await site.start()
        bound = runner.addresses[0][1] if runner.addresses else port
        log.info("serving", extra={"port": bound, "stream": settings.stream})
        if started is not None:
            started.set_result(bound)
        async with asyncio.TaskGroup() as tg:
            probe = tg.create_task(_probe_kinesis(state, aws.kinesis, settings.stream))
            await stop.wait()
            log.info("draining")
            state.draining = True
            await runner.cleanup()  # stops listening, waits for in-flight requests
            probe.cancel()
        with contextlib.suppress(Exception):
            log.info("drained", extra={"inflight_bytes": producer.inflight})
