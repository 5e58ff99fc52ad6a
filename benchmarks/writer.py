"""Writer: decoded NDJSON lines -> hive-partitioned zstd Parquet, Tideway against engines.

    .venv/bin/python benchmarks/writer.py [--quick] [--repeat N]   # quick: 100k lines, full: 1M

Input: service.loggen (seeded; several services, nested fields, mixed time formats), cached
as NDJSON under benchmarks/data/. Every variant runs in its own process pinned to one core
(DuckDB ``SET threads=1``, Polars ``POLARS_MAX_THREADS=1``), reads the same lines and writes
``dt=/hour=/service=`` partitions with zstd into a temporary directory; the time counts
parsing, mapping, partitioning and encoding (not the generator). Each variant first runs on
the first 2,000 lines untimed (one-time library set-up: lazy imports, compiled wrappers),
then on the whole input, timed: the steady state of a long-running consumer or DuckDB
session. ``--repeat N`` runs N rounds of all variants and reports each variant's best round
and Tideway's ratio in every round, by wall and by CPU time (on a shared machine wall times
move by up to 2x between rounds; CPU time much less).

- tideway: ``plan_flush`` over decoded LineBatches of 70 lines (what the envelope decoder
  gives the consumer), i.e. the exact code path of a flush, minus the S3 upload.
- duckdb: ``read_json`` (struct columns inferred from the whole file, ``sample_size=-1``)
  + ``COPY ... PARTITION_BY``.
- duckdb_sampled: the same with DuckDB's default schema sampling (the first 20,480 lines),
  which is what a DuckDB user would run and 30-40 % faster; the parent checks that it
  infers the same columns and writes the same rows as ``duckdb``.
- polars: ``read_ndjson`` + ``write_parquet(partition_by=...)``.
- naive: ``json.loads`` per line, the mapping in Python, ``Table.from_pylist``, pyarrow.
The engines keep the inferred columns and do not build the lossless ``attributes`` column,
so they do less work than Tideway; see docs/writer.md. Tideway's ratio is taken against
the faster of the two DuckDB variants (named in ``ratios``), and against every other
variant. Writes benchmarks/results/writer.json (DESIGN §9).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from itertools import islice
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
VARIANTS = ("tideway", "duckdb", "duckdb_sampled", "polars", "naive")
DUCKDB_VARIANTS = ("duckdb", "duckdb_sampled")
WARMUP_LINES = 2_000


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


class Clock:
    """Wall and CPU time of the timed work. On a shared machine the CPU time is the steadier
    figure: another process running on the pinned core stretches the wall time only."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def stop(self) -> Clock:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu
        return self


def run_tideway(src: Path, out: Path, pipelines: Any = None) -> Clock:
    """``plan_flush`` over the input; ``pipelines`` (benchmarks/pipelines.py) routes it."""
    from service.decode.types import DecodedRecord, LineBatch, RecordMeta
    from service.sink.plan import Layout, plan_flush
    from service.sink.rules import FieldMapping

    # The records a consumer would hold, built a record at a time (the whole input as one
    # list of lines besides would raise the peak RSS above what the flush itself needs),
    # handed over to the flush as the consumer hands its buffer's (``release``).
    records = []
    with src.open("rb") as fh:
        while chunk := list(islice(fh, LINES_PER_RECORD)):
            payload = b"".join(chunk).removesuffix(b"\n")
            records.append(
                DecodedRecord(
                    RecordMeta("shardId-000000000000", len(records), ARRIVAL_US),
                    (LineBatch(payload, len(chunk), source="http"),),
                )
            )
    layout = Layout("bench", pipelines=pipelines)
    clock = Clock()
    plan = plan_flush("shardId-000000000000", records, [], layout, FieldMapping(), release=True)
    clock.stop()
    for obj in plan.objects:
        path = out / obj.key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(obj.body)
    return clock


