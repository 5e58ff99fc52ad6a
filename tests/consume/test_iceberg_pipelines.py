"""Issue 17 (DESIGN §11, §12): pipelines with an Iceberg table. A pipeline's ``table = "api"``
is the Iceberg table ``tideway.api`` beside ``tideway.logs``, created by ``tideway setup``
with the pipeline's typed columns, committed exactly once; columns that appear later evolve
the table, and a type conflict never fails a flush (read back with pyiceberg scans)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pyarrow as pa
import pytest
from pyiceberg.table import Table

from service.aws import AwsClients
from service.compaction import run_compaction
from service.consume.context import iceberg_properties
from service.consume.reader import list_shards
from service.resources import ensure_iceberg_table, setup
from service.settings import Settings
from service.sink.iceberg import open_catalog
from service.sink.iceberg_commit import watermark
from tests.conftest import Aws, drain, lineage_counts

ROUTES = """
[[pipeline]]
name = "errors"
match = 'severity_number >= 17'
table = "errors"

[[pipeline.transform]]
set = { team = "core" }

[[pipeline]]
name = "api"
match = 'service == "api"'
parse = "json"
table = "api"
columns = { status = "int64" }
"""


@pytest.fixture
async def routed(ready: Settings, tmp_path: Path) -> Settings:
    """Test settings: an Iceberg catalog on SQLite and the two pipelines above."""
    path = tmp_path / "pipelines.toml"
    path.write_text(ROUTES)
    return Settings.load(
        None,
        **{
            **ready.model_dump(exclude_unset=True),
            "table_format": "iceberg",
            "iceberg_catalog": "sql",
            "iceberg_catalog_uri": f"sqlite:///{tmp_path}/catalog.db",
            "pipelines": path,
        },
    )


def load(clients: AwsClients, settings: Settings, name: str) -> Table:
    return open_catalog(iceberg_properties(settings, clients.s3)).load_table(f"tideway.{name}")


def put(aws: Aws, settings: Settings, shard_id: str, lines: list[dict[str, object]]) -> None:
    kinesis = aws.client("kinesis")
    listing = kinesis.list_shards(StreamName=settings.stream)["Shards"]
    key = next(s["HashKeyRange"]["StartingHashKey"] for s in listing if s["ShardId"] == shard_id)
    for line in lines:
        kinesis.put_record(
            StreamName=settings.stream,
            Data=orjson.dumps(line),
            PartitionKey="k",
            ExplicitHashKey=key,
        )


def columns(table: Table) -> dict[str, str]:
    return {f.name: str(f.field_type) for f in table.schema().fields}


async def test_pipeline_tables_are_iceberg_tables_that_evolve_and_hold_every_line_once(
    aws: Aws, routed: Settings, clients: AwsClients
) -> None:
    assert (await setup(routed))["iceberg_table"] == "created"
    errors = load(clients, routed, "errors")
    assert columns(errors)["team"] == "string"  # the pipeline's typed columns, before any data
    assert "parse_error" in columns(load(clients, routed, "api"))
    assert errors.location() == f"s3://{routed.bucket}/errors"
    assert await ensure_iceberg_table(clients.s3, routed) == "exists"  # idempotent

    shard = sorted(await list_shards(clients.kinesis, routed.stream))[0]
    put(
        aws,
        routed,
        shard,
        [
            {"service": "api", "message": orjson.dumps({"status": 200, "path": "/a"}).decode()},
            {"service": "api", "message": orjson.dumps({"status": 404, "path": "/b"}).decode()},
            {"service": "web", "level": "error", "message": "boom"},
            {"service": "web", "message": "page"},
        ],
    )
    await drain(routed)
    api = load(clients, routed, "api")
    # `status` is declared (in the table from the start); `path` is not, so it is text and
    # joins the table with the first flush that has it.
    assert (columns(api)["status"], columns(api)["path"]) == ("long", "string")
    assert sorted(api.scan().to_arrow().column("status").to_pylist()) == [200, 404]

    # A later flush sends `status` as text: the declared type wins, and the value that is no
    # number keeps its row (and its message) with the reason in parse_error.
    put(
        aws,
        routed,
        shard,
        [
            {"service": "api", "message": orjson.dumps({"status": "teapot"}).decode()},
            {"service": "api", "message": orjson.dumps({"status": "418"}).decode()},
        ],
    )
    await drain(routed)

    api = load(clients, routed, "api")
    assert columns(api)["status"] == "long"
    rows = {r["message"]: r for r in api.scan().to_arrow().to_pylist()}
    teapot = rows['{"status":"teapot"}']
    assert teapot["status"] is None
    assert "column status: not of type int64" in teapot["parse_error"]
    assert rows['{"status":"418"}']["status"] == 418
    scans = {
        name: load(clients, routed, name).scan().to_arrow() for name in ("logs", "errors", "api")
    }
    assert [r["message"] for r in scans["errors"].to_pylist()] == ["boom"]
    assert scans["errors"].column("team").to_pylist() == ["core"]
    assert [r["message"] for r in scans["logs"].to_pylist()] == ["page"]
    every = pa.concat_tables(
        [
            t.select(["kinesis_shard_id", "kinesis_sequence_number", "kinesis_sub_sequence"])
            for t in scans.values()
        ]
    )
    assert every.num_rows == 6
    assert set(lineage_counts(every).values()) == {1}
    # The default table's watermark covers each flush: it is committed after the others.
    assert watermark(load(clients, routed, "logs"), routed.stream, shard) is not None

    # tideway compact also rewrites the pipeline tables: api's two flushes (the second file
    # without `path`) become one file of the same rows, with closed hours.
    report = await run_compaction(routed, older_than=-3600)
    by_table = {r["table"]: r for r in report["pipeline_tables"]}
    assert sorted(by_table) == ["tideway.api", "tideway.errors"]
    assert (by_table["tideway.api"]["files_before"], by_table["tideway.api"]["files_after"]) == (
        2,
        1,
    )
    after = load(clients, routed, "api").scan().to_arrow()
    assert sorted(map(str, after.column("status").to_pylist())) == ["200", "404", "418", "None"]
