"""The README's benchmark tables show lines per CPU second beside wall lines per second, and
name the baseline a headline ratio is taken against."""

from __future__ import annotations

from typing import Any

from benchmarks.report import section


def writer_doc() -> dict[str, Any]:
    def variant(wall: int, cpu: int) -> dict[str, Any]:
        return {"lines_per_s": wall, "lines_per_cpu_s": cpu, "output_bytes": 100}

    return {
        "benchmark": "writer",
        "quick": True,
        "input": {"lines": 100},
        "results": {
            "tideway": variant(100, 300),
            "duckdb": variant(80, 200),
            "duckdb_sampled": variant(90, 250),
        },
        "ratios": {
            "tideway_vs_fastest_duckdb": {
                "baseline": "duckdb_sampled",
                "lines_per_s": 1.11,
                "lines_per_cpu_s": 1.2,
            },
            "tideway_vs_duckdb": {"lines_per_s": 1.25, "lines_per_cpu_s": 1.5},
        },
    }


def test_variants_show_lines_per_cpu_second_beside_wall_lines_per_second() -> None:
    text = "\n".join(section("writer", writer_doc()))
    assert "| variant | lines/s | lines/CPU-s | output bytes |" in text
    assert "| tideway | 100 | 300 | 100 |" in text


def test_the_headline_ratio_names_the_faster_duckdb_variant() -> None:
    text = "\n".join(section("writer", writer_doc()))
    assert "| fastest_duckdb = **duckdb_sampled** | 1.11 | 1.20 |" in text
    assert "| duckdb | 1.25 | 1.50 |" in text
    assert "fastest duckdb baseline, **duckdb_sampled**" in text


def test_a_benchmark_without_cpu_time_keeps_its_wall_time_table() -> None:
    doc = {"quick": False, "input": {}, "results": {"tideway": {"lines_per_s": 5}}}
    assert "| variant | lines/s |" in section("e2e", doc)
