"""Simulates shard assignment at fleet scale: joins, graceful leaves and crashes.

Pure (no AWS): 1,000 shards over 100 workers, then a seeded sequence of membership
changes. For each change it records the load spread and how many shards changed owner,
for Tideway's sticky balanced rendezvous (service/consume/assign.py) and for the previous
algorithm (bounded-load rendezvous over shards in sorted order, no memory of owners).

    .venv/bin/python benchmarks/assignment.py [--quick] [--markdown]

Writes benchmarks/results/assignment.json; --markdown prints the table for docs/assignment.md.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.consume.assign import assign, moved, rank

Assigner = Callable[[list[str], list[str], Mapping[str, str]], dict[str, str]]


def sorted_bounded_rendezvous(
    shards: Iterable[str], workers: Iterable[str], _current: Mapping[str, str]
) -> dict[str, str]:
    """The previous algorithm: each shard in sorted order to its best worker with room."""
    worker_list = sorted(set(workers))
    shard_list = sorted(set(shards))
    capacity = -(-len(shard_list) // len(worker_list))
    load = dict.fromkeys(worker_list, 0)
    out = {}
    for shard in shard_list:
        for worker in sorted(worker_list, key=lambda w: rank(shard, w), reverse=True):
            if load[worker] < capacity:
                out[shard] = worker
                load[worker] += 1
                break
    return out


def sticky(shards: list[str], workers: list[str], current: Mapping[str, str]) -> dict[str, str]:
    return assign(shards, workers, current)


def events(seed: int, rounds: int) -> list[tuple[str, int]]:
    """A seeded mix of membership changes: (kind, count)."""
    rng = random.Random(seed)
    out = [("join", 1)] * rounds + [("leave", 1)] * rounds + [("crash", 1)] * rounds
    out += [("join", 10), ("crash", 10), ("leave", 10)]
    rng.shuffle(out)
    return out


def simulate(
    assigner: Assigner, shards: int, workers: int, plan: list[tuple[str, int]], seed: int
) -> dict[str, dict[str, float]]:
    rng = random.Random(seed)
    shard_ids = [f"shardId-{i:012d}" for i in range(shards)]
    live = [f"worker-{i:03d}" for i in range(workers)]
    next_id = workers
    current = assigner(shard_ids, live, {})
    per_kind: dict[str, list[dict[str, float]]] = {}
    seconds: list[float] = []
    for kind, count in plan:
        if kind == "join":
            for _ in range(count):
                live.append(f"worker-{next_id:03d}")
                next_id += 1
        else:  # leave and crash change membership alike; a crash only delays the move
            for victim in rng.sample(live, count):
                live.remove(victim)
        started = time.perf_counter()
        after = assigner(shard_ids, live, current)
        seconds.append(time.perf_counter() - started)
        counts = [0] * len(live)
        index = {w: i for i, w in enumerate(live)}
        for w in after.values():
            counts[index[w]] += 1
        if kind == "join":
            # A balanced answer must give the newcomers their share.
            need = sum(counts[index[w]] for w in live[-count:])
        else:
            # ... and must move every shard of a worker that is gone.
            need = sum(1 for w in current.values() if w not in index)
        per_kind.setdefault(f"{kind} x{count}", []).append(
            {
                "moved": moved(current, after),
                "minimum": need,
                "max_load": max(counts),
                "min_load": min(counts),
                "spread": max(counts) - min(counts),
            }
        )
        current = after
    table = {}
    for kind, rows in sorted(per_kind.items()):
        table[kind] = {
            "changes": len(rows),
            "moved_mean": statistics.mean(r["moved"] for r in rows),
            "moved_max": max(r["moved"] for r in rows),
            "minimum_mean": statistics.mean(r["minimum"] for r in rows),
            "max_load": max(r["max_load"] for r in rows),
            "min_load": min(r["min_load"] for r in rows),
            "spread_max": max(r["spread"] for r in rows),
        }
    table["_seconds_per_assignment"] = {"mean": statistics.mean(seconds), "max": max(seconds)}
    return table


def markdown(results: dict[str, dict[str, dict[str, float]]]) -> str:
    lines = [
        "| change | changes | algorithm | shards moved (mean / max) | minimum possible (mean) | max / min shards per worker | worst spread in one change |",
        "|---|---|---|---|---|---|---|",
    ]
    kinds = [k for k in results["tideway"] if not k.startswith("_")]
    for kind in kinds:
        for name, label in (
            ("tideway", "sticky balanced rendezvous"),
            ("sorted_rendezvous", "previous: sorted bounded rendezvous"),
        ):
            r = results[name][kind]
            lines.append(
                f"| {kind} | {r['changes']:.0f} | {label} | {r['moved_mean']:.1f} / {r['moved_max']:.0f} "
                f"| {r['minimum_mean']:.1f} | {r['max_load']:.0f} / {r['min_load']:.0f} | {r['spread_max']:.0f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer changes (under a minute)")
    parser.add_argument("--markdown", action="store_true", help="print the docs table")
    parser.add_argument("--shards", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=100)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    plan = events(args.seed, 3 if args.quick else 10)
    results = {
        "tideway": simulate(sticky, args.shards, args.workers, plan, args.seed),
        "sorted_rendezvous": simulate(
            sorted_bounded_rendezvous, args.shards, args.workers, plan, args.seed
        ),
    }
    out = {
        "benchmark": "assignment",
        "quick": args.quick,
        "input": {
            "shards": args.shards,
            "workers": args.workers,
            "changes": len(plan),
            "seed": args.seed,
        },
        "results": results,
    }
    path = Path(__file__).parent / "results" / "assignment.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(markdown(results) if args.markdown else json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
