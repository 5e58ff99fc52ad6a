"""Runs every benchmark script (``make bench`` = quick mode) and prints where results went.

Each script is also runnable alone; each writes benchmarks/results/<name>.json.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = (
    "writer.py",
    "decoders.py",
    "ingest.py",
    "e2e.py",
    "telemetry.py",
    "consume.py",
    "console.py",
    "pipelines.py",
)


def main() -> int:
    quick = ["--quick"] if "--quick" in sys.argv[1:] else []
    failed = []
    for name in SCRIPTS:
        path = HERE / name
        if not path.exists():
            print(f"== {name}: missing, skipped")
            continue
        print(f"== {name} {' '.join(quick)}", flush=True)
        if subprocess.run([sys.executable, str(path), *quick], check=False).returncode:
            failed.append(name)
    print("results in", HERE / "results", "; failed:", failed or "none")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
