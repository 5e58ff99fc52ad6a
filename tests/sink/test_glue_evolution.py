"""Schema evolution of the Glue table: extra columns added later are appended, never
retyped; a type conflict never fails a flush."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from service.aws import aws_clients
from service.errors import SettingsError
from service.resources import ensure_glue_table, setup
from service.schema import extra_fields
from service.settings import Settings
from service.sink.glue import evolve_columns
from tests.conftest import Aws, Server, drain, object_keys
from tests.ingest_support import post_body as post


def avro(*fields: dict[str, Any]) -> dict[str, Any]:
    return {"type": "record", "name": "Extra", "fields": list(fields)}


def schema_file(tmp_path: Path, name: str, schema: dict[str, Any]) -> Path:
    path = tmp_path / name
    path.write_bytes(orjson.dumps(schema))
    return path


def glue_columns(aws: Aws) -> list[tuple[str, str]]:
    table = aws.client("glue").get_table(DatabaseName="logsdb", Name="events")["Table"]
    return [(c["Name"], c["Type"]) for c in table["StorageDescriptor"]["Columns"]]


def test_missing_columns_are_appended_and_the_tables_type_wins_a_conflict() -> None:
    extra = extra_fields(
        avro(
            {"name": "status", "type": "int"},
            {"name": "ratio", "type": "double"},
            {"name": "shape", "type": "string"},
        )
    )
    current = [
        {"Name": "message", "Type": "string"},
        {"Name": "status", "Type": "string"},
        {"Name": "shape", "Type": "struct<a:int>"},
    ]
    evolution = evolve_columns(current, extra)
    assert evolution.added == ({"Name": "ratio", "Type": "double"},)
    assert [(f.name, f.type) for f in evolution.written] == [
        ("status", pa.string()),  # the table's type: files keep matching what Athena reads
        ("ratio", pa.float64()),
    ]  # shape: a type the writer cannot produce; its values stay in attributes
    assert evolution.conflicts == (
        ("status", "string", "int"),
        ("shape", "struct<a:int>", "string"),
    )


async def test_setup_appends_extra_columns_added_later(
    aws: Aws, settings: Settings, tmp_path: Path
) -> None:
    glued = settings.model_copy(update={"glue_database": "logsdb", "glue_table": "events"})
    path = schema_file(tmp_path, "x.avsc", avro({"name": "n", "type": "long"}))
    later = glued.model_copy(update={"extra_columns": path})
    async with aws_clients("glue") as clients:
        assert await ensure_glue_table(clients.glue, glued) == "created"
        before = glue_columns(aws)
        assert await ensure_glue_table(clients.glue, later) == "evolved"
        assert glue_columns(aws) == [*before, ("n", "bigint")]
        assert await ensure_glue_table(clients.glue, later) == "exists"
    assert glue_columns(aws) == [*before, ("n", "bigint")]


async def test_a_conflicting_type_never_fails_a_flush_and_consume_evolves_the_table(
    aws: Aws, ready: Settings, server: Server, tmp_path: Path
) -> None:
    glued = ready.model_copy(update={"glue_database": "logsdb", "glue_table": "events"})
    first = schema_file(tmp_path, "a.avsc", avro({"name": "status", "type": "string"}))
    await setup(glued.model_copy(update={"extra_columns": first}))
    later = schema_file(
        tmp_path,
        "b.avsc",
        avro({"name": "status", "type": "int"}, {"name": "ratio", "type": "double"}),
    )
    lines = [
        {"message": "ok", "status": "200", "ratio": 0.5},
        {"message": "odd", "status": "teapot", "ratio": "fast"},
    ]
    body = b"\n".join(map(orjson.dumps, lines))
    assert (await post(server.url + "/ingest", body, "application/x-ndjson"))[0] == 200
    await drain(glued, extra_columns=later)
    assert glue_columns(aws)[-2:] == [("status", "string"), ("ratio", "double")]
    s3 = aws.client("s3")
    rows = []
    for key in object_keys(aws, ready.bucket, "logs/"):
        body = s3.get_object(Bucket=ready.bucket, Key=key)["Body"].read()
        table = pq.read_table(pa.BufferReader(body))
        assert table.schema.field("status").type == pa.string()
        rows += table.to_pylist()
    by_message = {r["message"]: r for r in rows}
    assert by_message["ok"]["status"] == "200" and by_message["ok"]["ratio"] == 0.5
    assert by_message["odd"]["status"] == "teapot" and by_message["odd"]["ratio"] is None
    assert orjson.loads(by_message["odd"]["attributes"]) == {"ratio": "fast"}


async def test_setup_refuses_a_bad_template_before_making_a_table(settings: Settings) -> None:
    bad = settings.model_copy(
        update={
            "glue_database": "logsdb",
            "glue_table": "events",
            "partition_template": "dt={date}/service={service}/log_group={log_group}",
        }
    )
    with pytest.raises(
        SettingsError, match=r"TIDEWAY_PARTITION_TEMPLATE is invalid: .*data column"
    ):
        await ensure_glue_table(None, bad)
