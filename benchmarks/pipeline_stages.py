"""Where a pipelined flush's CPU time goes: benchmarks/pipelines.py's input and document
through ``plan_flush`` in one process, with and without the pipelines, each stage timed
inside the flush it belongs to (issue 18).

    .venv/bin/python benchmarks/pipeline_stages.py [--lines N] [--rounds N] [--fresh]

Stages timed alone (outside a flush, on data a loop has made warm) come out lower than
they cost inside one: a tuning pass that added up such figures found a fifth of the gap
between the two flushes "unaccounted". Here every stage is a CPU-time counter around the
function the flush itself calls, so the stages and the flush's total are read in the same
run, and what the stages miss is printed as ``other``. The variants alternate, ``--rounds``
times after one untimed round each, in this process (a long-running consumer's steady
state) or, with ``--fresh``, each flush in a process of its own after the benchmark's
warm-up (what benchmarks/pipelines.py times: a fresh process takes every page it touches
from the kernel). The median round of each is printed, in CPU seconds
per 100,000 lines, with the kernel's share (``sys``, in the total) and the minor page
faults (``page_faults_k``, thousands). Nothing is written to disk (the plan stays in memory).

Stages: ``build_rows`` (mapping, the same in both), ``route`` (``Pipelines.routes``, each
destination as the writer asks for it: its
``parse``, ``redact`` and ``conditions`` inside it, the rest being filters and the version
column), ``data_objects`` (per destination: partitioning, gathers, lineage) with its
``encode`` (Parquet) inside it. ``lineage_join`` counts every ``Lineage.join``, the one
``routed`` makes of the whole flush for the conditions included.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402,F401  (imported before pyarrow, as the service imports it)

from benchmarks.common import pin_to_one_core  # noqa: E402
from benchmarks.pipelines import DOCUMENT, pipeline_input  # noqa: E402
from benchmarks.writer import ARRIVAL_US, LINES_PER_RECORD, WARMUP_LINES  # noqa: E402

SHARD = "shardId-000000000000"
# (stage, module, class or "" for the module itself, the attribute the flush calls).
STAGES = (
    ("build_rows", "service.sink.plan", "", "build_rows"),
    ("data_objects", "service.sink.plan", "", "data_objects"),
    ("encode", "service.sink.plan", "", "encode_parquet"),
    ("route", "service.pipeline.engine", "Pipelines", "routes"),
    ("parse", "service.pipeline.engine", "", "_parsed"),
    ("conditions", "service.pipeline.condition", "Condition", "mask"),
    ("lineage_join", "service.sink.lineage", "Lineage", "join"),
)


def records_of(src: Path) -> list[Any]:
    """The records a consumer would hold for ``src`` (benchmarks/writer.py's run_tideway)."""
    from service.decode.types import DecodedRecord, LineBatch, RecordMeta

    records = []
    with src.open("rb") as fh:
        while chunk := list(islice(fh, LINES_PER_RECORD)):
            payload = b"".join(chunk).removesuffix(b"\n")
            meta = RecordMeta(SHARD, len(records), ARRIVAL_US)
            records.append(DecodedRecord(meta, (LineBatch(payload, len(chunk), source="http"),)))
    return records


def _timed(function: Callable[..., Any], spent: dict[str, float], stage: str) -> Any:
    def run(*args: Any, **kwargs: Any) -> Any:
        start = time.process_time()
        try:
            return function(*args, **kwargs)
        finally:
            spent[stage] = spent.get(stage, 0.0) + time.process_time() - start

    return run


def _timed_steps(function: Callable[..., Any], spent: dict[str, float], stage: str) -> Any:
    """``_timed`` for a generator: each step it takes (the writer asks ``routes`` for one
    destination at a time, between its files)."""

    def run(*args: Any, **kwargs: Any) -> Any:
        steps = function(*args, **kwargs)
        while True:
            start = time.process_time()
            try:
                item = next(steps)
            except StopIteration:
                return
            finally:
                spent[stage] = spent.get(stage, 0.0) + time.process_time() - start
            yield item

    return run


@contextmanager
def stage_clocks(pipelines: Any | None) -> Iterator[dict[str, float]]:
    """Counters around every stage (and the pipelines' redactor, if any), removed on exit."""
    spent: dict[str, float] = {}
    saved = []
    for stage, module, cls, attribute in STAGES:
        owner: Any = importlib.import_module(module)
        owner = getattr(owner, cls) if cls else owner
        saved.append((owner, attribute, getattr(owner, attribute)))
        clock = _timed_steps if inspect.isgeneratorfunction(getattr(owner, attribute)) else _timed
        setattr(owner, attribute, clock(getattr(owner, attribute), spent, stage))
    redactor = None if pipelines is None else pipelines.redactor
    if redactor is not None:
        object.__setattr__(pipelines, "redactor", _timed(redactor, spent, "redact"))
    try:
        yield spent
    finally:
        if redactor is not None:
            object.__setattr__(pipelines, "redactor", redactor)
        for owner, attribute, original in saved:
            setattr(owner, attribute, original)


def one_flush(records: list[Any], pipelines: Any, spent: dict[str, float]) -> dict[str, float]:
    """CPU seconds of one flush, by stage (``spent`` is filled by stage_clocks' counters)."""
    from service.sink.plan import Layout, plan_flush
    from service.sink.rules import FieldMapping

    spent.clear()
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.process_time()
    plan_flush(SHARD, records, [], Layout("bench", pipelines=pipelines), FieldMapping())
    total, after = time.process_time() - start, resource.getrusage(resource.RUSAGE_SELF)
    out = dict(spent, total=total)
    # Kernel time is mostly page faults: memory the allocator gave back and takes again.
    out["sys"] = after.ru_stime - before.ru_stime
    out["page_faults_k"] = (after.ru_minflt - before.ru_minflt) / 1000
    out["other"] = total - sum(out.get(s, 0.0) for s in ("build_rows", "route", "data_objects"))
    return out


def warm_rounds(lines: int, rounds: int) -> dict[str, list[dict[str, float]]]:
    """Both flushes alternating in this process, after one untimed round each (lazy imports,
    compiled patterns): a long-running consumer's steady state."""
    from service.pipeline.config import load_pipelines

    records = records_of(pipeline_input(lines))
    pipelines = load_pipelines(DOCUMENT)
    out: dict[str, list[dict[str, float]]] = {"plain": [], "pipelines": []}
    with stage_clocks(pipelines) as spent:
        for i in range(rounds + 1):
            for name, chosen in (("plain", None), ("pipelines", pipelines)):
                measured = one_flush(records, chosen, spent)
                if i:
                    out[name].append(measured)
    return out


def fresh_flush(lines: int, variant: str) -> dict[str, float]:
    """One flush in this (fresh) process after the benchmark's warm-up on its first 2,000
    lines (benchmarks/writer.py): what benchmarks/pipelines.py times, pages and all."""
    from service.pipeline.config import load_pipelines

    records = records_of(pipeline_input(lines))
    pipelines = load_pipelines(DOCUMENT) if variant == "pipelines" else None
    with stage_clocks(pipelines) as spent:
        one_flush(records[: WARMUP_LINES // LINES_PER_RECORD], pipelines, spent)
        return one_flush(records, pipelines, spent)


def fresh_rounds(lines: int, rounds: int) -> dict[str, list[dict[str, float]]]:
    """``fresh_flush`` of each variant in a process of its own, alternating."""
    out: dict[str, list[dict[str, float]]] = {"plain": [], "pipelines": []}
    for _ in range(rounds):
        for name, runs in out.items():
            command = [sys.executable, __file__, "--lines", str(lines), "--child", name]
            done = subprocess.run(command, check=True, capture_output=True, text=True)
            runs.append(json.loads(done.stdout.splitlines()[-1]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--fresh", action="store_true", help="one flush a fresh process")
    parser.add_argument("--child", choices=("plain", "pipelines"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    pin_to_one_core()
    if args.child:
        print(json.dumps(fresh_flush(args.lines, args.child)))
        return
    pipeline_input(args.lines)  # generated once, before any child reads it
    run = fresh_rounds if args.fresh else warm_rounds
    rounds = run(args.lines, args.rounds)
    scale = 100_000 / args.lines
    medians = {}
    for name, runs in rounds.items():
        stages = sorted({s for run in runs for s in run}, key=lambda s: (s != "total", s))
        medians[name] = {s: statistics.median(r.get(s, 0.0) for r in runs) * scale for s in stages}
        print(name, " ".join(f"{s}={v:.3f}" for s, v in medians[name].items()))
    plain, piped = medians["plain"]["total"], medians["pipelines"]["total"]
    ratios = [
        p["total"] / q["total"] for p, q in zip(rounds["plain"], rounds["pipelines"], strict=True)
    ]
    print(f"ratio (median totals) {plain / piped:.3f}; per round", [f"{r:.3f}" for r in ratios])


if __name__ == "__main__":
    main()
