"""Runs ``tideway serve`` until stopped, then drains (I/O).

Shutdown (SIGTERM from ECS): ``/readyz`` turns false and new requests are refused with 503
at once; requests in flight finish; the producer flushes what it holds and gives up on
Kinesis no later than ``shutdown_grace`` seconds after the signal, so the process exits
well inside the ECS stop timeout (30 s by default).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from concurrent.futures import ThreadPoolExecutor

import aiohttp
from aiohttp import web
from botocore.exceptions import BotoCoreError, ClientError

from service.aws import aws_clients
from service.errors import ListenError
from service.ingest import grpc_logs
from service.ingest.app import build_app
from service.ingest.body import BodyLimits
from service.ingest.budget import ByteBudget
from service.ingest.handling import IngestState
from service.ingest.kinesis_put import KinesisPutRecords
from service.ingest.producer import Producer
from service.ingest.protocol import GuardedAppRunner
from service.ingest.redaction import ingest_detectors
from service.settings import Settings, available_cpus
from service.telemetry.metrics import IngestMetrics
from service.telemetry.names import ROLE_SERVE
from service.telemetry.session import service_telemetry
from service.telemetry.workers import workers_registry

log = logging.getLogger(__name__)
DEFAULT_PORT = 8080
_PROBE_INTERVAL = 10.0
_PROBE_TIMEOUT = 5.0
# After the producer's last chance to reach Kinesis, in-flight requests still need a moment
# to write their answers before aiohttp cancels them.
_ANSWER_GRACE = 2.0


async def _probe_kinesis(state: IngestState, kinesis: object, stream: str) -> None:
    """Keep /readyz honest: false while the stream cannot be described."""
    while True:
        try:
            async with asyncio.timeout(_PROBE_TIMEOUT):
                await kinesis.describe_stream_summary(StreamName=stream)  # type: ignore[attr-defined]
            state.kinesis_ok = True
        except (ClientError, BotoCoreError, aiohttp.ClientError, OSError, TimeoutError) as exc:
            state.kinesis_ok = False
            log.warning("kinesis probe failed", extra={"error": repr(exc)})
        await asyncio.sleep(_PROBE_INTERVAL)


def body_limits(settings: Settings) -> BodyLimits:
    return BodyLimits(
        max_body=settings.max_body_bytes,
        max_decompressed=settings.max_decompressed_bytes,
        max_line=settings.max_line_bytes,
        max_ratio=settings.max_decompression_ratio,
        read_timeout=settings.body_read_timeout,
    )


async def serve(
    settings: Settings,
    stop: asyncio.Event,
    started: asyncio.Future[int] | None = None,
    *,
    threads: int | None = None,
    metrics_dir: str | None = None,
) -> None:
    """Serve until ``stop`` is set; then refuse new work, finish in-flight requests, flush.
    One of several workers (service/ingest/workers.py) passes its share of the cores
    (``threads``) and the directory where the workers' metrics meet (``metrics_dir``)."""
    ingest_detectors(settings.ingest_redact)  # a bad TIDEWAY_INGEST_REDACT stops the start
    # Parsing and decompression run here, off the event loop; one thread per core. A thread
    # in Python code hands the GIL over only every switch interval (5 ms by default), and
    # the loop needs it a few dozen times to answer one request: at 1 ms /healthz answered
    # in 30-60 ms instead of up to 200 ms while a 500,000-element array was parsed.
    sys.setswitchinterval(0.001)
    pool = ThreadPoolExecutor(max_workers=threads or available_cpus(), thread_name_prefix="parse")
    with pool:
        await _serve(settings, stop, started, pool, metrics_dir)


async def _serve(
    settings: Settings,
    stop: asyncio.Event,
    started: asyncio.Future[int] | None,
    pool: ThreadPoolExecutor,
    metrics_dir: str | None,
) -> None:
    metrics = IngestMetrics()
    budget = ByteBudget(settings.max_inflight_bytes, metrics.inflight_bytes)
    port = DEFAULT_PORT if settings.port is None else settings.port
    loop = asyncio.get_running_loop()
    async with (
        service_telemetry(settings, ROLE_SERVE, metrics),
        aws_clients("kinesis") as aws,
        KinesisPutRecords(aws.kinesis, aws.session) as put_records,
        Producer(
            put_records,
            settings.stream,
            metrics=metrics,
            budget=budget,
            record_target_bytes=settings.record_target_bytes,
            linger=settings.linger_ms / 1000,
            deadline=settings.put_deadline,
        ) as producer,
    ):
        if settings.api_keys is None:
            log.warning(
                "TIDEWAY_API_KEYS is not set: every route is open to anyone who can reach "
                "this port; set it to a JSON list of SHA-256 digests of the accepted keys"
            )
        state = IngestState(
            settings,
            producer,
            body_limits(settings),
            max_lines=settings.max_lines_per_request,
            pool=pool,
            exposition=workers_registry(metrics_dir) if metrics_dir else None,
            redact=ingest_detectors(settings.ingest_redact),
        )
        app = build_app(state)
        runner = GuardedAppRunner(
            app,
            header_timeout=settings.header_read_timeout,
            access_log=None,
            shutdown_timeout=settings.shutdown_grace + _ANSWER_GRACE,
            # We decompress ourselves, within limits (a bomb never allocates past them).
            auto_decompress=False,
        )
        await runner.setup()
        # reuse_port: the other serve workers listen on the same port (the kernel spreads
        # connections over them); alone, it changes nothing.
        site = web.TCPSite(runner, settings.host, port, reuse_address=True, reuse_port=True)
        try:
            await site.start()
        except OSError as exc:
            raise ListenError(
                f"cannot listen on {settings.host}:{port} (TIDEWAY_PORT): {exc.strerror}"
            ) from exc
        bound = runner.addresses[0][1] if runner.addresses else port
        grpc_port = settings.grpc_port
        grpc_server = await grpc_logs.start(state, settings.host, grpc_port) if grpc_port else None
        log.info("serving", extra={"port": bound, "stream": settings.stream})
        if started is not None:
            started.set_result(bound)
        async with asyncio.TaskGroup() as tg:
            probe = tg.create_task(_probe_kinesis(state, aws.kinesis, settings.stream))
            await stop.wait()
            log.info("draining", extra={"inflight_bytes": budget.used})
            state.draining = True
            producer.stop_retrying_at(loop.time() + settings.shutdown_grace)
            # Both stop listening and wait for their in-flight requests.
            grace = settings.shutdown_grace + _ANSWER_GRACE
            await asyncio.gather(
                runner.cleanup(), grpc_server.stop(grace) if grpc_server else asyncio.sleep(0)
            )
            probe.cancel()
    log.info("drained", extra={"inflight_bytes": budget.used})
