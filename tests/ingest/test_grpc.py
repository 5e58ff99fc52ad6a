"""OTLP over gRPC on ``tideway serve``: the OpenTelemetry Python SDK's gRPC exporter ships
logs that land once in S3; the same keys, limits and partial-success answers as /v1/logs."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import socket

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource

from service.ingest.grpc_logs import EXPORT_PATH, HEALTH_PATH
from service.ingest.server import serve
from service.settings import ApiKey, Settings
from tests.conftest import Aws, drain, lineage_counts, read_table
from tests.ingest_support import serving, stream_lines

KEY = "grpc-test-key"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _with_grpc(settings: Settings, **extra: object) -> Settings:
    digest = hashlib.sha256(KEY.encode()).hexdigest()
    return settings.model_copy(
        update={"grpc_port": _free_port(), "api_keys": (ApiKey(sha256=digest),), **extra}
    )


def _ship_with_the_sdk(port: int, count: int) -> None:
    """The OpenTelemetry SDK as an application runs it: a logging handler, the batch
    processor and the OTLP gRPC exporter, with the key in the ``authorization`` metadata."""
    exporter = OTLPLogExporter(
        endpoint=f"127.0.0.1:{port}",
        insecure=True,
        headers=(("authorization", f"Bearer {KEY}"),),
        compression=grpc.Compression.Gzip,
    )
    provider = LoggerProvider(
        resource=Resource.create({"service.name": "checkout", "host.name": "pod-3"})
    )
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter, max_export_batch_size=64))
    logger = logging.getLogger("tests.grpc.sender")
    logger.propagate = False
    handler = LoggingHandler(logger_provider=provider)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        for i in range(count):
            logger.warning("order %d placed", i, extra={"order_id": i})
        assert provider.force_flush(30_000)
    finally:
        logger.removeHandler(handler)
        provider.shutdown()


async def test_sdk_grpc_exporter_logs_land_once_with_their_columns(
    aws: Aws, ready: Settings
) -> None:
    settings = _with_grpc(ready)
    async with serving(settings, create=False):
        await asyncio.to_thread(_ship_with_the_sdk, settings.grpc_port, 300)
    await drain(settings)
    table = read_table(aws, settings)
    rows = table.to_pylist()
    assert sorted(r["message"] for r in rows) == sorted(f"order {i} placed" for i in range(300))
    assert {(r["service"], r["host"], r["severity_text"]) for r in rows} == {
        ("checkout", "pod-3", "WARN")
    }
    assert set(lineage_counts(table).values()) == {1}


def _request(*bodies: str) -> bytes:
    request = ExportLogsServiceRequest()
    records = request.resource_logs.add().scope_logs.add().log_records
    for body in bodies:
        records.add().body.string_value = body
    return request.SerializeToString()


async def test_grpc_refuses_unauthenticated_calls_and_reports_partial_success(
    aws: Aws, ready: Settings
) -> None:
    settings = _with_grpc(ready, max_line_bytes=1024)
    async with (
        serving(settings, create=False),
        grpc.aio.insecure_channel(f"127.0.0.1:{settings.grpc_port}") as channel,
    ):
        export = channel.unary_unary(EXPORT_PATH)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await export(_request("no key"))
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await export(_request("bad key"), metadata=(("authorization", "Bearer nope"),))
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED

        answer = ExportLogsServiceResponse.FromString(
            await export(_request("fits", "x" * 4000), metadata=(("x-api-key", KEY),))
        )
        assert answer.partial_success.rejected_log_records == 1
        assert "1024" in answer.partial_success.error_message
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await export(b"\xff\xff not protobuf", metadata=(("x-api-key", KEY),))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT

        assert await channel.unary_unary(HEALTH_PATH)(b"") == b"\x08\x01"  # SERVING
    assert [line["message"] for line in stream_lines(aws, settings.stream)] == ["fits"]


async def test_grpc_message_over_the_decompressed_limit_is_refused(ready: Settings) -> None:
    settings = _with_grpc(ready, max_decompressed_bytes=64 * 1024)
    async with (
        serving(settings, create=False),
        grpc.aio.insecure_channel(f"127.0.0.1:{settings.grpc_port}") as channel,
    ):
        big = _request(*["y" * 1000] * 100)  # ~100 KB, 1 KB gzipped
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await channel.unary_unary(EXPORT_PATH)(
                big, metadata=(("x-api-key", KEY),), compression=grpc.Compression.Gzip
            )
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_grpc_draws_on_the_byte_budget_like_v1_logs(ready: Settings) -> None:
    settings = _with_grpc(ready, max_inflight_bytes=4096)
    async with (
        serving(settings, create=False),
        grpc.aio.insecure_channel(f"127.0.0.1:{settings.grpc_port}") as channel,
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await channel.unary_unary(EXPORT_PATH)(
                _request(*["z" * 100] * 100), metadata=(("x-api-key", KEY),)
            )
        # Larger than the whole budget: it could never fit (413 on /v1/logs).
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "4096 byte limit" in (refused.value.details() or "")


async def test_export_in_flight_at_sigterm_is_answered_once_durable_and_later_calls_refused(
    aws: Aws, ready: Settings
) -> None:
    settings = _with_grpc(ready, linger_ms=300.0)  # the call waits in the packer a while
    stop = asyncio.Event()
    bound: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(settings, stop, bound))
    await asyncio.wait_for(bound, 30)
    metadata = (("x-api-key", KEY),)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{settings.grpc_port}") as channel:
        export = channel.unary_unary(EXPORT_PATH)
        call = asyncio.ensure_future(export(_request("at sigterm"), metadata=metadata))
        await asyncio.sleep(0.1)
        stop.set()  # what SIGTERM does
        answer = ExportLogsServiceResponse.FromString(await call)
        assert answer.partial_success.rejected_log_records == 0
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await export(_request("after sigterm"), metadata=metadata, timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    await asyncio.wait_for(task, 60)
    assert [line["message"] for line in stream_lines(aws, settings.stream)] == ["at sigterm"]
