"""End-to-end benchmark: HTTP -> Kinesis -> Parquet on S3, against moto on loopback.

Variants, each in its own subprocess (so peak RSS is its own) with its own moto server,
on the same generated lines:
  tideway  `serve` (group commit into envelopes) + `consume --drain` (columnar writer)
  naive    one line per Kinesis record via PutRecords (500 per call), GetRecords,
           json.loads + pyarrow.Table.from_pylist, one Parquet object per shard
moto bounds both (it does ~10-30 PutRecords calls/s), so the figures that transfer to AWS
are Kinesis records and calls per GB; wall time is reported as measured here.

    .venv/bin/python benchmarks/e2e.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def run_tideway(lines: list[bytes]) -> dict[str, Any]:
    from service.consume.runner import consume
    from service.demo import ship
    from service.ingest.server import serve
    from service.local import free_port
    from service.resources import setup
    from service.settings import Settings

    settings = Settings.load(
        None,
        stream="bench",
        bucket="bench-e2e",
        shard_count=2,
        port=free_port(),
        host="127.0.0.1",
        idle_wait=0.1,
        emf_interval=0,
    )
    await setup(settings)
    start = time.perf_counter()
    stop = asyncio.Event()
    bound: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(settings, stop, bound))
    port = await bound
    sent = await ship(f"http://127.0.0.1:{port}/ingest", lines)
    stop.set()
    await task
    worker = await consume(settings.model_copy(update={"port": None}), asyncio.Event(), drain=True)
    seconds = time.perf_counter() - start
    return {"sent": sent, "seconds": seconds, "rows": worker.ctx.metrics.rows._value.get()}


def run_naive(lines: list[bytes]) -> dict[str, Any]:
    import boto3
    import orjson
    import pyarrow as pa
    import pyarrow.parquet as pq

    kinesis = boto3.client("kinesis")
    s3 = boto3.client("s3")
    kinesis.create_stream(StreamName="bench", ShardCount=2)
    s3.create_bucket(Bucket="bench-e2e")
    start = time.perf_counter()
    calls = 0
    for i in range(0, len(lines), 500):
        chunk = lines[i : i + 500]
        kinesis.put_records(
            StreamName="bench",
            Records=[{"Data": d, "PartitionKey": str(i + j)} for j, d in enumerate(chunk)],
        )
        calls += 1
    rows = 0
    for shard in kinesis.list_shards(StreamName="bench")["Shards"]:
        it = kinesis.get_shard_iterator(
            StreamName="bench", ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        objs: list[dict[str, Any]] = []
        while True:
            resp = kinesis.get_records(ShardIterator=it, Limit=10000)
            objs.extend(orjson.loads(r["Data"]) for r in resp["Records"])
            if not resp["Records"]:
                break
            it = resp["NextShardIterator"]
        table = pa.Table.from_pylist(
            [{k: json.dumps(v) if isinstance(v, dict) else v for k, v in o.items()} for o in objs]
        )
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        s3.put_object(
            Bucket="bench-e2e", Key=f"logs/{shard['ShardId']}.parquet", Body=buf.getvalue()
        )
        rows += table.num_rows
    return {
        "sent": len(lines),
        "seconds": time.perf_counter() - start,
        "rows": rows,
        "kinesis_records": len(lines),
        "put_records_calls": calls,
    }


def _objects_bytes() -> tuple[int, int]:
    import boto3

    s3 = boto3.client("s3")
    objs = s3.list_objects_v2(Bucket="bench-e2e", Prefix="logs/").get("Contents", [])
    return len(objs), sum(o["Size"] for o in objs)


def child(variant: str, count: int) -> None:
    from service.local import moto_server
    from service.loggen import ndjson_lines

    lines = ndjson_lines(count)
    with moto_server():
        if variant == "tideway":
            out = asyncio.run(run_tideway(lines))
            import boto3

            kinesis = boto3.client("kinesis")
            records = 0
            for shard in kinesis.list_shards(StreamName="bench")["Shards"]:
                it = kinesis.get_shard_iterator(
                    StreamName="bench", ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
                )["ShardIterator"]
                resp = kinesis.get_records(ShardIterator=it, Limit=10000)
                records += len(resp["Records"])
            out["kinesis_records"] = records
        else:
            out = run_naive(lines)
        out["files"], out["output_bytes"] = _objects_bytes()
    bytes_in = sum(len(x) + 1 for x in lines)
    out.update(
        lines_per_s=round(count / out["seconds"], 1),
        mb_per_s=round(bytes_in / 1e6 / out["seconds"], 3),
        kinesis_records_per_gb=round(out["kinesis_records"] / (bytes_in / 1e9)),
        peak_rss_mb=round(_peak_rss_mb(), 1),
        bytes_in=bytes_in,
    )
    print(json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--variant")
    parser.add_argument("--lines", type=int)
    args = parser.parse_args()
    count = args.lines or (3000 if args.quick else 20000)
    if args.variant:
        child(args.variant, count)
        return
    results: dict[str, Any] = {}
    for variant in ("tideway", "naive"):
        proc = subprocess.run(
            [sys.executable, __file__, "--variant", variant, "--lines", str(count)],
            capture_output=True,
            text=True,
            check=True,
            timeout=1800,
        )
        results[variant] = json.loads(proc.stdout.strip().splitlines()[-1])
    t, n = results["tideway"], results["naive"]
    out = {
        "benchmark": "e2e",
        "quick": args.quick,
        "input": {"lines": count, "bytes": t["bytes_in"]},
        "results": results,
        "ratios": {
            "tideway_vs_naive_lines_per_s": round(t["lines_per_s"] / n["lines_per_s"], 2),
            "kinesis_records_naive_per_tideway": round(
                n["kinesis_records"] / max(1, t["kinesis_records"]), 1
            ),
            "output_bytes_tideway_vs_naive": round(t["output_bytes"] / n["output_bytes"], 2),
        },
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    # A quick run never overwrites the full one.
    (RESULTS / ("e2e.quick.json" if args.quick else "e2e.json")).write_text(
        json.dumps(out, indent=2) + "\n"
    )
    print(
        f"{'variant':10} {'lines/s':>10} {'MB/s':>8} {'kinesis rec':>12} {'files':>6} {'out bytes':>10} {'rss MB':>7}"
    )
    for name, r in results.items():
        print(
            f"{name:10} {r['lines_per_s']:>10} {r['mb_per_s']:>8} {r['kinesis_records']:>12} {r['files']:>6} {r['output_bytes']:>10} {r['peak_rss_mb']:>7}"
        )
    print(json.dumps(out["ratios"]))


if __name__ == "__main__":
    main()
