"""A flush under pipelines: one table per destination under the prefix, typed columns after
the §4 ones, the document's version in every file, and identical bytes on a replay, also
after the configuration changed (the plan document pins the document)."""

from __future__ import annotations

import dataclasses
import io

import orjson
import pyarrow.parquet as pq

from service.decode.types import DecodedRecord
from service.schema import COLUMN_NAMES
from service.sink.plan import Layout, plan_document, plan_flush, plan_from_document
from service.sink.rules import FieldMapping
from service.telemetry.metrics import ConsumerMetrics
from tests.builders import record
from tests.pipeline_support import ROUTES, load

LINES = [
    {"timestamp": "2026-11-20T09:10:00Z", "service": "api", "level": "error", "message": "boom"},
    {"timestamp": "2026-11-20T09:11:00Z", "service": "api", "message": "GET /", "status": 200},
    {"timestamp": "2026-11-20T09:12:00Z", "service": "api", "message": "health ok"},
    {"timestamp": "2026-11-20T09:13:00Z", "service": "web", "message": "page"},
]


def records() -> list[DecodedRecord]:
    return [
        record([orjson.dumps(x) for x in LINES[:2]], seq=7),
        record([orjson.dumps(x) for x in LINES[2:]], seq=8),
    ]


def layout(document: str | None = ROUTES) -> Layout:
    return Layout("s", prefix="p/", pipelines=None if document is None else load(document))


def planned(lay: Layout) -> dict[str, bytes]:
    plan = plan_flush("shardId-000", records(), [], lay, FieldMapping())
    return {o.key: o.body for o in plan.objects}


def test_each_destination_is_a_table_under_the_prefix_and_the_rest_goes_to_logs() -> None:
    keys = sorted(planned(layout()))
    assert keys == [
        "p/api/dt=2026-11-20/hour=09/service=api/s-shardId-000-7-7.parquet",
        "p/errors/dt=2026-11-20/hour=09/service=api/s-shardId-000-7-7.parquet",
        "p/logs/dt=2026-11-20/hour=09/service=web/s-shardId-000-8-8.parquet",
    ]


def test_files_have_the_canonical_columns_first_then_the_pipeline_columns() -> None:
    files = {k.split("/")[1]: pq.read_table(io.BytesIO(b)) for k, b in planned(layout()).items()}
    version = load(ROUTES).version
    errors, api, logs = files["errors"], files["api"], files["logs"]
    assert errors.column_names == [*COLUMN_NAMES, "team", "pipeline_version"]
    assert errors.column("message").to_pylist() == ["boom"]
    assert errors.column("team").to_pylist() == ["core"]
    assert api.column("message").to_pylist() == ["GET /"]  # "health ok" dropped
    assert logs.column_names == list(COLUMN_NAMES)
    for table in files.values():
        assert table.schema.metadata[b"tideway.pipeline_version"] == version.encode()


def test_same_records_and_same_document_give_the_same_bytes() -> None:
    assert planned(layout()) == planned(layout())


def test_without_pipelines_the_flush_is_what_it_was() -> None:
    assert all(k.startswith("p/logs/") for k in planned(layout(None)))


def test_a_replay_after_a_config_change_rewrites_the_pinned_plan_byte_for_byte() -> None:
    first = layout()
    pinned = plan_document(first, FieldMapping())
    changed = layout(ROUTES.replace('table = "api"', 'table = "api2"'))
    assert planned(changed) != planned(first)
    replay_layout, mapping = plan_from_document(pinned)
    assert replay_layout.pipelines == first.pipelines
    assert replay_layout.pipelines is not None
    assert replay_layout.pipelines.version == first.pipelines.version  # type: ignore[union-attr]
    replay = plan_flush("shardId-000", records(), [], replay_layout, mapping)
    assert {o.key: o.body for o in replay.objects} == planned(first)


def test_a_plan_document_without_pipelines_reads_as_none() -> None:
    lay, _ = plan_from_document(plan_document(layout(None), FieldMapping()))
    assert lay.pipelines is None
    assert dataclasses.replace(lay, opened=None) == dataclasses.replace(layout(None), opened=None)


def test_rows_a_pipeline_drops_are_counted_as_dropped_not_as_written() -> None:
    plan = plan_flush("shardId-000", records(), [], layout(), FieldMapping())
    assert (plan.rows, plan.dropped) == (3, 1)  # ROUTES drops the health check
    assert plan.rows == sum(o.rows for o in plan.objects)
    metrics = ConsumerMetrics()
    metrics.observe_flush("size", plan, [], {})
    written = metrics.registry.get_sample_value("tideway_rows_written_total")
    dropped = metrics.registry.get_sample_value("tideway_pipelines_dropped_total")
    assert (written, dropped) == (3, 1)


def test_conditions_and_sampling_read_the_lineage_and_files_keep_all_of_it() -> None:
    document = """
[[pipeline]]
name = "edge"
match = 'log_group == "edge" and kinesis_sub_sequence >= 0'
drop = 'log_stream == "noisy"'
sample = 1
table = "edge"

[[pipeline]]
name = "sampled"
match = 'source == "http"'
sample = 2
table = "sampled"
"""
    lay = Layout("s", prefix="p/", pipelines=load(document))
    recs = [
        record([orjson.dumps(x) for x in LINES[:2]], seq=7, log_group="edge", log_stream="a"),
        record([orjson.dumps(x) for x in LINES[2:3]], seq=8, log_group="edge", log_stream="noisy"),
        record([orjson.dumps(x) for x in LINES], seq=9, source="http"),
    ]
    plan = plan_flush("shardId-000", recs, [], lay, FieldMapping())
    files = [(o.key.split("/")[1], pq.read_table(io.BytesIO(o.body))) for o in plan.objects]
    edge = [t for name, t in files if name == "edge"]
    assert [t.column("message").to_pylist() for t in edge] == [["boom", "GET /"]]
    assert edge[0].column("log_group").to_pylist() == ["edge", "edge"]
    for _, table in files:
        assert table.column_names[: len(COLUMN_NAMES)] == list(COLUMN_NAMES)
    sampled = sum(t.num_rows for name, t in files if name == "sampled")
    assert plan.dropped == 1 + (4 - sampled)
    assert plan_flush("shardId-000", recs, [], lay, FieldMapping()) == plan
