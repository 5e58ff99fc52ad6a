"""Telemetry of one running service: tracing and the EMF emitter, one context manager."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from service.settings import Settings
from service.telemetry.emf import EmfEmitter
from service.telemetry.metrics import ConsumerMetrics, IngestMetrics
from service.telemetry.tracing import tracing


@asynccontextmanager
async def service_telemetry(
    settings: Settings, role: str, metrics: IngestMetrics | ConsumerMetrics
) -> AsyncIterator[None]:
    """Tracing (when OTEL_* configure it) and EMF lines every ``settings.emf_interval``
    seconds (0: none) for as long as the service runs; both are flushed on exit."""
    emitter = EmfEmitter(
        metrics.emf_metrics(), stream=settings.stream, role=role, interval=settings.emf_interval
    )
    async with tracing(role), emitter:
        yield
