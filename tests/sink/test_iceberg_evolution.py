"""Issue 17: an Iceberg table's schema follows the columns its files bring (union by name),
and a column the table already types otherwise never fails a flush: the table's type wins
and a value that does not convert is kept in ``attributes`` (sink/iceberg_schema.py); the
tables of pipelines are committed before the default one (sink/iceberg_tables.py)."""

from __future__ import annotations

import random
from pathlib import Path

import orjson
import pyarrow as pa
import pytest
from pyiceberg.types import StringType

from service.schema import table_schema
from service.sink.iceberg import catalog_properties, ensure_table, evolve_table, open_catalog
from service.sink.iceberg_commit import TableCommitter, watermark
from service.sink.iceberg_schema import conform, conformed_key, evolution, reads_as
from service.sink.iceberg_tables import TableRouter
from service.sink.plan import Layout, plan_flush
from service.sink.rules import FieldMapping
from tests.builders import record
from tests.conftest import Aws

BUCKET = "iceberg-evolution"


def test_a_column_the_table_lacks_is_added_and_one_it_types_otherwise_is_converted() -> None:
    table = {"message": pa.string(), "status": pa.int64(), "size": pa.int64()}
    file = pa.schema(
        [
            pa.field("message", pa.large_string()),
            pa.field("status", pa.string()),  # the table says long: converted
            pa.field("size", pa.int32()),  # int reads as long: kept
            pa.field("region", pa.string(), nullable=False),  # new: added, nullable
        ]
    )
    evolved = evolution(table, file)
    assert [(f.name, f.type, f.nullable) for f in evolved.added] == [("region", pa.string(), True)]
    assert evolved.converted == (("status", pa.int64()),)
    assert reads_as(pa.float32(), pa.float64()) and not reads_as(pa.int64(), pa.int32())
    # A column Iceberg has no type for is not added (a commit must not fail on it).
    assert evolution(table, pa.schema([pa.field("empty", pa.null())])).added == ()


def test_a_value_that_does_not_convert_is_null_in_its_column_and_kept_in_attributes() -> None:
    rows = pa.table(
        {
            "status": ["200", "teapot", None],
            "attributes": ['{"env":"prod"}', None, "{}"],
        }
    )
    out = conform(rows, (("status", pa.int64()),))
    assert out.schema.field("status").type == pa.int64()
    assert out.column("status").to_pylist() == [200, None, None]
    attributes = out.column("attributes").to_pylist()
    assert attributes[0] == '{"env":"prod"}'  # converted: unchanged
    assert orjson.loads(attributes[1]) == {"status": "teapot"}
    assert attributes[2] == "{}"  # null stays null, nothing to keep
    # The converted copy sits beside the original, outside the names replays list.
    key = conformed_key("s3://b/api/dt=x/logs-shard-1-2.parquet", (("status", pa.int64()),))
    assert key.startswith("s3://b/api/dt=x/conformed-") and key.endswith("-logs-shard-1-2.parquet")


@pytest.fixture
def catalog(aws: Aws, tmp_path: Path) -> object:
    aws.client("s3").create_bucket(Bucket=BUCKET)
    props = catalog_properties(
        {"type": "sql", "uri": f"sqlite:///{tmp_path}/c.db", "warehouse": f"s3://{BUCKET}/w"},
        s3_endpoint=aws.endpoint,
        region="us-east-1",
    )
    return open_catalog(props)


def test_setup_adds_a_new_extra_column_and_leaves_a_retyped_one_as_the_table_has_it(
    catalog: object,
) -> None:
    first = table_schema((pa.field("status", pa.int32()),), service=True)
    _, table = ensure_table(catalog, "tideway.logs", f"s3://{BUCKET}/logs", first)  # type: ignore[arg-type]
    later = table_schema(
        (pa.field("status", pa.string()), pa.field("tenant", pa.string())), service=True
    )
    assert evolve_table(table, later) == ("tenant",)
    types = {f.name: str(f.field_type) for f in table.refresh().schema().fields}
    assert (types["status"], types["tenant"]) == ("int", "string")
    assert evolve_table(table.refresh(), later) == ()


async def test_a_flush_cut_between_two_tables_commits_is_in_each_table_once(
    aws: Aws, catalog: object
) -> None:
    base = table_schema(service=True)
    ensure_table(catalog, "tideway.logs", f"s3://{BUCKET}/logs", base)  # type: ignore[arg-type]
    router = TableRouter(
        catalog,  # type: ignore[arg-type]
        "tideway.logs",
        stream="logs",
        bucket=BUCKET,
        prefix="",
        schema=base,
        rng=random.Random(1),
    )
    lines = [orjson.dumps({"message": f"m{i}", "service": "api"}) for i in range(3)]
    plan = plan_flush(
        "shard-0",
        [record(lines, seq=9)],
        [],
        Layout("logs", service_column=True),
        FieldMapping(),
    )
    # Stand for a pipeline table's objects: the same rows under the prefix "api/".
    files = [("api/" + o.key.split("/", 1)[1], o.body) for o in plan.objects]
    s3 = aws.client("s3")
    for key, body in files:
        s3.put_object(Bucket=BUCKET, Key=key, Body=body)

    # The process dies after the pipeline table's commit, before the default table's.
    assert await (await router.open("api")).commit("shard-0", 9, files) is True
    assert await router.committed("shard-0") is None  # the replay will commit again
    assert await router.commit("shard-0", 9, files) is True  # the replay
    assert await router.commit("shard-0", 9, files) is False  # and a zombie after it

    api = catalog.load_table("tideway.api")  # type: ignore[attr-defined]
    assert api.scan().to_arrow().num_rows == 3
    assert api.location() == f"s3://{BUCKET}/api"
    logs = catalog.load_table("tideway.logs")  # type: ignore[attr-defined]
    assert logs.scan().to_arrow().num_rows == 0  # the flush wrote no default rows
    assert watermark(logs, "logs", "shard-0") == 9
    assert len(api.snapshots()) == 1


async def test_an_extra_column_configured_later_joins_the_table_in_the_commit_carrying_it(
    aws: Aws, catalog: object
) -> None:
    ensure_table(catalog, "tideway.logs", f"s3://{BUCKET}/logs", table_schema(service=True))  # type: ignore[arg-type]
    tenant = pa.field("tenant", pa.string())
    lines = [orjson.dumps({"message": "m", "service": "api", "tenant": "acme"})]
    plan = plan_flush(
        "shard-0",
        [record(lines, seq=3)],
        [],
        Layout("logs", service_column=True),
        FieldMapping(extra_columns=(tenant,)),
    )
    files = [(o.key, o.body) for o in plan.objects]
    for key, body in files:
        aws.client("s3").put_object(Bucket=BUCKET, Key=key, Body=body)
    committer = TableCommitter(
        lambda: catalog.load_table("tideway.logs"),  # type: ignore[attr-defined]
        "logs",
        bucket=BUCKET,
        rng=random.Random(0),
    )
    assert await committer.commit("shard-0", 3, files) is True
    table = catalog.load_table("tideway.logs")  # type: ignore[attr-defined]
    assert table.schema().find_field("tenant").field_type == StringType()
    assert table.scan().to_arrow().column("tenant").to_pylist() == ["acme"]
    assert committer.stats.columns_added == 1
