"""Column types are stable across flushes: declared in the pipeline (``columns``), text for
an undeclared JSON field, whatever a flush's lines hold; a value that does not fit keeps
its row, with the reason in ``parse_error``."""

from __future__ import annotations

import io

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from service.pipeline.config import PipelineConfigError, load_pipelines
from service.sink.plan import Layout, plan_flush
from service.sink.rules import FieldMapping
from tests.builders import record

DOCUMENT = """
[[pipeline]]
name = "api"
parse = "json"
redact = ["credit_card"]
table = "api"
columns = { status = "int64", latency_ms = "float64", ok = "bool", retries = "int32" }
"""


def flush(*messages: dict[str, object], seq: int = 1) -> pa.Table:
    lines = [
        orjson.dumps({"service": "api", "message": orjson.dumps(m).decode()}) for m in messages
    ]
    layout = Layout("s", pipelines=load_pipelines(DOCUMENT))
    plan = plan_flush("shardId-000", [record(lines, seq=seq)], [], layout, FieldMapping())
    (only,) = plan.objects
    return pq.read_table(io.BytesIO(only.body))


def test_a_field_typed_differently_in_two_flushes_keeps_one_type_in_both_files() -> None:
    first = flush({"status": 200, "latency_ms": 3, "ok": True, "user": 7}, seq=1)
    second = flush({"status": "n/a", "latency_ms": 1.5, "ok": "false", "user": "bob"}, seq=2)
    assert first.schema.remove_metadata() == second.schema.remove_metadata()
    types = {f.name: f.type for f in first.schema}
    assert types["status"] == pa.int64() and types["latency_ms"] == pa.float64()
    assert types["ok"] == pa.bool_() and types["retries"] == pa.int32()
    assert types["user"] == pa.string()  # undeclared: text in every flush
    assert first.column("user").to_pylist() == ["7"]
    assert first.column("status").to_pylist() == [200]
    assert second.column("status").to_pylist() == [None]  # kept, not dropped
    assert second.column("latency_ms").to_pylist() == [1.5]
    assert second.column("ok").to_pylist() == [False]
    assert second.column("parse_error").to_pylist() == ["column status: not of type int64"]
    assert first.column("parse_error").to_pylist() == [None]


def test_declared_columns_are_present_and_last_in_every_file_in_the_documents_order() -> None:
    table = flush({"b": 1, "a": 2})
    assert table.column_names[-6:] == [
        "status",
        "latency_ms",
        "ok",
        "retries",
        "parse_error",
        "pipeline_version",
    ]
    assert table.column("retries").to_pylist() == [None]
    assert table.column("a").to_pylist() == ["2"]


def test_a_redacted_value_in_a_typed_column_is_not_stored_and_not_named_in_the_reason() -> None:
    table = flush({"status": 4111111111111111})
    assert table.column("status").to_pylist() == [None]
    assert "4111" not in str(table.to_pylist())


def test_same_records_give_the_same_bytes() -> None:
    assert flush({"status": "x", "user": 1}) == flush({"status": "x", "user": 1})


@pytest.mark.parametrize(
    ("columns", "reason"),
    [
        ('{ status = "int65" }', "field 'status': unknown type 'int65' (known: string, int32"),
        ('{ message = "string" }', "field 'message': column 'message' has its own type"),
        ('{ parse_error = "string" }', "field 'parse_error': column 'parse_error' is written"),
        ('{ Status = "int64" }', "field 'Status': column names are lowercase snake_case"),
    ],
)
def test_a_bad_declared_column_is_one_line_naming_pipeline_step_and_field(
    columns: str, reason: str
) -> None:
    document = f'[[pipeline]]\nname = "api"\nparse = "json"\ncolumns = {columns}\n'
    with pytest.raises(PipelineConfigError) as caught:
        load_pipelines(document)
    message = str(caught.value)
    assert message.startswith("pipeline 'api', step 'columns', ") and reason in message
    assert "\n" not in message
