"""Peak RSS of one worker that inherits many shards with open intents (issue 14 item 5).

Writes ``--shards`` shards of ``--records`` JSON records of ``--size`` bytes each to a moto
stream, leaves every shard leased to a dead worker with an open intent (a crash between
intent and checkpoint), then runs ``tideway consume --drain`` with
``TIDEWAY_MEMORY_BUDGET_BYTES`` set to each of ``--budgets`` (MiB) in a child process and
reports its peak RSS beside an idle worker's (the same stream, nothing to read).

Intents (``--intents``): ``charged`` (default) as the dead workers wrote them, each holding
one shard under the same budget: the records up to the first flush its memory trigger
makes (at most the whole shard), with the flush's charge recorded; ``whole``: one intent
over each whole shard without a recorded charge (written by a worker with a larger budget,
or by older code), which a replay must rebuild whole whatever the budget.

    .venv/bin/python benchmarks/takeover_rss.py --shards 12 --records 150 --size 100000

Writes benchmarks/results/takeover_rss.json. ``--service-path DIR`` runs another copy of
the package (``git archive <commit> service | tar -x -C DIR``) for a before/after figure.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3

from benchmarks.common import write_results
from service.consume.buffer import ShardBuffer
from service.decode import DecoderConfig, RecordMeta
from service.local import moto_server

MIB = 1024 * 1024
# The consumer's own peak: VmHWM, written when it exits. Not ru_maxrss of children: Linux
# keeps ru_maxrss across fork+exec, so a child of this process (which runs moto, holding
# every record written) would report this process's peak, whatever the child did.
PEAK_PREFIX = "tideway-peak-rss-kib "
CONSUME = f"""
import atexit, runpy, sys
def peak():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            sys.stderr.write("{PEAK_PREFIX}" + line.split()[1] + "\\n")
atexit.register(peak)
sys.argv = ["tideway", "consume", "--drain"]
runpy.run_module("service", run_name="__main__")
"""


def record(i: int, size: int) -> bytes:
    return json.dumps({"message": f"{i} {'x' * size}", "service": "api"}).encode()


def charged_intent(records: int, size: int, budget: int) -> tuple[int, int]:
    """How many records a worker holding one shard under ``budget`` flushes at once (its
    memory trigger: the buffer's charge reaches the budget), and that flush's charge."""
    buffer = ShardBuffer()
    for i in range(records):
        buffer.add(record(i, size), RecordMeta("s", i + 1, 0), DecoderConfig(), now=0.0)
        if buffer.charge >= budget:
            return i + 1, buffer.charge
    return records, buffer.charge


def one_run(args: argparse.Namespace, budget: int) -> dict[str, Any]:
    """Set up a fresh stream with open intents and measure one ``consume --drain``."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with moto_server() as endpoint:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TIDEWAY_")}
        env.update(
            AWS_ENDPOINT_URL=endpoint,
            AWS_REGION="us-east-1",
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            TIDEWAY_STREAM="rss",
            TIDEWAY_BUCKET="rss",
            TIDEWAY_SHARD_COUNT=str(args.shards),
            TIDEWAY_MEMORY_BUDGET_BYTES=str(budget),
            TIDEWAY_LEASE_DURATION="2",
            TIDEWAY_IDLE_WAIT="0.1",
        )
        if args.service_path:
            env["PYTHONPATH"] = args.service_path
        tideway = [sys.executable, "-m", "service"]
        cwd = args.service_path or None  # ``python -m`` puts the working directory first
        subprocess.run([*tideway, "setup"], env=env, check=True, capture_output=True, cwd=cwd)
        kinesis = boto3.client("kinesis", endpoint_url=endpoint, region_name="us-east-1")
        ddb = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1")
        intent_records, charge = charged_intent(args.records, args.size, budget)
        if args.intents == "whole":
            intent_records = args.records
        for shard in kinesis.list_shards(StreamName="rss")["Shards"] if args.records else []:
            key = shard["HashKeyRange"]["StartingHashKey"]
            seqs: list[str] = []
            for start in range(0, args.records, 20):
                entries = [
                    {"Data": record(i, args.size), "PartitionKey": "k", "ExplicitHashKey": key}
                    for i in range(start, min(args.records, start + 20))
                ]
                resp = kinesis.put_records(StreamName="rss", Records=entries)
                seqs.extend(r["SequenceNumber"] for r in resp["Records"])
            item: dict[str, Any] = {
                "shard_id": {"S": shard["ShardId"]},
                "owner": {"S": "dead"},
                "epoch": {"N": "1"},
                "parents": {"L": []},
                "intent_first": {"S": seqs[0]},
                "intent_last": {"S": seqs[intent_records - 1]},
            }
            if args.intents == "charged":
                item["intent_bytes"] = {"N": str(charge)}
            ddb.put_item(TableName="rss-leases", Item=item)
        started = time.monotonic()
        run = subprocess.run(
            [sys.executable, "-c", CONSUME],
            check=False,
            env=env,
            capture_output=True,
            timeout=900,
            cwd=cwd,
        )
        if run.returncode:
            raise RuntimeError(run.stderr.decode()[-3000:])
        return {
            "budget_mib": budget / MIB,
            "intents": args.intents if args.records else "none",
            "intent_records": intent_records if args.records else 0,
            "intent_mb": round(intent_records * args.size / 1e6, 1) if args.records else 0,
            "peak_rss_mb": round(consumer_peak_kib(run.stderr.decode()) / 1024, 1),
            "seconds": round(time.monotonic() - started, 1),
        }


