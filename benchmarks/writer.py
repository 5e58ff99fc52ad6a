"""Writer: decoded NDJSON lines -> hive-partitioned zstd Parquet, Tideway against engines.

    .venv/bin/python benchmarks/writer.py [--quick]      # quick: 100k lines, full: 1M

Input: service.loggen (seeded; several services, nested fields, mixed time formats), cached
as NDJSON under benchmarks/data/. Every variant runs in its own process pinned to one core
(DuckDB ``SET threads=1``, Polars ``POLARS_MAX_THREADS=1``), reads the same lines and writes
``dt=/hour=/service=`` partitions with zstd into a temporary directory; the time counts
parsing, mapping, partitioning and encoding (not the generator).

- tideway: ``plan_flush`` over decoded LineBatches of 70 lines (what the envelope decoder
  gives the consumer), i.e. the exact code path of a flush, minus the S3 upload.
- duckdb: ``read_json`` (inferred struct columns) + ``COPY ... PARTITION_BY``.
- polars: ``read_ndjson`` + ``write_parquet(partition_by=...)``.
- naive: ``json.loads`` per line, the mapping in Python, ``Table.from_pylist``, pyarrow.
The engines keep the inferred columns and do not build the lossless ``attributes`` column,
so they do less work than Tideway; see docs/writer.md.
Writes benchmarks/results/writer.json (DESIGN §9).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import (  # noqa: E402
    DATA_DIR,
    peak_rss_mb,
    pin_to_one_core,
    run_variant,
    write_results,
)

LINES_PER_RECORD = 70
ARRIVAL_US = 1_795_687_200_000_000  # 2026-11-26T06:00Z, inside the window of loggen times
VARIANTS = ("tideway", "duckdb", "polars", "naive")


def dataset(lines: int) -> Path:
    """The cached NDJSON input (generated once per size)."""
    from service.loggen import ndjson_lines

    path = DATA_DIR / f"writer-{lines}.ndjson"
    if not path.exists():
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(b"\n".join(ndjson_lines(lines, seed=11)) + b"\n")
        tmp.rename(path)
    return path


def dir_stats(out: Path) -> tuple[int, int]:
    files = [p for p in out.rglob("*.parquet") if p.is_file()]
    return sum(p.stat().st_size for p in files), len(files)


def run_tideway(src: Path, out: Path) -> None:
    from service.decode.types import DecodedRecord, LineBatch, RecordMeta
    from service.sink.plan import Layout, plan_flush
    from service.sink.rules import FieldMapping

    lines = src.read_bytes().rstrip(b"\n").split(b"\n")
    records = [
        DecodedRecord(
            RecordMeta("shardId-000000000000", i, ARRIVAL_US),
            (LineBatch(b"\n".join(chunk), len(chunk), source="http"),),
        )
        for i, chunk in enumerate(
            lines[j : j + LINES_PER_RECORD] for j in range(0, len(lines), LINES_PER_RECORD)
        )
    ]
    del lines
    start = time.perf_counter()
    plan = plan_flush("shardId-000000000000", records, [], Layout("bench"), FieldMapping())
    elapsed = time.perf_counter() - start
    for obj in plan.objects:
        path = out / obj.key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(obj.body)
    report(elapsed, out)


def run_duckdb(src: Path, out: Path) -> None:
    import duckdb

    con = duckdb.connect(config={"threads": 1})
    start = time.perf_counter()
    con.execute(
        f"""
        COPY (
          WITH raw AS (SELECT * FROM read_json('{src}', format='newline_delimited',
                                              sample_size=-1, union_by_name=true)),
          t AS (SELECT *, coalesce(
                  try_cast("timestamp"::VARCHAR AS TIMESTAMPTZ),
                  try_cast("@timestamp"::VARCHAR AS TIMESTAMPTZ),
                  to_timestamp(try_cast("time" AS DOUBLE) / 1000),
                  to_timestamp(try_cast(ts AS DOUBLE))) AS event_time FROM raw)
          SELECT * EXCLUDE (service, app),
                 strftime(event_time AT TIME ZONE 'UTC', '%Y-%m-%d') AS dt,
                 strftime(event_time AT TIME ZONE 'UTC', '%H') AS hour,
                 coalesce(service, app) AS service_part
          FROM t
        ) TO '{out}/logs' (FORMAT parquet, PARTITION_BY (dt, hour, service_part),
                           COMPRESSION zstd, ROW_GROUP_SIZE 1000000)
        """
    )
    report(time.perf_counter() - start, out)


def run_polars(src: Path, out: Path) -> None:
    import polars as pl

    start = time.perf_counter()
    df = pl.read_ndjson(src, infer_schema_length=None)
    event = pl.coalesce(
        pl.col("timestamp").str.to_datetime(time_zone="UTC", strict=False),
        pl.col("@timestamp").str.to_datetime(time_zone="UTC", strict=False),
        pl.from_epoch(pl.col("time"), time_unit="ms").dt.replace_time_zone("UTC"),
        pl.from_epoch((pl.col("ts") * 1e6).cast(pl.Int64), time_unit="us").dt.replace_time_zone(
            "UTC"
        ),
    )
    df = df.with_columns(
        event.dt.strftime("%Y-%m-%d").alias("dt"),
        event.dt.strftime("%H").alias("hour"),
        pl.coalesce("service", "app").alias("service_part"),
    ).drop("service", "app")
    df.write_parquet(out / "logs", compression="zstd", partition_by=["dt", "hour", "service_part"])
    report(time.perf_counter() - start, out)


def run_naive(src: Path, out: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    start = time.perf_counter()
    rows: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    with src.open("rb") as fh:
        for raw in fh:
            obj = json.loads(raw)
            when = obj.pop("timestamp", None) or obj.pop("@timestamp", None)
            if when is None:
                epoch = obj.pop("time", 0) / 1000 if "time" in obj else obj.pop("ts", 0)
                when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch))
            service = obj.pop("service", None) or obj.pop("app", None) or "unknown"
            row = {
                "timestamp": when,
                "severity_text": obj.pop("level", None) or obj.pop("severity", None),
                "message": obj.pop("message", None) or obj.pop("msg", None),
                "host": obj.pop("host", None),
                "trace_id": obj.pop("trace_id", None),
                "span_id": obj.pop("span_id", None),
                "attributes": json.dumps(obj),
            }
            rows.setdefault((when[:10], when[11:13], service), []).append(row)
    for (dt, hour, service), part in sorted(rows.items()):
        path = out / f"logs/dt={dt}/hour={hour}/service={service}/part.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(part), path, compression="zstd")
    report(time.perf_counter() - start, out)


def report(elapsed: float, out: Path) -> None:
    output_bytes, files = dir_stats(out)
    print(
        json.dumps(
            {
                "seconds": elapsed,
                "output_bytes": output_bytes,
                "files": files,
                "peak_rss_mb": peak_rss_mb(),
            }
        )
    )


def child(variant: str, lines: int) -> None:
    pin_to_one_core()
    src = dataset(lines)
    with tempfile.TemporaryDirectory(prefix=f"writer-{variant}-") as tmp:
        {"tideway": run_tideway, "duckdb": run_duckdb, "polars": run_polars, "naive": run_naive}[
            variant
        ](src, Path(tmp))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100k lines (under a minute)")
    parser.add_argument("--lines", type=int, default=0, help="override the number of lines")
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    lines = args.lines or (100_000 if args.quick else 1_000_000)
    if args.variant:
        child(args.variant, lines)
        return
    src = dataset(lines)
    size = src.stat().st_size
    results: dict[str, Any] = {}
    for variant in VARIANTS:
        env = {"POLARS_MAX_THREADS": "1"} if variant == "polars" else {}
        got = run_variant(Path(__file__), variant, ["--lines", str(lines)], env)
        results[variant] = {
            "lines_per_s": round(lines / got["seconds"]),
            "mb_per_s": round(size / got["seconds"] / 1e6, 1),
            "output_bytes": got["output_bytes"],
            "files": got["files"],
            "peak_rss_mb": round(got["peak_rss_mb"], 1),
        }
    tw = results["tideway"]
    ratios = {
        f"tideway_vs_{name}": {
            "lines_per_s": round(tw["lines_per_s"] / r["lines_per_s"], 2),
            "output_bytes": round(tw["output_bytes"] / r["output_bytes"], 2),
        }
        for name, r in results.items()
        if name != "tideway"
    }
    path = write_results(
        "writer",
        quick=args.quick,
        lines=lines,
        input_bytes=size,
        results=results,
        extra={"ratios": ratios},
    )
    print(
        f"{'variant':<10}{'lines/s':>12}{'MB/s':>8}{'output MB':>11}{'files':>7}{'peak RSS MB':>13}"
    )
    for name, r in results.items():
        print(
            f"{name:<10}{r['lines_per_s']:>12,}{r['mb_per_s']:>8}{r['output_bytes'] / 1e6:>11.1f}"
            f"{r['files']:>7}{r['peak_rss_mb']:>13}"
        )
    for name, ratio in ratios.items():
        print(f"{name}: {ratio['lines_per_s']}x lines/s, {ratio['output_bytes']}x output bytes")
    print(f"wrote {path.relative_to(path.parents[2])}")


if __name__ == "__main__":
    main()
