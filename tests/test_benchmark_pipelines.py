"""The pipelines benchmark runs its pipeline set and its DuckDB equivalent on a tiny input:
both write the same routes with the same rows, and Tideway's output holds no detected value."""

from __future__ import annotations

from pathlib import Path

import pyarrow.dataset as ds
import pytest

from benchmarks.pipelines import pipeline_input, ratios, run_duckdb, run_pipelines


def rows_per_table(out: Path) -> dict[str, int]:
    return {
        table.name: ds.dataset(table, format="parquet", partitioning="hive").count_rows()
        for table in sorted(out.iterdir())
    }


def test_pipelines_and_duckdb_write_the_same_routes_and_rows(tmp_path: Path) -> None:
    src = pipeline_input(400)
    ours, theirs = tmp_path / "tideway", tmp_path / "duckdb"
    ours.mkdir()
    theirs.mkdir()
    run_pipelines(src, ours)
    written = rows_per_table(ours)
    assert set(written) == {"app", "alb", "vpc", "logs"}
    assert sum(written.values()) == 400 - 20  # the VPC REJECT lines are dropped
    text = " ".join(
        str(v)
        for table in ("app", "logs")
        for row in ds.dataset(ours / table, format="parquet").to_table().to_pylist()
        for v in row.values()
    )
    assert "@example" not in text and "4111 1111" not in text and "4012-8888" not in text
    pytest.importorskip("duckdb")
    run_duckdb(src, theirs)
    assert rows_per_table(theirs) == written


def test_ratios_say_whether_each_target_is_met() -> None:
    def variant(cpu: int) -> dict[str, float]:
        return {"lines_per_s": cpu, "lines_per_cpu_s": cpu, "peak_rss_mb": 100.0}

    got = ratios({"tideway": variant(90), "tideway_plain": variant(100), "duckdb": variant(95)})
    assert got["tideway_vs_tideway_plain"]["lines_per_cpu_s"] == 0.9
    assert got["tideway_vs_tideway_plain"]["met"]
    assert not got["tideway_vs_duckdb"]["met"]


def test_stage_clocks_count_the_stages_of_a_flush_and_restore_the_code() -> None:
    from benchmarks.pipeline_stages import DOCUMENT, one_flush, records_of, stage_clocks
    from service.pipeline import engine
    from service.pipeline.config import load_pipelines
    from service.sink import plan

    records = records_of(pipeline_input(400))
    pipelines = load_pipelines(DOCUMENT)
    original = (plan.build_rows, plan.encode_parquet, engine.Pipelines.routes, pipelines.redactor)
    with stage_clocks(pipelines) as spent:
        piped = one_flush(records, pipelines, spent)
        plain = one_flush(records, None, spent)
    stages = {"build_rows", "route", "parse", "redact", "conditions", "data_objects", "encode"}
    assert stages | {"sys", "page_faults_k", "other"} <= set(piped)
    assert not {"route", "parse", "redact"} & set(plain)
    after = (plan.build_rows, plan.encode_parquet, engine.Pipelines.routes, pipelines.redactor)
    assert after == original


def test_a_fresh_flush_is_timed_by_stage_after_the_benchmarks_warm_up() -> None:
    from benchmarks.pipeline_stages import fresh_flush

    piped, plain = fresh_flush(400, "pipelines"), fresh_flush(400, "plain")
    assert {"route", "parse", "redact", "encode", "sys", "page_faults_k"} <= set(piped)
    assert "encode" in plain and not {"route", "redact"} & set(plain)