def consumer_peak_kib(stderr: str) -> int:
    lines = [ln for ln in stderr.splitlines() if ln.startswith(PEAK_PREFIX)]
    if not lines:
        raise RuntimeError("the consumer did not report its peak RSS:\n" + stderr[-2000:])
    return int(lines[-1][len(PEAK_PREFIX) :])


def child(args: argparse.Namespace, extra: list[str]) -> dict[str, Any]:
    """One run in a fresh process (a fresh moto server and stream)."""
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.takeover_rss", "--one", *extra],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
    )
    if proc.returncode:
        raise RuntimeError(proc.stderr[-3000:])
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shards", type=int, default=12)
    ap.add_argument("--records", type=int, default=150)
    ap.add_argument("--size", type=int, default=100_000)
    ap.add_argument("--budgets", default="32,64,256", help="MiB, comma separated")
    ap.add_argument("--intents", choices=("charged", "whole"), default="charged")
    ap.add_argument("--service-path", default="")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    budgets = [int(float(b) * MIB) for b in args.budgets.split(",")]
    if args.one:
        print(json.dumps(one_run(args, budgets[0])))
        return
    common = [f"--shards={args.shards}", f"--size={args.size}", f"--intents={args.intents}"]
    if args.service_path:
        common.append(f"--service-path={args.service_path}")
    idle = child(args, [*common, "--records=0", f"--budgets={args.budgets.split(',')[0]}"])
    results: dict[str, Any] = {"idle": idle}
    for mib, budget in zip(args.budgets.split(","), budgets, strict=True):
        run = child(args, [*common, f"--records={args.records}", f"--budgets={mib}"])
        run["over_idle_mb"] = round(run["peak_rss_mb"] - idle["peak_rss_mb"], 1)
        run["over_idle_per_budget"] = round(run["over_idle_mb"] * 1e6 / budget, 2)
        results[f"budget_{mib}"] = run
        print(json.dumps({f"budget_{mib}": run}), flush=True)
    path = write_results(
        "takeover_rss",
        quick=False,
        lines=args.shards * args.records,
        input_bytes=args.shards * args.records * args.size,
        results={"tideway": results},
        extra={"shards": args.shards, "record_bytes": args.size, "intents": args.intents},
    )
    print(json.dumps({"idle": idle}), "->", path)


if __name__ == "__main__":
    main()
