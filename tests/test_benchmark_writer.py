"""The writer benchmark reports Tideway against its strongest DuckDB baseline, named, and
says whether DuckDB's default sampling inferred what the whole-file scan inferred."""

from __future__ import annotations

from typing import Any

from benchmarks.writer import sampling_check, tideway_ratios


def variant(lines_per_s: int, cpu: int, output: int = 100, rss: float = 500.0) -> dict[str, Any]:
    return {
        "lines_per_s": lines_per_s,
        "lines_per_cpu_s": cpu,
        "output_bytes": output,
        "peak_rss_mb": rss,
    }


def test_ratios_are_taken_against_the_faster_duckdb_variant_and_name_it() -> None:
    results = {
        "tideway": variant(130, 130),
        "duckdb": variant(80, 80),
        "duckdb_sampled": variant(100, 100),
        "polars": variant(50, 50),
    }
    ratios = tideway_ratios(results)
    assert ratios["tideway_vs_fastest_duckdb"]["baseline"] == "duckdb_sampled"
    assert ratios["tideway_vs_fastest_duckdb"]["lines_per_s"] == 1.3
    assert ratios["tideway_vs_duckdb"]["lines_per_s"] == 1.62
    assert ratios["tideway_vs_polars"]["lines_per_s"] == 2.6


def test_the_whole_file_scan_is_the_baseline_when_it_is_faster() -> None:
    results = {
        "tideway": variant(100, 100),
        "duckdb": variant(120, 120),
        "duckdb_sampled": variant(110, 110),
    }
    assert tideway_ratios(results)["tideway_vs_fastest_duckdb"]["baseline"] == "duckdb"


def test_sampling_that_infers_other_columns_is_reported() -> None:
    full = {"rows": 10, "columns": ["a: int64", "b: string", "c: double"]}
    sampled = {"rows": 10, "columns": ["a: int64", "b: string", "c: string"]}
    check = sampling_check(full, sampled)
    assert not check["same_columns_and_types"]
    assert check["only_with_sample_size_-1"] == ["c: double"]
    assert check["only_with_default_sampling"] == ["c: string"]
    assert check["same_rows"]
