"""OpenTelemetry tracing, exported over OTLP/HTTP to the ADOT sidecar (-> X-Ray).

Off unless OpenTelemetry's own variables ask for it (``OTEL_EXPORTER_OTLP_ENDPOINT``,
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_TRACES_EXPORTER``); this module is the
one place that reads them, and the SDK reads the rest (``OTEL_SERVICE_NAME``,
``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER``, ``OTEL_BSP_*``). When off, ``span``
returns one shared null context: no span object, no context switch, no allocation.

The active tracer lives here rather than in OpenTelemetry's global provider, which can
be set once per process only: tests and the demo install and remove providers freely.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import re
import sys
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import Link, SpanContext, SpanKind, TraceFlags

from service.errors import SettingsError


class _Batch(Protocol):
    @property
    def traceparent(self) -> str: ...


class TracedRecord(Protocol):
    """What a flush's links read of a decoded record (decode's DecodedRecord fits);
    telemetry sits below decode, so it names the shape, not the type."""

    @property
    def batches(self) -> Sequence[_Batch]: ...


log = logging.getLogger(__name__)
MAX_FLUSH_LINKS = 128
_NULL: AbstractContextManager[None] = contextlib.nullcontext()
_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_EXPORTERS = ("otlp", "console", "none")


@dataclass
class _Active:
    tracer: trace.Tracer | None = None
    provider: TracerProvider | None = None
    users: int = 0
    from_env: bool = False


_ACTIVE = _Active()


class XRayIdGenerator(IdGenerator):
    """Trace ids X-Ray accepts: the first 32 bits are the start time in epoch seconds.

    (What opentelemetry-sdk-extension-aws provides; a few lines do not justify the package.)
    """

    def generate_span_id(self) -> int:
        return random.getrandbits(64) or 1

    def generate_trace_id(self) -> int:
        return (int(time.time()) << 96) | random.getrandbits(96)


def install(provider: TracerProvider) -> None:
    """Make ``provider`` the source of every Tideway span (tests install an in-memory one)."""
    _ACTIVE.provider = provider
    _ACTIVE.tracer = provider.get_tracer("tideway")


def uninstall() -> None:
    """Tracing off again; the caller shuts its provider down."""
    _ACTIVE.tracer = None
    _ACTIVE.provider = None
    _ACTIVE.users = 0
    _ACTIVE.from_env = False


def enabled() -> bool:
    return _ACTIVE.tracer is not None


def span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, str | int | float | bool] | None = None,
    links: Sequence[Link] | None = None,
) -> AbstractContextManager[Any]:
    """A context manager for a span that is current inside it; a shared no-op when off."""
    tracer = _ACTIVE.tracer
    if tracer is None:
        return _NULL
    return tracer.start_as_current_span(name, kind=kind, attributes=attributes, links=links)


def aws_span(service: str, method: str, **attributes: str | int) -> AbstractContextManager[Any]:
    """A CLIENT span for one AWS API call, named and tagged as X-Ray expects (``rpc.*``)."""
    tracer = _ACTIVE.tracer
    if tracer is None:
        return _NULL
    attributes.update({"rpc.system": "aws-api", "rpc.service": service, "rpc.method": method})
    return tracer.start_as_current_span(
        f"{service}.{method}", kind=SpanKind.CLIENT, attributes=attributes
    )


def server_span(
    name: str, headers: Mapping[str, str], attributes: Mapping[str, str | int]
) -> AbstractContextManager[Any]:
    """A SERVER span continuing the caller's W3C ``traceparent`` (a new trace without one)."""
    tracer = _ACTIVE.tracer
    if tracer is None:
        return _NULL
    parent = parse_traceparent(headers.get("traceparent", ""))
    context = (
        trace.set_span_in_context(trace.NonRecordingSpan(parent)) if parent is not None else None
    )
    return tracer.start_as_current_span(
        name, context=context, kind=SpanKind.SERVER, attributes=attributes
    )


