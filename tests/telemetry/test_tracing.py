"""Traces: a request's span travels in the envelope header and the consumer's flush span links
back to it, captured in memory and over a real OTLP/HTTP receiver on loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import aiohttp
import orjson
import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from service.errors import SettingsError
from service.local import free_port
from service.settings import Settings
from service.telemetry import tracing
from tests.conftest import Server, drain

INCOMING_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
INCOMING = f"00-{INCOMING_TRACE}-00f067aa0ba902b7-01"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(id_generator=tracing.XRayIdGenerator())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    yield exporter
    tracing.uninstall()
    provider.shutdown()


@pytest.fixture(autouse=True)
def tracing_off_after() -> Iterator[None]:
    yield
    tracing.uninstall()


async def post(url: str, count: int, traceparent: str | None = None) -> None:
    body = b"\n".join(orjson.dumps({"message": f"m{i}", "service": "api"}) for i in range(count))
    headers = {"Content-Type": "application/x-ndjson"}
    if traceparent:
        headers["traceparent"] = traceparent
    async with (
        aiohttp.ClientSession() as session,
        session.post(url + "/ingest", data=body, headers=headers) as resp,
    ):
        assert resp.status == 200, await resp.text()


def named(spans: list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


async def test_flush_span_links_back_to_the_request_spans_whose_lines_it_wrote(
    spans: InMemorySpanExporter, ready: Settings, server: Server
) -> None:
    await post(server.url, 50, INCOMING)
    await post(server.url, 50)
    await drain(ready)
    finished = list(spans.get_finished_spans())

    requests = named(finished, "POST /ingest")
    assert len(requests) == 2
    continued = next(s for s in requests if s.parent is not None)
    fresh = next(s for s in requests if s.parent is None)
    assert continued.kind is SpanKind.SERVER
    assert f"{continued.context.trace_id:032x}" == INCOMING_TRACE
    assert continued.parent is not None and continued.parent.span_id == 0x00F067AA0BA902B7
    assert continued.attributes is not None
    assert continued.attributes["http.response.status_code"] == 200
    # X-Ray ids: the first 32 bits of a new trace id are its start time in epoch seconds.
    assert abs((fresh.context.trace_id >> 96) - time.time()) < 600

    linked = {
        (link.context.trace_id, link.context.span_id)
        for flush in named(finished, "tideway.flush")
        for link in flush.links
    }
    assert (continued.context.trace_id, continued.context.span_id) in linked
    assert (fresh.context.trace_id, fresh.context.span_id) in linked
    flush = next(s for s in named(finished, "tideway.flush") if s.links)
    assert len(flush.links) <= tracing.MAX_FLUSH_LINKS
    children = {s.name for s in finished if s.parent and s.parent.span_id == flush.context.span_id}
    assert {"tideway.encode", "S3.PutObject"} <= children
    assert named(finished, "Kinesis.PutRecords") and named(finished, "Kinesis.GetRecords")
    put = named(finished, "Kinesis.PutRecords")[0]
    assert put.kind is SpanKind.CLIENT and put.attributes is not None
    assert put.attributes["rpc.service"] == "Kinesis"


def test_flush_links_are_bounded_and_distinct(spans: InMemorySpanExporter) -> None:
    values = [f"00-{i:032x}-{i:016x}-01" for i in range(1, 400)] * 2 + ["", "junk"]
    links = tracing.links_from_traceparents(values)
    assert len(links) == tracing.MAX_FLUSH_LINKS
    assert len({link.context.span_id for link in links}) == tracing.MAX_FLUSH_LINKS


def test_tracing_off_costs_one_shared_null_context() -> None:
    assert not tracing.enabled()
    assert tracing.span("a") is tracing.span("b")
    assert tracing.aws_span("Kinesis", "PutRecords") is tracing.span("c")
    assert tracing.current_traceparent(INCOMING) == INCOMING  # the header still travels
    assert tracing.flush_links([]) == []


@pytest.mark.parametrize(
    ("env", "on"),
    [
        ({}, False),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://localhost:4318"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
    ],
)
def test_tracing_is_off_unless_otel_variables_configure_it(env: dict[str, str], on: bool) -> None:
    provider = tracing.provider_from_env("serve", env)
    assert (provider is not None) == on
    if provider is not None:
        assert provider.resource.attributes["service.name"] == "tideway-serve"
        provider.shutdown()


@pytest.mark.parametrize(
    ("env", "named_setting"),
    [
        ({"OTEL_TRACES_EXPORTER": "jaeger"}, "OTEL_TRACES_EXPORTER"),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ),
    ],
)
def test_a_bad_otel_value_stops_the_start_naming_the_variable(
    env: dict[str, str], named_setting: str
) -> None:
    with pytest.raises(SettingsError, match=named_setting):
        tracing.provider_from_env("consume", env)


# ------------------------------------------------------------------ OTLP over HTTP


class Receiver:
    """A tiny OTLP/HTTP trace receiver (what the ADOT sidecar listens on at :4318)."""

    def __init__(self) -> None:
        self.spans: list[
            tuple[str, bytes, list[bytes], str]
        ] = []  # name, trace, link traces, service

    async def traces(self, request: web.Request) -> web.StreamResponse:
        assert request.content_type == "application/x-protobuf"
        export = ExportTraceServiceRequest.FromString(await request.read())
        for resource_spans in export.resource_spans:
            service = next(
                a.value.string_value
                for a in resource_spans.resource.attributes
                if a.key == "service.name"
            )
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    links = [link.trace_id for link in span.links]
                    self.spans.append((span.name, span.trace_id, links, service))
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )


@pytest.fixture
async def otlp(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Receiver]:
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/v1/traces", receiver.traces)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    try:
        yield receiver
    finally:
        await runner.cleanup()


async def test_spans_reach_an_otlp_http_collector_with_the_flush_linked_to_the_request(
    otlp: Receiver, ready: Settings, server: Server
) -> None:
    assert tracing.enabled()  # serve configured itself from OTEL_EXPORTER_OTLP_ENDPOINT
    await post(server.url, 20, INCOMING)
    await drain(ready)  # joins the tracer serve installed
    incoming = bytes.fromhex(INCOMING_TRACE)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        flushes = [s for s in otlp.spans if s[0] == "tideway.flush" and incoming in s[2]]
        if flushes and any(s[0] == "POST /ingest" for s in otlp.spans):
            break
        await asyncio.sleep(0.1)
    request = next(s for s in otlp.spans if s[0] == "POST /ingest")
    assert request[1] == incoming
    assert request[3] == "tideway-serve"
    assert flushes, otlp.spans
