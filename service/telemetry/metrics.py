"""Prometheus metrics for both services, one registry per running service.

Names follow Prometheus conventions (``tideway_`` prefix, base units: seconds and bytes,
``_total`` for counters, added by prometheus_client); labels are small closed sets
(service/telemetry/reasons.py), never shard ids, streams or services. Each class also
lists the EMF metrics derived from it (``emf_metrics``). See docs/telemetry.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.process_collector import ProcessCollector

from service.telemetry import names
from service.telemetry.emf import EmfMetric
from service.telemetry.reasons import (
    dead_letter_class,
    error_class,
    reject_class,
    skip_class,
)


class FlushedObject(Protocol):
    """What the metrics read of one written object (the sink's FlushObject fits)."""

    @property
    def key(self) -> str: ...
    @property
    def body(self) -> bytes: ...
    @property
    def rows(self) -> int: ...


class FlushedPlan(Protocol):
    """What the metrics read of a flush (the sink's FlushPlan fits); telemetry sits below
    the sink, so it names the shape, not the type."""

    @property
    def objects(self) -> Sequence[FlushedObject]: ...
    @property
    def rows(self) -> int: ...
    @property
    def dead_letters(self) -> int: ...
    @property
    def dropped(self) -> int: ...
    @property
    def bytes_out(self) -> int: ...


SIZE_BUCKETS = (1e3, 1e4, 1e5, 1e6, 4e6, 16e6, 64e6, 128e6, 256e6, 1e9)
LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
FLUSH_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
ROW_BUCKETS = (10, 100, 1e3, 1e4, 1e5, 1e6, 1e7)


def _total(metric: Counter, where: Callable[[dict[str, str]], bool] | None = None) -> float:
    """Sum of a counter's ``_total`` samples (over the label sets ``where`` accepts)."""
    return sum(
        s.value
        for family in metric.collect()
        for s in family.samples
        if s.name.endswith("_total") and (where is None or where(s.labels))
    )


def _value(metric: Gauge) -> float:
    return sum(s.value for family in metric.collect() for s in family.samples)


class _Common:
    """What both services count: errors by operation and class, and Kinesis throttles."""

    registry: CollectorRegistry

    def _common(self, r: CollectorRegistry) -> None:
        ProcessCollector(registry=r)
        self.errors = Counter(
            "tideway_errors",
            "Errors by operation (put_records, get_records, s3_upload, ...) and class",
            ["operation", "type"],
            registry=r,
        )
        self.throttles = Counter(
            "tideway_kinesis_throttles",
            "Kinesis throttling answers (entries for PutRecords, calls for GetRecords)",
            ["operation"],
            registry=r,
        )
        self.call_seconds = Histogram(
            "tideway_aws_call_duration_seconds",
            "Latency of AWS calls by operation, retries of the SDK included",
            ["operation"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

    @contextmanager
    def aws_call(self, operation: str) -> Iterator[None]:
        """Time one AWS call; on an exception count it by class (and throttles), re-raise."""
        started = time.perf_counter()
        try:
            yield
        except Exception as exc:
            kind = error_class(exc)
            self.errors.labels(operation, kind).inc()
            if kind == "throttled" and operation == "get_records":
                # PutRecords throttles are counted per entry by the producer itself.
                self.throttles.labels(operation).inc()
            raise
        finally:
            self.call_seconds.labels(operation).observe(time.perf_counter() - started)

    def count_error(self, operation: str, exc: BaseException) -> None:
        self.errors.labels(operation, error_class(exc)).inc()


def timed_call(metrics: _Common | None, operation: str) -> AbstractContextManager[None]:
    """``metrics.aws_call(operation)``, or a no-op for a component built without metrics."""
    return _UNTIMED if metrics is None else metrics.aws_call(operation)


_UNTIMED: AbstractContextManager[None] = nullcontext()


class IngestMetrics(_Common):
    """Metrics of ``tideway serve``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self._common(r)
        self.requests = Counter(
            "tideway_http_requests",
            "HTTP requests by route template and status code",
            ["route", "status"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "tideway_http_request_duration_seconds",
            "Request latency until the answer (for ingest routes: until durable in Kinesis)",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.requests_rejected = Counter(
            "tideway_http_requests_rejected",
            "Requests answered 4xx/5xx, by reason class",
            ["reason"],
            registry=r,
        )
        self.lines_accepted = Counter(
            "tideway_ingest_lines_accepted", "Lines stored in Kinesis", registry=r
        )
        self.lines_rejected = Counter(
            "tideway_ingest_lines_rejected", "Lines refused, by reason", ["reason"], registry=r
        )
        self.bytes_in = Counter(
            "tideway_ingest_received_bytes",
            "Request body bytes as received (before decompression)",
            registry=r,
        )
        self.put_calls = Counter(
            "tideway_kinesis_put_records_calls", "PutRecords calls", registry=r
        )
        self.put_entries = Counter(
            "tideway_kinesis_put_records_entries", "Records stored by PutRecords", registry=r
        )
        self.put_bytes = Counter(
            "tideway_kinesis_put_records_bytes", "Record bytes stored in Kinesis", registry=r
        )
        self.put_retries = Counter(
            "tideway_kinesis_put_records_retries", "Entries retried after a failure", registry=r
        )
        self.put_throttles = self.throttles.labels("put_records")
        self.inflight_bytes = Gauge(
            "tideway_ingest_inflight_bytes",
            "Line bytes waiting for Kinesis",
            registry=r,
            # Several serve workers: the sum over the live ones (multiprocess mode only).
            multiprocess_mode="livesum",
        )

    def observe_response(self, status: int) -> None:
        """Count a refused request (status >= 400) by its reason class."""
        if status >= 400:
            self.requests_rejected.labels(reject_class(status)).inc()

    def _http_5xx(self) -> float:
        return _total(self.requests_rejected, lambda labels: labels["reason"] in _REJECT_5XX)

    def emf_metrics(self) -> tuple[EmfMetric, ...]:
        """The EMF metrics of the serve role (names.py)."""
        return (
            EmfMetric(names.LINES_ACCEPTED_METRIC, "Count", lambda: _total(self.lines_accepted)),
            EmfMetric(names.HTTP_5XX_METRIC, "Count", self._http_5xx),
            EmfMetric(names.THROTTLE_METRIC, "Count", lambda: _total(self.throttles)),
            EmfMetric(names.BYTES_RECEIVED_METRIC, "Bytes", lambda: _total(self.bytes_in)),
            *(
                EmfMetric(name, "Count", self._refused(reason))
                for reason, name in names.REFUSED_METRICS.items()
            ),
        )

    def _refused(self, reason: str) -> Callable[[], float]:
        return lambda: _total(self.requests_rejected, lambda labels: labels["reason"] == reason)


_REJECT_5XX = frozenset({"unavailable", "internal"})


class ConsumerMetrics(_Common):
    """Metrics of ``tideway consume``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self._common(r)
        self.records_read = Counter(
            "tideway_kinesis_records_read", "Kinesis records read", registry=r
        )
        self.bytes_read = Counter(
            "tideway_kinesis_bytes_read", "Kinesis record bytes read", registry=r
        )
        self.lag_seconds = Gauge(
            "tideway_consumer_lag_seconds",
            "Largest MillisBehindLatest over the shards this worker owns, in seconds",
            registry=r,
        )
        self.oldest_unflushed_seconds = Gauge(
            "tideway_consumer_oldest_unflushed_age_seconds",
            "Age of the oldest record read but not yet flushed to S3",
            registry=r,
        )
        self.flushes = Counter("tideway_flushes", "Flushes by trigger", ["reason"], registry=r)
        self.flush_seconds = Histogram(
            "tideway_flush_duration_seconds",
            "Flush time: encode, intent, upload, checkpoint",
            buckets=FLUSH_BUCKETS,
            registry=r,
        )
        self.files = Counter("tideway_files_written", "Objects written to S3", ["kind"], registry=r)
        self.bytes_written = Counter(
            "tideway_bytes_written", "Object bytes written to S3", registry=r
        )
        self.rows = Counter("tideway_rows_written", "Rows written to Parquet", registry=r)
        self.pipelines_dropped = Counter(
            "tideway_pipelines_dropped",
            "Rows pipelines dropped or sampled out (DESIGN §12), not written",
            registry=r,
        )
        self.file_rows = Histogram(
            "tideway_file_rows", "Rows per Parquet file", buckets=ROW_BUCKETS, registry=r
        )
        self.file_bytes = Histogram(
            "tideway_file_bytes", "Bytes per Parquet file", buckets=SIZE_BUCKETS, registry=r
        )
        self.flush_rows = Histogram(
            "tideway_flush_rows", "Rows per flush", buckets=ROW_BUCKETS, registry=r
        )
        self.dead_letters = Counter(
            "tideway_dead_letter_records",
            "Records dead-lettered, by reason class",
            ["reason"],
            registry=r,
        )
        self.skipped = Counter(
            "tideway_records_skipped",
            "Records holding no lines on purpose, by reason class",
            ["reason"],
            registry=r,
        )
        self.leases_held = Gauge(
            "tideway_leases_held", "Shard leases held by this worker", registry=r
        )
        self.acquisitions = Counter(
            "tideway_lease_acquisitions",
            "Leases acquired: new (never owned), takeover (from another worker), own (again)",
            ["kind"],
            registry=r,
        )
        self.handoffs = Counter("tideway_lease_handoffs", "Leases released gracefully", registry=r)
        self.leases_lost = Counter(
            "tideway_leases_lost", "Leases lost to another worker", registry=r
        )
        self.replays = Counter("tideway_intent_replays", "Open intents rebuilt", registry=r)
        self.flush_poisoned = Counter(
            "tideway_flush_poisoned",
            "Flush ranges the planner failed on after bounded retries, dead-lettered whole",
            registry=r,
        )

    def observe_acquired(self, previous_owner: str | None, me: str) -> None:
        kind = "new" if previous_owner is None else "own" if previous_owner == me else "takeover"
        self.acquisitions.labels(kind).inc()

    def observe_worker(self, *, leases: int, lag_ms: int, oldest_unflushed_s: float) -> None:
        """Per-round gauges of one worker (maxima over its shards: no shard label)."""
        self.leases_held.set(leases)
        self.lag_seconds.set(lag_ms / 1000)
        self.oldest_unflushed_seconds.set(oldest_unflushed_s)

    def observe_flush(
        self,
        reason: str,
        plan: FlushedPlan,
        dead_reasons: Sequence[str],
        skipped: Mapping[str, int],
        seconds: float | None = None,
    ) -> None:
        """Count one completed flush: files, bytes, rows, dead letters and skips by class.

        ``dead_reasons``: the reason of each record that failed to decode; ``skipped``: how
        many records were skipped on purpose, by reason."""
        self.flushes.labels(reason).inc()
        if seconds is not None:
            self.flush_seconds.observe(seconds)
        for obj in plan.objects:
            parquet = obj.key.endswith(".parquet")
            self.files.labels("data" if parquet else "dead_letter").inc()
            if parquet:
                self.file_rows.observe(obj.rows)
                self.file_bytes.observe(len(obj.body))
        self.bytes_written.inc(plan.bytes_out)
        self.rows.inc(plan.rows)
        self.pipelines_dropped.inc(plan.dropped)
        self.flush_rows.observe(plan.rows)
        # The plan counts decode failures (with reasons) plus rows that could not be mapped;
        # the latter carry no reason here, only their count.
        for why in dead_reasons:
            self.dead_letters.labels(dead_letter_class(why)).inc()
        unmappable = plan.dead_letters - len(dead_reasons)
        if unmappable > 0:
            self.dead_letters.labels("unmappable").inc(unmappable)
        for why, count in skipped.items():
            self.skipped.labels(skip_class(why)).inc(count)

    def emf_metrics(self) -> tuple[EmfMetric, ...]:
        """The EMF metrics of the consume role (names.py); the lag drives autoscaling."""
        return (
            EmfMetric(
                names.LAG_METRIC,
                "Milliseconds",
                lambda: _value(self.lag_seconds) * 1000,
                cumulative=False,
            ),
            EmfMetric(
                names.OLDEST_UNFLUSHED_METRIC,
                "Seconds",
                lambda: _value(self.oldest_unflushed_seconds),
                cumulative=False,
            ),
            EmfMetric(names.DEAD_LETTER_METRIC, "Count", lambda: _total(self.dead_letters)),
            EmfMetric(names.FLUSH_POISONED_METRIC, "Count", lambda: _total(self.flush_poisoned)),
            EmfMetric(names.ROWS_WRITTEN_METRIC, "Count", lambda: _total(self.rows)),
            EmfMetric(names.THROTTLE_METRIC, "Count", lambda: _total(self.throttles)),
        )