def parse_traceparent(value: str) -> SpanContext | None:
    """The remote span context of a W3C traceparent, or None when it is malformed."""
    m = _TRACEPARENT.match(value.strip().lower())
    if m is None or m.group(1) == "ff":
        return None
    trace_id, span_id = int(m.group(2), 16), int(m.group(3), 16)
    if not trace_id or not span_id:
        return None
    return SpanContext(
        trace_id, span_id, is_remote=True, trace_flags=TraceFlags(int(m.group(4), 16))
    )


def format_traceparent(ctx: SpanContext) -> str:
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def current_traceparent(fallback: str = "") -> str:
    """The current span as a W3C traceparent; ``fallback`` when tracing is off or no span is
    current (so an incoming traceparent still travels in the envelope header)."""
    # A client's header is data: only a well-formed W3C traceparent may travel (the envelope
    # header has one byte for its length).
    if fallback and parse_traceparent(fallback) is None:
        fallback = ""
    if _ACTIVE.tracer is None:
        return fallback
    ctx = trace.get_current_span().get_span_context()
    return format_traceparent(ctx) if ctx.is_valid else fallback


def links_from_traceparents(values: Iterable[str], limit: int = MAX_FLUSH_LINKS) -> list[Link]:
    """Links to the distinct, valid traceparents among ``values``, at most ``limit``."""
    seen: set[str] = set()
    links: list[Link] = []
    for value in values:
        if not value or value in seen:
            continue
        seen.add(value)
        ctx = parse_traceparent(value)
        if ctx is not None:
            links.append(Link(ctx))
            if len(links) >= limit:
                break
    return links


def flush_links(records: Sequence[TracedRecord], limit: int = MAX_FLUSH_LINKS) -> list[Link]:
    """Span links from a flush to the requests whose lines it writes (empty when off).

    A per-batch loop, but only when tracing is on, and it stops at ``limit`` distinct links;
    lines of one request share a traceparent, so duplicates are skipped cheaply.
    """
    if _ACTIVE.tracer is None:
        return []
    return links_from_traceparents((b.traceparent for rec in records for b in rec.batches), limit)


def provider_from_env(role: str, environ: Mapping[str, str] | None = None) -> TracerProvider | None:
    """A provider exporting as OTEL_* ask, or None when tracing is not configured.

    Raises SettingsError naming the variable on a value Tideway cannot honour.
    """
    env = os.environ if environ is None else environ
    exporter_name = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    if exporter_name == "none" or (not exporter_name and not endpoint):
        return None
    if exporter_name not in ("", *_EXPORTERS):
        raise SettingsError(
            f"setting OTEL_TRACES_EXPORTER is invalid: {exporter_name!r}; use otlp, console or none"
        )
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
    )
    exporter: SpanExporter
    if exporter_name == "console":
        exporter = ConsoleSpanExporter(out=sys.stderr)  # stdout carries EMF lines
    elif protocol != "http/protobuf":
        raise SettingsError(
            f"setting OTEL_EXPORTER_OTLP_PROTOCOL is invalid: {protocol!r}; "
            "Tideway exports http/protobuf (the ADOT collector's port 4318)"
        )
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
            OTLPSpanExporter,  # imports requests and protobuf: only when tracing is on
        )

        exporter = OTLPSpanExporter()
    attributes: dict[str, str] = {"tideway.role": role}
    if not env.get("OTEL_SERVICE_NAME") and "service.name=" not in env.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    ):
        attributes[SERVICE_NAME] = f"tideway-{role}"
    provider = TracerProvider(resource=Resource.create(attributes), id_generator=XRayIdGenerator())
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


@contextlib.asynccontextmanager
async def tracing(role: str) -> AsyncIterator[None]:
    """Tracing for one service runner: configured from OTEL_* unless a provider is already
    installed (a test's, or the other runner's in the demo). The last runner to leave flushes
    and shuts down a provider configured here, off the event loop."""
    if _ACTIVE.tracer is None:
        provider = provider_from_env(role)
        if provider is not None:
            install(provider)
            _ACTIVE.from_env = True
            log.info("tracing on", extra={"role": role})
    _ACTIVE.users += 1
    try:
        yield
    finally:
        _ACTIVE.users -= 1
        provider = _ACTIVE.provider
        if _ACTIVE.users <= 0 and _ACTIVE.from_env and provider is not None:
            uninstall()
            await asyncio.to_thread(provider.shutdown)
