"""Record decoders: records/s, lines/s and MB/s per format on one core, plus baselines.

    .venv/bin/python benchmarks/decoders.py [--quick]

Inputs come from service.loggen (seeded, same bytes every run) and are built the way
real producers write them: the envelope by service.envelope (~70 lines, ~25 KB a
record), KPL aggregates by the aws-kinesis-agg aggregator (51 200-byte records, the
KPL's default AggregationMaxSize), CloudWatch Logs subscription payloads as gzip JSON,
Avro datums by fastavro in the three framings. Each variant runs in its own process,
pinned to one core, so ``peak_rss_mb`` is that variant's own peak. ``mb_per_s`` counts
record bytes as they arrive from Kinesis (compressed where the format is).

Baseline: ``aws_kinesis_agg`` is the library's own deaggregator on the same KPL input
(it yields user records and does not decode them; Tideway also validates every line).
Writes benchmarks/results/decoders.json (DESIGN §9; decoders.quick.json with --quick).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import io
import json
import os
import pickle
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import fastavro  # noqa: E402
import orjson  # noqa: E402
import zstandard  # noqa: E402

from service import envelope  # noqa: E402
from service.decode import DecoderConfig, decode_record  # noqa: E402
from service.decode.avro import fingerprint, load_config  # noqa: E402
from service.loggen import log_records, ndjson_lines  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "decoders.json"
LINES_PER_RECORD = 70
LOG_EVENT_SCHEMA = {
    "type": "record",
    "name": "LogEvent",
    "namespace": "com.example.logs",
    "fields": [
        {"name": "timestamp", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "level", "type": "string"},
        {"name": "service", "type": "string"},
        {"name": "message", "type": "string"},
        {"name": "host", "type": ["null", "string"], "default": None},
        {"name": "trace_id", "type": {"type": "fixed", "name": "TraceId", "size": 16}},
        {"name": "status", "type": "int"},
        {"name": "duration_ms", "type": "double"},
        {"name": "attributes", "type": {"type": "map", "values": "string"}},
    ],
}
SCHEMA_ID = 17


def _chunks(lines: list[bytes], size: int) -> list[list[bytes]]:
    return [lines[i : i + size] for i in range(0, len(lines), size)]


def _avro_datums(count: int) -> list[dict[str, Any]]:
    rng = random.Random(3)
    base = dt.datetime(2026, 11, 20, 6, tzinfo=dt.UTC)
    return [
        {
            "timestamp": base + dt.timedelta(milliseconds=rng.randrange(6 * 3_600_000)),
            "level": str(r.get("level") or r.get("severity")),
            "service": str(r.get("service") or r.get("app")),
            "message": str(r.get("message") or r.get("msg")),
            "host": str(r["host"]),
            "trace_id": bytes.fromhex(str(r["trace_id"])),
            "status": int(r["http"]["status"]),  # type: ignore[index]
            "duration_ms": float(r["http"]["duration_ms"]),  # type: ignore[index]
            "attributes": {"region": str(r["region"]), "version": str(r["version"])},
        }
        for r in log_records(count, seed=5)
    ]


def build_inputs(quick: bool) -> dict[str, list[bytes]]:
    """Records per format; every list is produced the way its real producer writes it."""
    from aws_kinesis_agg.aggregator import RecordAggregator

    n_lines = 14_000 if quick else 70_000
    lines = ndjson_lines(n_lines, seed=7)
    groups = _chunks(lines, LINES_PER_RECORD)
    inputs: dict[str, list[bytes]] = {}
    inputs["envelope"] = [
        envelope.encode(
            envelope.EnvelopeRecord(b"\n".join(g), len(g), 1_795_000_000_000_000, source="http")
        )
        for g in groups
    ]
    aggregator = RecordAggregator(max_size=51_200)
    kpl: list[bytes] = []
    for i, line in enumerate(lines):
        full = aggregator.add_user_record(f"pk-{i % 64}", line)
        if full is not None:
            kpl.append(full.get_contents()[2])
    inputs["kpl"] = kpl
    inputs["cloudwatch"] = [
        gzip.compress(
            orjson.dumps(
                {
                    "owner": "111111111111",
                    "logGroup": "/ecs/checkout",
                    "logStream": f"ecs/app/{i:08x}",
                    "subscriptionFilters": ["tideway"],
                    "messageType": "DATA_MESSAGE",
                    "logEvents": [
                        {
                            "id": str(10**55 + j),
                            "timestamp": 1795000000000 + j,
                            "message": x.decode(),
                        }
                        for j, x in enumerate(g)
                    ],
                }
            )
        )
        for i, g in enumerate(groups)
    ]
    inputs["json"] = lines[: len(lines) // 2]
    inputs["ndjson_gzip"] = [gzip.compress(b"\n".join(g), compresslevel=6) for g in groups]
    zstd = zstandard.ZstdCompressor(level=3)
    inputs["ndjson_zstd"] = [zstd.compress(b"\n".join(g)) for g in groups]
    schema = fastavro.parse_schema(LOG_EVENT_SCHEMA)
    fp = fingerprint(schema)
    datums = []
    for d in _avro_datums(n_lines // 4):
        out = io.BytesIO()
        fastavro.schemaless_writer(out, schema, d)
        datums.append(out.getvalue())
    inputs["avro_raw"] = datums
    inputs["avro_single_object"] = [b"\xc3\x01" + fp + d for d in datums]
    inputs["avro_confluent"] = [b"\x00" + SCHEMA_ID.to_bytes(4, "big") + d for d in datums]
    inputs["text"] = [
        f"{r.get('level', r.get('severity'))} {r.get('service', r.get('app'))} "
        f"{r.get('message', r.get('msg'))} host={r['host']}".encode()
        for r in log_records(n_lines // 2, seed=9)
    ]
    return inputs


def _decoder_config(workdir: Path) -> DecoderConfig:
    schema_path = workdir / "log_event.avsc"
    schema_path.write_bytes(orjson.dumps(LOG_EVENT_SCHEMA))
    registry = workdir / "registry"
    registry.mkdir(exist_ok=True)
    (registry / f"{SCHEMA_ID}.avsc").write_bytes(orjson.dumps(LOG_EVENT_SCHEMA))
    return load_config(schema_path, registry)


def _tideway(records: list[bytes], config: DecoderConfig) -> Callable[[], int]:
    def run() -> int:
        return sum(decode_record(r, config).line_count for r in records)

    return run


def _aws_kinesis_agg(records: list[bytes]) -> Callable[[], int]:
    from aws_kinesis_agg.deaggregator import iter_deaggregate_records

    wrapped = [
        {"SequenceNumber": str(i), "PartitionKey": "p", "ApproximateArrivalTimestamp": 0, "Data": r}
        for i, r in enumerate(records)
    ]

    def run() -> int:
        return sum(1 for _ in iter_deaggregate_records(wrapped, data_format="Boto3"))

    return run


def run_variant(
    name: str, fmt: str, inputs_path: Path, seconds: float, core: int
) -> dict[str, Any]:
    """Time one variant in this process (pinned to ``core``); its rates and peak RSS."""
    os.sched_setaffinity(0, {core})
    records: list[bytes] = pickle.loads(inputs_path.read_bytes())
    config = DecoderConfig()  # the default: no Avro schema, so no raw-Avro attempt
    if fmt.startswith("avro"):
        with tempfile.TemporaryDirectory() as tmp:
            config = _decoder_config(Path(tmp))
    job = _aws_kinesis_agg(records) if name == "aws_kinesis_agg" else _tideway(records, config)
    lines = job()  # warm-up, and the line count of one pass
    passes = 0
    start = time.perf_counter()
    while True:
        job()
        passes += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            break
    size = sum(map(len, records))
    return {
        "lines_per_s": round(lines * passes / elapsed),
        "records_per_s": round(len(records) * passes / elapsed),
        "mb_per_s": round(size * passes / elapsed / 1e6, 1),
        "peak_rss_mb": _peak_rss_mb(),
        "records": len(records),
        "lines": lines,
        "bytes": size,
    }


def _peak_rss_mb() -> float:
    # VmHWM belongs to this process image; ru_maxrss would carry the parent's over exec.
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


VARIANTS: list[tuple[str, str]] = [
    ("tideway_envelope", "envelope"),
    ("tideway_kpl", "kpl"),
    ("aws_kinesis_agg", "kpl"),
    ("tideway_cloudwatch", "cloudwatch"),
    ("tideway_json", "json"),
    ("tideway_ndjson_gzip", "ndjson_gzip"),
    ("tideway_ndjson_zstd", "ndjson_zstd"),
    ("tideway_avro_raw", "avro_raw"),
    ("tideway_avro_single_object", "avro_single_object"),
    ("tideway_avro_confluent", "avro_confluent"),
    ("tideway_text", "text"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small input, short runs (< 30 s)")
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--format", help=argparse.SUPPRESS)
    parser.add_argument("--inputs", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    core = max(os.sched_getaffinity(0))
    if args.variant:  # child: one variant, result as JSON on stdout
        result = run_variant(args.variant, args.format, args.inputs, args.seconds, core)
        print(json.dumps(result))
        return
    seconds = 0.8 if args.quick else 4.0
    inputs = build_inputs(args.quick)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for fmt, records in inputs.items():
            (Path(tmp) / f"{fmt}.pickle").write_bytes(pickle.dumps(records))
        for name, fmt in VARIANTS:
            inputs_path = Path(tmp) / f"{fmt}.pickle"
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--variant",
                    name,
                    "--format",
                    fmt,
                    "--inputs",
                    str(inputs_path),
                    "--seconds",
                    str(seconds),
                ],
                check=True,
                capture_output=True,
                text=True,
            )
            results[name] = {"format": fmt, **json.loads(out.stdout)}
    report = {
        "benchmark": "decoders",
        "quick": args.quick,
        "input": {
            "lines": sum(r["lines"] for n, r in results.items() if n != "aws_kinesis_agg"),
            "bytes": sum(map(len, (b for recs in inputs.values() for b in recs))),
            "records": {fmt: len(recs) for fmt, recs in inputs.items()},
            "lines_per_envelope_record": LINES_PER_RECORD,
            "kpl_aggregate_max_bytes": 51_200,
            "cpu_core": core,
            "python": sys.version.split()[0],
        },
        "results": results,
    }
    path = RESULTS.with_suffix(".quick.json") if args.quick else RESULTS  # never over a full run
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{'variant':28} {'records/s':>10} {'lines/s':>11} {'MB/s':>7} {'rss MB':>7}")
    for name, r in results.items():
        print(
            f"{name:28} {r['records_per_s']:>10,} {r['lines_per_s']:>11,} "
            f"{r['mb_per_s']:>7} {r['peak_rss_mb']:>7}"
        )
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
