"""Shared benchmark helpers (DESIGN §9): one subprocess per variant, pinned to one core,
peak RSS of that process only, and the results JSON.

    from benchmarks.common import pin_to_one_core, peak_rss_mb, run_variant, write_results

A variant is ``python <script> --variant NAME ...``: the script's child mode calls
``pin_to_one_core()``, does the work, and prints one JSON object (its measurements plus
``peak_rss_mb()``) as its last stdout line; the parent collects it with ``run_variant``.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results"
DATA_DIR = ROOT / "benchmarks" / "data"  # git-ignored cache of generated inputs


def pin_to_one_core(core: int | None = None) -> int:
    """Pin this process (and threads it starts later) to one CPU; return the CPU.

    Defaults to the last CPU this process may use, so variants of one run share a core.
    """
    allowed = sorted(os.sched_getaffinity(0))
    chosen = allowed[-1] if core is None or core not in allowed else core
    os.sched_setaffinity(0, {chosen})
    return chosen


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB.

    Linux ``VmHWM`` first: ``ru_maxrss`` survives fork+exec, so a child started by a big
    parent would report the parent's peak.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_variant(
    script: Path, variant: str, args: list[str], env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run ``script --variant variant *args`` in a fresh interpreter; return the JSON object
    on its last stdout line. Raises RuntimeError with its stderr when it fails."""
    child_env = {**os.environ, **(env or {})}
    proc = subprocess.run(
        [sys.executable, str(script), "--variant", variant, *args],
        capture_output=True,
        text=True,
        env=child_env,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"variant {variant} failed:\n{proc.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def write_results(
    name: str,
    *,
    quick: bool,
    lines: int,
    input_bytes: int,
    results: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write benchmarks/results/<name>.json (``<name>.quick.json`` in quick mode, so a quick
    run never overwrites the full one) in the DESIGN §9 shape; return its path."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {
        "benchmark": name,
        "quick": quick,
        "input": {"lines": lines, "bytes": input_bytes},
        "results": results,
        **(extra or {}),
    }
    path = RESULTS_DIR / (f"{name}.quick.json" if quick else f"{name}.json")
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path
