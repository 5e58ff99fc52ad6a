"""Instructions of one flush, with and without benchmarks/pipelines.py's pipelines, counted
by callgrind: the figures docs/pipelines.md "Speed" quotes, reproducible by one command.

    nice -n 19 .venv/bin/python benchmarks/flush_instructions.py [--lines N] [--keep DIR]

CPU time on this shared 2-core machine moves by 10-20 % between rounds; instruction counts
move by well under 1 %, so a change worth a few per cent of the flush is seen. Each variant
(``plain``, ``pipelines``) runs in two processes under ``valgrind --tool=callgrind`` with
``PYTHONHASHSEED=0``: both build the records of benchmarks/pipelines.py's input and run the
benchmark's warm-up flush on its first 2,000 lines (with that variant's pipelines), then one
of them flushes all the records. The flush's figure is the difference of the two totals.
Each child also prints a digest of the rows it wrote (every object's table, read back, by
key) and one of the objects' bytes: a change that should keep the rows must keep the first.
``--keep DIR`` keeps the callgrind files for ``callgrind_annotate --inclusive=yes``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402,F401  (imported before pyarrow, as the service imports it)

from benchmarks.pipeline_stages import records_of  # noqa: E402
from benchmarks.pipelines import DOCUMENT, pipeline_input  # noqa: E402
from benchmarks.writer import LINES_PER_RECORD, WARMUP_LINES  # noqa: E402

VARIANTS = ("plain", "pipelines")
SHARD = "shardId-000000000000"


def digests(objects: list[object]) -> dict[str, str]:
    """Digests of a plan's objects: their rows (tables read back, by key) and their bytes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows, raw = hashlib.sha256(), hashlib.sha256()
    for obj in sorted(objects, key=lambda o: o.key):  # type: ignore[attr-defined]
        key, body = obj.key, obj.body  # type: ignore[attr-defined]
        raw.update(key.encode() + b"\0" + hashlib.sha256(body).digest())
        table = pq.read_table(pa.BufferReader(body))
        rows.update(key.encode() + b"\0" + str(table.schema).encode())
        for column in table.columns:
            rows.update(str(column.to_pylist()).encode())
    return {"rows_sha256": rows.hexdigest(), "bytes_sha256": raw.hexdigest()}


def child(variant: str, lines: int, flush: bool) -> None:
    """One process of the probe: the records, the warm-up flush, then (``flush``) the flush."""
    from service.pipeline.config import load_pipelines
    from service.sink.plan import Layout, plan_flush
    from service.sink.rules import FieldMapping

    records = records_of(pipeline_input(lines))
    pipelines = None if variant == "plain" else load_pipelines(DOCUMENT)
    warm = records[: WARMUP_LINES // LINES_PER_RECORD]
    plan_flush(SHARD, warm, [], Layout("bench", pipelines=pipelines), FieldMapping())
    if not flush:
        return
    plan = plan_flush(SHARD, records, [], Layout("bench", pipelines=pipelines), FieldMapping())
    if os.environ.get("TIDEWAY_PROBE_DIGEST", "1") == "1":  # off under callgrind
        print(json.dumps({"objects": len(plan.objects), **digests(list(plan.objects))}))


def instructions(out_file: Path) -> int:
    """The total Ir of a callgrind output file."""
    text = out_file.read_text(errors="replace")
    found = re.search(r"^(?:summary|totals):\s+(\d+)", text, re.MULTILINE)
    if found is None:
        raise RuntimeError(f"no totals in {out_file}")
    return int(found.group(1))


def run_under_callgrind(variant: str, lines: int, out_dir: Path, flush: bool) -> int:
    """Total instructions of one child process (its callgrind file kept in ``out_dir``)."""
    out_file = out_dir / f"callgrind.{variant}{'' if flush else '.noflush'}"
    env = {**os.environ, "PYTHONHASHSEED": "0", "TIDEWAY_PROBE_DIGEST": "0"}
    command = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out_file}",
        sys.executable,
        __file__,
        "--lines",
        str(lines),
        "--child",
        variant,
        *([] if flush else ["--no-flush"]),
    ]
    subprocess.run(command, check=True, capture_output=True, env=env)
    return instructions(out_file)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--keep", type=Path, help="keep the callgrind files in this directory")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--no-flush", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.lines, flush=not args.no_flush)
        return
    pipeline_input(args.lines)  # generated once, outside the counted processes
    result: dict[str, object] = {}
    flushes: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="flush-instructions-") as tmp:
        out_dir = args.keep or Path(tmp)
        out_dir.mkdir(parents=True, exist_ok=True)
        for variant in args.variants:
            without = run_under_callgrind(variant, args.lines, out_dir, flush=False)
            total = run_under_callgrind(variant, args.lines, out_dir, flush=True)
            flushes[variant] = total - without
            result[f"{variant}_flush_G"] = round(flushes[variant] / 1e9, 3)
    if len(flushes) == 2:
        ratio = flushes["plain"] / flushes["pipelines"]
        result["ratio_plain_over_pipelines"] = round(ratio, 3)
    for variant in args.variants:  # the output's digests, outside callgrind
        command = [sys.executable, __file__, "--lines", str(args.lines), "--child", variant]
        done = subprocess.run(command, check=True, capture_output=True, text=True)
        result[f"{variant}_output"] = json.loads(done.stdout.splitlines()[-1])
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
