"""Snapshots per table, TIDEWAY_ICEBERG_COMMITTER=worker against elected, for N shards over
W workers in the simulation (calm profile: no faults, so both modes read the same records
and the count is the committers' alone). Run it::

    .venv/bin/python -m tests.sim.commits [--seed 5] [--cases 16x4,64x8,128x16]

It prints a markdown table (docs/tables.md "Measured: commits per table") and the
exactly-once invariants of every run (a run with a violation is reported, not counted).
Virtual time: the figures are counts, not durations, so a loaded machine does not change
them.
"""

from __future__ import annotations

import argparse
import time

from tests.sim.world import simulate

MODES = ("worker", "elected")
RECORDS_PER_SHARD = 10  # over 40 virtual seconds, 1-4 lines each


def measure(seed: int, shards: int, fleet: int, committer: str) -> dict[str, object]:
    """One calm run of ``shards`` shards over ``fleet`` workers, RECORDS_PER_SHARD records a
    shard (so every shard flushes several times); its process CPU seconds beside."""
    started = time.process_time()
    result = simulate(
        seed,
        "calm",
        iceberg=True,
        committer=committer,
        shards=shards,
        fleet=fleet,
        records=RECORDS_PER_SHARD * shards,
    )
    return {
        "snapshots": result.stats["snapshots"],
        "flushes": result.stats["flushes_committed"],
        "records": result.stats["records"],
        "violations": result.violations[:3],
        "cpu_s": round(time.process_time() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--cases", default="16x4,64x8,128x16")
    args = parser.parse_args()
    print("| shards x workers | mode | snapshots | flushes | flushes per snapshot | CPU s |")
    print("|---|---|---:|---:|---:|---:|")
    for case in args.cases.split(","):
        shards, fleet = (int(x) for x in case.split("x"))
        for mode in MODES:
            m = measure(args.seed, shards, fleet, mode)
            if m["violations"]:
                print(f"| {case} | {mode} | VIOLATED: {m['violations']} | | | |")
                continue
            snaps, flushes = int(str(m["snapshots"])), int(str(m["flushes"]))
            ratio = flushes / snaps if snaps else 0.0
            print(f"| {case} | {mode} | {snaps} | {flushes} | {ratio:.2f} | {m['cpu_s']} |")


if __name__ == "__main__":
    main()
