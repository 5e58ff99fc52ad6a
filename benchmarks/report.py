"""Renders benchmarks/results/*.json as the README's benchmark section (between markers).

.venv/bin/python benchmarks/report.py          # print the markdown
.venv/bin/python benchmarks/report.py --write  # replace the README section
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BEGIN, END = "<!-- benchmarks:begin -->", "<!-- benchmarks:end -->"
COLUMNS = (
    ("lines_per_s", "lines/s"),
    ("lines_per_cpu_s", "lines/CPU-s"),
    ("records_per_s", "records/s"),
    ("mb_per_s", "MB/s"),
    ("mb_per_cpu_s", "MB/CPU-s"),
    ("p50_ms", "p50 ms"),
    ("p99_ms", "p99 ms"),
    ("output_bytes", "output bytes"),
    ("files", "files"),
    ("kinesis_records", "Kinesis records"),
    ("table_commits", "table commits"),
    ("peak_rss_mb", "peak RSS MB"),
    # ingest: where the cores went during the run (server, load generator, everything else)
    ("cpu_us_per_line", "server CPU µs/line"),
    ("server_busy", "server cores"),
    ("client_busy", "generator cores"),
    ("others_busy", "other processes' cores"),
    ("records_per_call", "records a PutRecords call"),
    ("loop_asleep", "server loop asleep"),
)
ORDER = ("writer", "decoders", "ingest", "e2e", "telemetry", "consume", "pipelines")
COMMANDS = {name: f".venv/bin/python benchmarks/{name}.py" for name in ORDER}


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if abs(value) < 1:  # e.g. a share of a core: 0.04 is not 0.0
            return f"{value:.2f}"
        return f"{value:,.1f}" if value < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


CPU_NOTE = (
    "lines/CPU-s: lines per CPU second of the variant's process (user + system), the figure"
    " to compare on a shared machine; lines/s is wall time."
)
RATIO_COLUMNS = (
    ("lines_per_s", "lines/s"),
    ("lines_per_cpu_s", "lines/CPU-s"),
    ("output_bytes", "output bytes"),
    ("peak_rss", "peak RSS"),
)


def _ratio_table(ratios: dict[str, Any]) -> list[str]:
    """Tideway against each baseline, one row each; a row that stands for another variant
    (``baseline``, e.g. the faster DuckDB variant) names it."""
    rows = {k: v for k, v in ratios.items() if isinstance(v, dict)}
    used = [(k, label) for k, label in RATIO_COLUMNS if any(k in r for r in rows.values())]
    lines = [
        "| Tideway / baseline | " + " | ".join(label for _, label in used) + " |",
        "|---|" + "---:|" * len(used),
    ]
    lead = []
    for key, r in rows.items():
        name = key.split("_vs_", 1)[-1]
        if "baseline" in r:  # e.g. fastest_duckdb: the faster of the DuckDB variants
            name = f"{name} = **{r['baseline']}**"
            figures = ", ".join(f"{r[k]:.2f} {label}" for k, label in used if k in r)
            against = key.split("_vs_", 1)[-1].replace("_", " ")
            lead = [f"Tideway / the {against} baseline, **{r['baseline']}**: {figures}.", ""]
        cells = " | ".join(f"{r[k]:.2f}" if k in r else "" for k, _ in used)
        lines.append(f"| {name} | {cells} |")
    return lead + lines


def _ratios(doc: dict[str, Any]) -> str:
    parts = []
    for key, value in doc.items():
        if key in ("benchmark", "quick", "input", "results") or (
            key == "ratios" and _nested(value)
        ):
            continue
        if "ratio" in key or "vs" in key or key == "overhead":
            parts.append(f"`{key}`: {json.dumps(value)}")
    return "; ".join(parts)


def section(name: str, doc: dict[str, Any]) -> list[str]:
    results = doc["results"]
    used = [
        (k, label)
        for k, label in COLUMNS
        if any(k in r for r in results.values() if isinstance(r, dict))
    ]
    mode = "quick" if doc.get("quick") else "full"
    lines = [f"#### {name} ({mode}; input {json.dumps(doc['input'])[:160]})", ""]
    lines.append("| variant | " + " | ".join(label for _, label in used) + " |")
    lines.append("|---|" + "---:|" * len(used))
    for variant, r in results.items():
        if isinstance(r, dict) and any(k in r for k, _ in used):
            lines.append(f"| {variant} | " + " | ".join(_fmt(r.get(k, "")) for k, _ in used) + " |")
    if any(k == "lines_per_cpu_s" for k, _ in used):
        lines += ["", CPU_NOTE]
    if _nested(doc.get("ratios")):
        lines += ["", *_ratio_table(doc["ratios"])]
    ratios = _ratios(doc)
    lines += ["", f"Ratios: {ratios}" if ratios else "", *_layout(doc)]
    lines += [f"Command: `{COMMANDS[name]}`", ""]
    return lines


def _layout(doc: dict[str, Any]) -> list[str]:
    """The layout simulation of a benchmark that has one (consume): one row per fleet size."""
    sims = doc.get("layout_simulation")
    if not sims:
        return []
    lines = [
        "",
        "| one hour, shards at 1 MB/s | objects | median object | one service, one hour: "
        "scanned | same without the service partition |",
        "|---|---:|---:|---:|---:|",
    ]
    lines.extend(
        f"| {sim['shards']} | {sim['objects_per_hour']:,} | "
        f"{sim['median_object_bytes'] / 1e6:.1f} MB | "
        f"{sim['athena_one_service_one_hour_bytes'] / 1e9:.2f} GB | "
        f"{sim['athena_same_query_without_service_partition_bytes'] / 1e9:.2f} GB |"
        for sim in sims
    )
    return [*lines, ""]


def _nested(value: Any) -> bool:
    return isinstance(value, dict) and any(isinstance(v, dict) for v in value.values())


def render() -> str:
    out = [BEGIN, ""]
    for name in ORDER:
        path = RESULTS / f"{name}.json"
        if not path.exists():
            path = RESULTS / f"{name}.quick.json"
        if path.exists():
            out += section(name, json.loads(path.read_text()))
    out.append(END)
    return "\n".join(out)


def main() -> None:
    text = render()
    if "--write" not in sys.argv:
        print(text)
        return
    readme = ROOT / "README.md"
    current = readme.read_text()
    start, end = current.index(BEGIN), current.index(END) + len(END)
    readme.write_text(current[:start] + text + current[end:])


if __name__ == "__main__":
    main()