def run_duckdb(src: Path, out: Path, sample: str = ", sample_size=-1") -> Clock:
    import duckdb

    con = duckdb.connect(config={"threads": 1})
    clock = Clock()
    con.execute(
        f"""
        COPY (
          WITH raw AS (SELECT * FROM read_json('{src}', format='newline_delimited',
                                              union_by_name=true{sample})),
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
    return clock.stop()


def run_duckdb_sampled(src: Path, out: Path) -> Clock:
    """DuckDB's default sampling: the schema inferred from the first lines only."""
    return run_duckdb(src, out, sample="")


def run_polars(src: Path, out: Path) -> Clock:
    import polars as pl

    clock = Clock()
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
    return clock.stop()


def run_naive(src: Path, out: Path) -> Clock:
    import pyarrow as pa
    import pyarrow.parquet as pq

    clock = Clock()
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
    return clock.stop()


def report(clock: Clock, out: Path) -> None:
    """Print the child's measurements, then what it wrote (read after the timer stops):
    rows, each column with its type over every file, and a digest of the files (Tideway's
    must not change for the same input: its output is byte-for-byte deterministic)."""
    import pyarrow.parquet as pq

    peak = peak_rss_mb()
    output_bytes, files = dir_stats(out)
    rows, columns = 0, set()
    digest = hashlib.sha256()  # of every file's path and bytes: same input, same digest?
    for path in sorted(out.rglob("*.parquet")):
        digest.update(f"{path.relative_to(out)}\0".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
        meta = pq.read_metadata(path)
        rows += meta.num_rows
        columns |= {f"{f.name}: {f.type}" for f in meta.schema.to_arrow_schema()}
    print(
        json.dumps(
            {
                "seconds": clock.wall,
                "cpu_seconds": clock.cpu,
                "output_bytes": output_bytes,
                "files": files,
                "peak_rss_mb": peak,
                "rows": rows,
                "columns": sorted(columns),
                "output_sha256": digest.hexdigest(),
            }
        )
    )


RUNNERS = {
    "tideway": run_tideway,
    "duckdb": run_duckdb,
    "duckdb_sampled": run_duckdb_sampled,
    "polars": run_polars,
    "naive": run_naive,
}


def child(variant: str, lines: int) -> None:
    """One variant: a warm-up run on the first WARMUP_LINES lines (one-time library set-up,
    which a long-running consumer or a DuckDB session has behind it), then the timed run."""
    pin_to_one_core()
    warm_then_time(RUNNERS[variant], dataset(lines), f"writer-{variant}-")


def warm_then_time(runner: Callable[[Path, Path], Any], src: Path, prefix: str) -> None:
    """``runner`` on the first WARMUP_LINES lines of ``src`` (untimed), then on all of it,
    reported; the output directories live under a temporary one named by ``prefix``."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        warm, warm_out, out = Path(tmp, "warm.ndjson"), Path(tmp, "warm"), Path(tmp, "out")
        with src.open("rb") as fh:
            warm.write_bytes(b"".join(islice(fh, WARMUP_LINES)))
        warm_out.mkdir()
        out.mkdir()
        runner(warm, warm_out)
        shutil.rmtree(warm_out)
        report(runner(src, out), out)


def sampling_check(full: dict[str, Any], sampled: dict[str, Any]) -> dict[str, Any]:
    """Whether DuckDB's default sampling inferred what the whole-file scan inferred."""
    only_full = sorted(set(full["columns"]) - set(sampled["columns"]))
    only_sampled = sorted(set(sampled["columns"]) - set(full["columns"]))
    return {
        "same_columns_and_types": not only_full and not only_sampled,
        "same_rows": full["rows"] == sampled["rows"],
        "rows": [full["rows"], sampled["rows"]],
        "only_with_sample_size_-1": only_full,
        "only_with_default_sampling": only_sampled,
    }


def tideway_ratios(results: dict[str, Any]) -> dict[str, Any]:
    """Tideway against the faster DuckDB variant (named), and against each variant."""
    tw = results["tideway"]

    def ratio(name: str) -> dict[str, Any]:
        r = results[name]
        return {
            "lines_per_s": round(tw["lines_per_s"] / r["lines_per_s"], 2),
            "lines_per_cpu_s": round(tw["lines_per_cpu_s"] / r["lines_per_cpu_s"], 2),
            "output_bytes": round(tw["output_bytes"] / r["output_bytes"], 2),
            "peak_rss": round(tw["peak_rss_mb"] / r["peak_rss_mb"], 2),
        }

    fastest = max(DUCKDB_VARIANTS, key=lambda name: results[name]["lines_per_s"])
    return {
        "tideway_vs_fastest_duckdb": {"baseline": fastest, **ratio(fastest)},
        **{f"tideway_vs_{name}": ratio(name) for name in results if name != "tideway"},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100k lines (under a minute)")
    parser.add_argument("--lines", type=int, default=0, help="override the number of lines")
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds of all variants (best of each reported)"
    )
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    lines = args.lines or (100_000 if args.quick else 1_000_000)
    if args.variant:
        child(args.variant, lines)
        return
    src = dataset(lines)
    size = src.stat().st_size
    results: dict[str, Any] = {}
    written: dict[str, dict[str, Any]] = {}
    rounds: list[dict[str, float]] = []
    # Rounds run the variants one after another, so a burst of load from other processes
    # hits one round; each variant's best round is reported, every round's ratio kept.
    for _ in range(args.repeat):
        rounds.append({})
        for variant in VARIANTS:
            env = {"POLARS_MAX_THREADS": "1"} if variant == "polars" else {}
            got = run_variant(Path(__file__), variant, ["--lines", str(lines)], env)
            rounds[-1][variant] = got["seconds"]
            rounds[-1][f"{variant}_cpu"] = got["cpu_seconds"]
            if variant not in written or got["seconds"] < written[variant]["seconds"]:
                written[variant] = got
    for variant, got in written.items():
        results[variant] = {
            "lines_per_s": round(lines / got["seconds"]),
            "mb_per_s": round(size / got["seconds"] / 1e6, 1),
            "lines_per_cpu_s": round(lines / got["cpu_seconds"]),
            "output_bytes": got["output_bytes"],
            "files": got["files"],
            "rows": got["rows"],
            "output_sha256": got["output_sha256"],
            "peak_rss_mb": round(got["peak_rss_mb"], 1),
        }
    ratios = tideway_ratios(results)
    sampling = sampling_check(written["duckdb"], written["duckdb_sampled"])
    doc = {
        "ratios": ratios,
        "ratio_per_round": [
            round(min(r[d] for d in DUCKDB_VARIANTS) / r["tideway"], 2) for r in rounds
        ],
        "cpu_ratio_per_round": [
            round(min(r[f"{d}_cpu"] for d in DUCKDB_VARIANTS) / r["tideway_cpu"], 2) for r in rounds
        ],
        "duckdb_sampling": sampling,
    }
    path = write_results(
        "writer",
        quick=args.quick,
        lines=lines,
        input_bytes=size,
        results=results,
        extra=doc,
    )
    print(
        f"{'variant':<16}{'lines/s':>10}{'MB/s':>8}{'output MB':>11}{'files':>7}{'rows':>9}"
        f"{'peak RSS MB':>13}"
    )
    for name, r in results.items():
        print(
            f"{name:<16}{r['lines_per_s']:>10,}{r['mb_per_s']:>8}{r['output_bytes'] / 1e6:>11.1f}"
            f"{r['files']:>7}{r['rows']:>9}{r['peak_rss_mb']:>13}"
        )
    for name, ratio in ratios.items():
        print(
            f"{name}: {ratio['lines_per_s']}x lines/s ({ratio['lines_per_cpu_s']}x per CPU s), "
            f"{ratio['output_bytes']}x output bytes, "
            f"{ratio['peak_rss']}x peak RSS"
            + (f" (baseline {ratio['baseline']})" if "baseline" in ratio else "")
        )
    print(f"tideway / fastest duckdb per round: {doc['ratio_per_round']} (wall)")
    print(f"tideway / fastest duckdb per round: {doc['cpu_ratio_per_round']} (CPU time)")
    print(f"duckdb default sampling vs sample_size=-1: {json.dumps(sampling)}")
    print(f"wrote {path.relative_to(path.parents[2])}")


if __name__ == "__main__":
    main()
