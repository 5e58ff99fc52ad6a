"""Prometheus metrics for both services, one registry per running service.

Names follow Prometheus conventions (``tideway_`` prefix, base units, ``_total`` for
counters); labels are small closed sets, never shard ids or services. See docs/telemetry.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

if TYPE_CHECKING:
    from service.consume.buffer import ShardBuffer
    from service.sink.plan import FlushPlan

SIZE_BUCKETS = (1e3, 1e4, 1e5, 1e6, 4e6, 16e6, 64e6, 128e6, 256e6, 1e9)
LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class IngestMetrics:
    """Metrics of ``tideway serve``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.requests = Counter(
            "tideway_http_requests",
            "HTTP requests by route and status",
            ["route", "status"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "tideway_http_request_duration_seconds",
            "Request latency until the answer",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.lines_accepted = Counter(
            "tideway_ingest_lines_accepted", "Lines stored in Kinesis", registry=r
        )
        self.lines_rejected = Counter(
            "tideway_ingest_lines_rejected", "Lines refused, by reason", ["reason"], registry=r
        )
        self.bytes_in = Counter(
            "tideway_ingest_bytes", "Request body bytes as received", registry=r
        )
        self.put_calls = Counter(
            "tideway_kinesis_put_records_calls", "PutRecords calls", registry=r
        )
        self.put_entries = Counter(
            "tideway_kinesis_put_records_entries", "Records sent", registry=r
        )
        self.put_bytes = Counter(
            "tideway_kinesis_put_bytes", "Record bytes sent to Kinesis", registry=r
        )
        self.put_retries = Counter(
            "tideway_kinesis_put_retries", "Entries retried after a failure", registry=r
        )
        self.put_throttles = Counter(
            "tideway_kinesis_throttles", "Throttled entries or calls", registry=r
        )
        self.inflight_bytes = Gauge(
            "tideway_ingest_inflight_bytes", "Bytes waiting for Kinesis", registry=r
        )


class ConsumerMetrics:
    """Metrics of ``tideway consume``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.records_read = Counter(
            "tideway_kinesis_records_read", "Kinesis records read", registry=r
        )
        self.bytes_read = Counter(
            "tideway_kinesis_bytes_read", "Kinesis record bytes read", registry=r
        )
        self.millis_behind = Gauge(
            "tideway_consumer_lag_milliseconds",
            "Largest MillisBehindLatest over owned shards",
            registry=r,
        )
        self.flushes = Counter("tideway_flushes", "Flushes by trigger", ["reason"], registry=r)
        self.files = Counter("tideway_files_written", "Objects written to S3", registry=r)
        self.bytes_written = Counter(
            "tideway_bytes_written", "Object bytes written to S3", registry=r
        )
        self.rows = Counter("tideway_rows_written", "Rows written to Parquet", registry=r)
        self.dead_letters = Counter(
            "tideway_dead_letter_records", "Records dead-lettered", registry=r
        )
        self.skipped = Counter(
            "tideway_records_skipped",
            "Records skipped on purpose, by reason",
            ["reason"],
            registry=r,
        )
        self.leases_held = Gauge(
            "tideway_leases_held", "Shard leases held by this worker", registry=r
        )
        self.takeovers = Counter("tideway_lease_takeovers", "Leases acquired", registry=r)
        self.handoffs = Counter("tideway_lease_handoffs", "Leases released gracefully", registry=r)
        self.leases_lost = Counter(
            "tideway_leases_lost", "Leases lost to another worker", registry=r
        )
        self.replays = Counter("tideway_intent_replays", "Open intents rebuilt", registry=r)
        self.flush_rows = Histogram(
            "tideway_flush_rows",
            "Rows per flush",
            buckets=(10, 100, 1e3, 1e4, 1e5, 1e6, 1e7),
            registry=r,
        )

    def observe_flush(self, reason: str, plan: FlushPlan, buffer: ShardBuffer) -> None:
        self.flushes.labels(reason).inc()
        self.files.inc(len(plan.objects))
        self.bytes_written.inc(plan.bytes_out)
        self.rows.inc(plan.rows)
        self.dead_letters.inc(plan.dead_letters)
        self.flush_rows.observe(plan.rows)
        for why, count in buffer.skipped.items():
            self.skipped.labels(why).inc(count)
