"""DESIGN §11: an Iceberg table's files carry ``service`` as a column and each holds exactly
one partition of hour(timestamp), identity(service), even where the cardinality guard
moves rows to ``__other__`` of another hour in the Hive layout."""

from __future__ import annotations

import io

import orjson
import pyarrow.parquet as pq

from service.sink.opened import HOUR_US
from service.sink.plan import Layout, plan_document, plan_flush, plan_from_document
from tests.builders import MAPPING, record

LINES = [
    ("2026-11-20T08:10:00+00:00", "a"),
    ("2026-11-20T08:20:00+00:00", "a"),
    ("2026-11-20T08:30:00+00:00", "a"),
    ("2026-11-20T08:40:00+00:00", "b"),
    ("2026-11-20T08:50:00+00:00", "b"),
    ("2026-11-20T07:30:00+00:00", "c"),
]


def flush(service_column: bool) -> list[tuple[str, list[int], list[str]]]:
    lines = [orjson.dumps({"time": t, "service": s, "message": "m"}) for t, s in LINES]
    layout = Layout("logs", max_partitions=2, service_column=service_column)
    plan = plan_flush("shardId-000", [record(lines)], [], layout, MAPPING)
    out = []
    for obj in plan.objects:
        table = pq.read_table(io.BytesIO(obj.body))
        hours = [int(t.timestamp() * 1e6) // HOUR_US for t in table.column("timestamp").to_pylist()]
        services = table.column("service").to_pylist() if service_column else []
        out.append((obj.partition, hours, services))
    return out


def test_hive_files_keep_service_in_the_path_and_the_guard_may_move_an_hour() -> None:
    files = flush(service_column=False)
    assert all(not services for _, _, services in files)
    moved = [(path, hours) for path, hours, _ in files if "__other__" in path]
    assert moved and len(set(moved[0][1])) == 2  # hour 07's row went to hour 08's __other__


def test_iceberg_files_hold_one_hour_and_one_service_each_as_columns() -> None:
    files = flush(service_column=True)
    for path, hours, services in files:
        assert len(set(hours)) == 1
        assert len(set(services)) == 1
        assert f"hour={hours[0] % 24:02d}" in path
        assert f"service={services[0]}" in path
    assert sorted(s for _, _, services in files for s in services).count("__other__") == 3
    assert {h % 24 for _, hours, _ in files for h in hours} == {7, 8}
    assert sum(len(h) for _, h, _ in files) == len(LINES)


def test_the_plan_document_pins_the_service_column_for_replays() -> None:
    layout, _ = plan_from_document(plan_document(Layout("logs", service_column=True), MAPPING))
    assert layout.service_column
    layout, _ = plan_from_document(plan_document(Layout("logs"), MAPPING))
    assert not layout.service_column
