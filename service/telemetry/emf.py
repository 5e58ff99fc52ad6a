"""CloudWatch Embedded Metric Format: one JSON line on stdout per interval (see docs/telemetry.md).

The awslogs driver ships stdout to CloudWatch Logs, which extracts the metrics from the
``_aws`` directive; no agent and no PutMetricData call. Values come from the service's
Prometheus metrics, so every number is counted once: counters are emitted as their
increase since the previous line, gauges as their current value.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import orjson

from service.telemetry.names import DIM_ROLE, DIM_STREAM, EMF_NAMESPACE

log = logging.getLogger(__name__)
MAX_METRICS_PER_DIRECTIVE = 100  # EMF specification
MAX_DIMENSIONS = 30  # EMF specification, per dimension set


@dataclass(frozen=True, slots=True)
class EmfMetric:
    """One EMF metric read from a Prometheus metric.

    ``cumulative``: ``read`` returns a running total (a counter) and the line carries its
    increase since the previous line; otherwise the value is a gauge, emitted as read.
    """

    name: str
    unit: str  # a CloudWatch unit: Count, Milliseconds, Seconds, Bytes, ...
    read: Callable[[], float]
    cumulative: bool = True


def emf_document(
    values: Mapping[str, tuple[float, str]],
    dimensions: Mapping[str, str],
    timestamp_ms: int,
    namespace: str = EMF_NAMESPACE,
) -> dict[str, Any]:
    """The EMF object for ``values`` (name -> (value, unit)) under one dimension set (pure).

    Metrics are split into directives of at most 100, as the specification requires;
    raises ValueError past 30 dimensions.
    """
    if len(dimensions) > MAX_DIMENSIONS:
        raise ValueError(f"EMF allows at most {MAX_DIMENSIONS} dimensions, got {len(dimensions)}")
    names = list(values)
    directives = [
        {
            "Namespace": namespace,
            "Dimensions": [list(dimensions)],
            "Metrics": [{"Name": n, "Unit": values[n][1]} for n in chunk],
        }
        for chunk in (
            names[i : i + MAX_METRICS_PER_DIRECTIVE]
            for i in range(0, len(names), MAX_METRICS_PER_DIRECTIVE)
        )
    ]
    doc: dict[str, Any] = {"_aws": {"Timestamp": timestamp_ms, "CloudWatchMetrics": directives}}
    doc.update(dimensions)
    doc.update((n, v) for n, (v, _) in values.items())
    return doc


class EmfEmitter:
    """Async context manager: writes one EMF line every ``interval`` seconds, and a last one
    on exit so the final partial interval is not lost. ``interval`` 0 disables it entirely
    (nothing is written, no task runs). Its one task is owned and cancelled on exit."""

    def __init__(
        self,
        metrics: Sequence[EmfMetric],
        *,
        stream: str,
        role: str,
        interval: float,
        write: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._metrics = tuple(metrics)
        self._dimensions = {DIM_STREAM: stream, DIM_ROLE: role}
        self._interval = interval
        self._write = write or _write_stdout
        self._clock = clock
        self._last: dict[str, float] = {m.name: 0.0 for m in self._metrics if m.cumulative}
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> EmfEmitter:
        if self._interval > 0 and self._metrics:
            self._task = asyncio.create_task(self._loop(), name="emf-emitter")
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        self.emit()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            self.emit()

    def sample(self) -> dict[str, tuple[float, str]]:
        """Read every metric now: (value, unit), counters as the increase since the last call."""
        out: dict[str, tuple[float, str]] = {}
        for m in self._metrics:
            value = m.read()
            if m.cumulative:
                value, self._last[m.name] = value - self._last[m.name], value
            out[m.name] = (value, m.unit)
        return out

    def emit(self) -> None:
        """Write one line now; a failing write is logged, never raised into the service."""
        doc = emf_document(self.sample(), self._dimensions, int(self._clock() * 1000))
        try:
            self._write(orjson.dumps(doc).decode())
        except (OSError, ValueError) as exc:
            log.warning("EMF line not written", extra={"error": repr(exc)})


def _write_stdout(line: str) -> None:
    # Resolved at each write: tests and the CLI may swap sys.stdout.
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def emf_lines(text: str) -> Iterable[dict[str, Any]]:
    """The EMF objects among the lines of ``text`` (other lines are skipped)."""
    for line in text.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            yield orjson.loads(line)
