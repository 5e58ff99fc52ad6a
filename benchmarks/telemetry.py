"""Telemetry overhead: the ingest and flush hot paths with tracing and EMF on versus off.

    .venv/bin/python benchmarks/telemetry.py [--quick]

Same input, same process, pinned to one core, variants interleaved (off, on, off, on, ...)
so drift hits both alike. Times are CPU seconds of this process (all threads, so the
span export thread counts) rather than wall time: the 2-core machines these run on are
shared, and CPU time is immune to other work. The fastest run of each is reported
(the medians' ratio too).

- ingest: concurrent requests of 500 generated lines through Producer.submit (the group-
  commit packer, zstd, envelope encoding, PutRecords batching) against an in-memory
  Kinesis that accepts everything; "on" adds what the request middleware does (a SERVER
  span continuing an incoming traceparent, the envelope traceparent taken from it), the
  PutRecords CLIENT spans, and an EMF emitter writing every 50 ms to a discarding sink.
- flush: plan_flush (Arrow columns, partitioning, Parquet zstd encoding) of decoded
  envelope records, each carrying its own traceparent; "on" adds the flush span with its
  128 links, the encode span and observe_flush.

Prometheus counters are part of both variants: they are always on in the services.
Spans go through the SDK's BatchSpanProcessor to an exporter that serializes them to
OTLP protobuf and drops the bytes (the HTTP post to the sidecar is not measured).
Writes benchmarks/results/telemetry.json (DESIGN §9; telemetry.quick.json with --quick).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans  # noqa: E402
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import (  # noqa: E402
    BatchSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

from service import envelope  # noqa: E402
from service.consume.buffer import ShardBuffer  # noqa: E402
from service.decode import DecoderConfig, RecordMeta  # noqa: E402
from service.ingest.packer import Header  # noqa: E402
from service.ingest.producer import Producer  # noqa: E402
from service.loggen import ndjson_lines  # noqa: E402
from service.sink.plan import Layout, plan_flush  # noqa: E402
from service.sink.rules import FieldMapping  # noqa: E402
from service.telemetry import tracing  # noqa: E402
from service.telemetry.emf import EmfEmitter  # noqa: E402
from service.telemetry.metrics import ConsumerMetrics, IngestMetrics  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "telemetry.json"
REQUEST_LINES = 500
CONCURRENCY = 16
RECORD_LINES = 70


class EncodingExporter(SpanExporter):
    """Serializes every span as the OTLP exporter would, then drops the bytes."""

    def __init__(self) -> None:
        self.bytes = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.bytes += len(encode_spans(spans).SerializeToString())
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


class MemoryKinesis:
    """PutRecords that accepts every entry."""

    async def put_records(self, StreamName: str, Records: list[dict[str, Any]]) -> dict[str, Any]:
        return {"Records": [{"SequenceNumber": "1", "ShardId": "s"} for _ in Records]}


def tracing_on() -> tuple[TracerProvider, EncodingExporter]:
    exporter = EncodingExporter()
    provider = TracerProvider(id_generator=tracing.XRayIdGenerator())
    provider.add_span_processor(BatchSpanProcessor(exporter))
    tracing.install(provider)
    return provider, exporter


async def ingest_once(lines: list[bytes], provider: TracerProvider | None) -> float:
    """Seconds to make every line durable through the producer (and, when tracing, to
    export every span: the background export competes for the same core)."""
    on = provider is not None
    metrics = IngestMetrics()
    requests = [lines[i : i + REQUEST_LINES] for i in range(0, len(lines), REQUEST_LINES)]
    gate = asyncio.Semaphore(CONCURRENCY)
    header = Header(source="http", service="api")
    incoming = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}

    async def one(producer: Producer, batch: list[bytes]) -> None:
        async with gate:
            attributes = {"http.request.method": "POST", "http.route": "/ingest"}
            with tracing.server_span("POST /ingest", incoming, attributes):
                traceparent = tracing.current_traceparent(incoming["traceparent"])
                await producer.submit(batch, header, traceparent)
                metrics.lines_accepted.inc(len(batch))
                metrics.observe_response(200)

    emitter = EmfEmitter(
        metrics.emf_metrics(), stream="bench", role="serve", interval=0.05 if on else 0,
        write=lambda line: None,
    )  # fmt: skip
    started = time.process_time()
    kinesis = MemoryKinesis()
    async with (
        emitter,
        Producer(kinesis, "bench", metrics=metrics) as producer,
        asyncio.TaskGroup() as tg,
    ):
        for batch in requests:
            tg.create_task(one(producer, batch))
    if provider is not None:
        provider.force_flush()
    return time.process_time() - started


def flush_input(lines: list[bytes]) -> ShardBuffer:
    buffer = ShardBuffer()
    config = DecoderConfig()
    for n, i in enumerate(range(0, len(lines), RECORD_LINES)):
        chunk = lines[i : i + RECORD_LINES]
        record = envelope.EnvelopeRecord(
            payload=b"\n".join(chunk),
            line_count=len(chunk),
            received_us=1_790_000_000_000_000,
            source="http",
            service="api",
            traceparent=f"00-{n + 1:032x}-{n + 1:016x}-01",
        )
        meta = RecordMeta("shardId-000000000000", n + 1, 1_790_000_000_000_000 + n)
        buffer.add(envelope.encode(record), meta, config, 0.0)
    return buffer


def flush_once(buffer: ShardBuffer, provider: TracerProvider | None) -> tuple[float, int]:
    """Seconds for one flush's CPU work (spans only when a tracer is installed); bytes out."""
    metrics = ConsumerMetrics()
    layout = Layout("bench")
    mapping = FieldMapping(max_past_us=10**18, max_future_us=10**18)
    started = time.process_time()
    links = tracing.flush_links(buffer.records)
    with tracing.span("tideway.flush", attributes={"reason": "size"}, links=links):
        with tracing.span("tideway.encode"):
            plan = plan_flush("shardId-000000000000", buffer.records, buffer.dead, layout, mapping)
        metrics.observe_flush(
            "size",
            plan,
            [d.reason for d in buffer.dead],
            buffer.skipped,
            time.process_time() - started,
        )
    if provider is not None:
        provider.force_flush()
    return time.process_time() - started, plan.bytes_out


