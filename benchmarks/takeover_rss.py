"""Peak RSS of one worker that inherits many shards with open intents (issue 14 item 5).

Writes ``--shards`` shards of ``--records`` JSON records of ``--size`` bytes each to a moto
stream, leaves every shard leased to a dead worker with an open intent over all of it (a
crash between intent and checkpoint), then runs ``tideway consume --drain`` with
``TIDEWAY_MEMORY_BUDGET_BYTES=--budget`` in a child process and reports its peak RSS.
``--service-path DIR`` runs another copy of the package (e.g. an older commit unpacked
with ``git archive <commit> service | tar -x -C DIR``) for a before/after figure.

    .venv/bin/python benchmarks/takeover_rss.py --shards 8 --records 300 --size 20000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import boto3

from service.local import moto_server


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--records", type=int, default=300)
    ap.add_argument("--size", type=int, default=20_000)
    ap.add_argument("--budget", type=int, default=64 * 1024 * 1024)
    ap.add_argument("--service-path", default="")
    args = ap.parse_args()
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
            TIDEWAY_MEMORY_BUDGET_BYTES=str(args.budget),
            TIDEWAY_LEASE_DURATION="2",
            TIDEWAY_IDLE_WAIT="0.1",
        )
        if args.service_path:
            env["PYTHONPATH"] = args.service_path
        tideway = [sys.executable, "-m", "service"]
        # ``python -m`` puts the working directory first on sys.path: run from the copy.
        cwd = args.service_path or None
        subprocess.run([*tideway, "setup"], env=env, check=True, capture_output=True, cwd=cwd)
        kinesis = boto3.client("kinesis", endpoint_url=endpoint, region_name="us-east-1")
        ddb = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1")
        shards = kinesis.list_shards(StreamName="rss")["Shards"]
        pad = "x" * args.size
        for shard in shards:
            key = shard["HashKeyRange"]["StartingHashKey"]
            seqs: list[str] = []
            for start in range(0, args.records, 20):
                entries = [
                    {
                        "Data": json.dumps({"message": f"{i} {pad}", "service": "api"}).encode(),
                        "PartitionKey": "k",
                        "ExplicitHashKey": key,
                    }
                    for i in range(start, min(args.records, start + 20))
                ]
                resp = kinesis.put_records(StreamName="rss", Records=entries)
                seqs.extend(r["SequenceNumber"] for r in resp["Records"])
            ddb.put_item(
                TableName="rss-leases",
                Item={
                    "shard_id": {"S": shard["ShardId"]},
                    "owner": {"S": "dead"},
                    "epoch": {"N": "1"},
                    "parents": {"L": []},
                    "intent_first": {"S": seqs[0]},
                    "intent_last": {"S": seqs[-1]},
                },
            )
        started = time.monotonic()
        run = subprocess.run(
            [*tideway, "consume", "--drain"],
            check=False,
            env=env,
            capture_output=True,
            timeout=600,
            cwd=cwd,
        )
        seconds = time.monotonic() - started
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        raw_mb = args.shards * args.records * args.size / 1e6
        print(
            json.dumps(
                {
                    "exit": run.returncode,
                    "shards": args.shards,
                    "inherited_mb": round(raw_mb, 1),
                    "budget_mb": args.budget / 2**20,
                    "peak_rss_mb": round(peak_mb, 1),
                    "seconds": round(seconds, 1),
                }
            )
        )
        if run.returncode:
            sys.stderr.write(run.stderr.decode()[-3000:])


if __name__ == "__main__":
    main()