def span_cost_ns(provider: TracerProvider | None, n: int = 1500) -> float:
    """Nanoseconds per ``with tracing.aws_span(...)`` (the call-site cost, export excluded)."""
    started = time.process_time_ns()
    for _ in range(n):  # fewer than the span queue holds (2048): none is dropped
        with tracing.aws_span("Kinesis", "GetRecords", shard_id="shardId-000000000000"):
            pass
    if provider is not None:
        provider.force_flush()  # export included: it is CPU the process spends per span
    return round((time.process_time_ns() - started) / n, 1)


def run(quick: bool) -> dict[str, Any]:
    lines = ndjson_lines(200_000 if quick else 1_000_000)
    flush_lines = lines[: 20_000 if quick else 200_000]
    reps = 5 if quick else 9
    raw_bytes = sum(len(line) for line in lines)
    flush_bytes = sum(len(line) for line in flush_lines)
    buffer = flush_input(flush_lines)
    times: dict[str, dict[str, list[float]]] = {
        v: {"ingest": [], "flush": []} for v in ("tideway_off", "tideway_on")
    }
    span_ns: dict[str, list[float]] = {v: [] for v in times}
    exported = 0
    out_bytes = 0
    for _ in range(reps):
        for variant in ("tideway_off", "tideway_on"):
            on = variant == "tideway_on"
            provider, exporter = tracing_on() if on else (None, None)
            try:
                times[variant]["ingest"].append(asyncio.run(ingest_once(lines, provider)))
                seconds, out_bytes = flush_once(buffer, provider)
                times[variant]["flush"].append(seconds)
                span_ns[variant].append(span_cost_ns(provider))
            finally:
                tracing.uninstall()
                if provider is not None and exporter is not None:
                    provider.shutdown()
                    exported = exporter.bytes
    results: dict[str, Any] = {}
    for variant, t in times.items():
        # The fastest run is the one least disturbed (caches, GC, frequency).
        ingest_s, flush_s = min(t["ingest"]), min(t["flush"])
        results[variant] = {
            "lines_per_s": round(len(lines) / ingest_s),
            "mb_per_s": round(raw_bytes / ingest_s / 1e6, 2),
            "flush_lines_per_s": round(len(flush_lines) / flush_s),
            "flush_mb_per_s": round(flush_bytes / flush_s / 1e6, 2),
            "ingest_seconds": [round(x, 4) for x in t["ingest"]],
            "flush_seconds": [round(x, 4) for x in t["flush"]],
            "output_bytes": out_bytes,
            "ns_per_span_call": min(span_ns[variant]),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }
    off, on_ = results["tideway_off"], results["tideway_on"]
    results["tideway_on"]["otlp_bytes_per_run"] = exported
    return {
        "benchmark": "telemetry",
        "quick": quick,
        "statistic": "fastest of interleaved runs",
        "medians_time_ratio": {
            part: round(
                statistics.median(times["tideway_on"][part])
                / statistics.median(times["tideway_off"][part]),
                3,
            )
            for part in ("ingest", "flush")
        },
        "input": {"lines": len(lines), "bytes": raw_bytes, "flush_lines": len(flush_lines)},
        "results": results,
        "overhead": {
            # time on / time off on the same input: 1.00 = free.
            "ingest_time_ratio": round(off["lines_per_s"] / on_["lines_per_s"], 3),
            "flush_time_ratio": round(off["flush_lines_per_s"] / on_["flush_lines_per_s"], 3),
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="under a minute")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    report = run(args.quick)
    path = RESULTS.with_suffix(".quick.json") if args.quick else RESULTS  # never over a full run
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({"overhead": report["overhead"], "results": {
        k: {m: v[m] for m in ("lines_per_s", "flush_lines_per_s")}
        for k, v in report["results"].items()
    }}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
