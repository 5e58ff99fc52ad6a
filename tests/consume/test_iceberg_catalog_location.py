"""Issue 17: a catalog that chooses each table's location (as S3 Tables does: the table
bucket's warehouse). pyiceberg's SQL catalog (SQLite), and a small REST catalog over it
that refuses any location but its own (tests/rest_catalog.py), stand in for it: with
TIDEWAY_ICEBERG_TABLE_LOCATION=catalog, ``tideway setup`` lets it put the tables under its
warehouse in another bucket, and the consumer uploads each table's files under that
table's ``{location}/data`` with the same deterministic names, commits them exactly once,
and a flush interrupted around its commit is replayed into the same objects."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.expressions import EqualTo

from service.aws import AwsClients
from service.compaction import run_compaction
from service.consume.context import shard_context, table_committer
from service.consume.leases import LeaseTable
from service.consume.reader import list_shards
from service.consume.shard import ShardConsumer
from service.resources import setup
from service.settings import Settings
from service.sink.iceberg import catalog_properties
from tests.conftest import Aws, drain, lineage_counts, object_keys
from tests.consume.test_iceberg import CommitDies, load, put_services
from tests.rest_catalog import rest_catalog

WAREHOUSE_BUCKET = "table-bucket-warehouse"
PIPELINES = """
[[pipeline]]
name = "web"
match = 'service == "web"'
table = "web"
"""


@pytest.fixture(params=["sql", "rest"])
async def placed(
    request: pytest.FixtureRequest, ready: Settings, aws: Aws, tmp_path: Path
) -> AsyncIterator[Settings]:
    """Iceberg settings whose catalog puts tables under its own warehouse, in a bucket
    that is not Tideway's, with a pipeline routing the web service to its own table: the
    SQL catalog itself, or the small REST catalog of tests/rest_catalog.py over one."""
    aws.client("s3").create_bucket(Bucket=WAREHOUSE_BUCKET)
    pipelines = tmp_path / "pipelines.toml"
    pipelines.write_text(PIPELINES)
    sql = {
        "type": "sql",
        "uri": f"sqlite:///{tmp_path}/catalog.db",
        "warehouse": f"s3://{WAREHOUSE_BUCKET}/wh",
    }
    with contextlib.ExitStack() as stack:
        catalog = sql
        if request.param == "rest":
            behind = catalog_properties(sql, s3_endpoint=aws.endpoint, region="us-east-1")
            uri = stack.enter_context(
                rest_catalog(SqlCatalog("rest", **behind), f"s3://{WAREHOUSE_BUCKET}/wh")
            )
            catalog = {"type": "rest", "uri": uri}
        settings = Settings.load(
            None,
            **{
                **ready.model_dump(exclude_unset=True),
                "table_format": "iceberg",
                "iceberg_catalog": orjson.dumps(catalog).decode(),
                "iceberg_table_location": "catalog",
                "pipelines": str(pipelines),
                "lease_duration": 1.0,
            },
        )
        assert (await setup(settings))["iceberg_table"] == "created"
        yield settings


def table_files(aws: Aws, location: str) -> list[str]:
    """The Parquet objects under an ``s3://`` location, as URLs."""
    bucket, _, prefix = location.removeprefix("s3://").partition("/")
    keys = object_keys(aws, bucket, prefix + "/")
    return [f"s3://{bucket}/{k}" for k in keys if k.endswith(".parquet")]


async def test_files_go_under_the_location_the_catalog_gave_each_table(
    aws: Aws, placed: Settings, clients: AwsClients
) -> None:
    logs = load(clients, placed)
    assert logs.location().startswith(f"s3://{WAREHOUSE_BUCKET}/wh/")  # the catalog's choice
    shards = sorted(await list_shards(clients.kinesis, placed.stream))
    for shard in shards:
        put_services(aws, placed, shard, 20, shard[-1:])

    await drain(placed)

    catalog_tables = {
        name: load(clients, placed.model_copy(update={"iceberg_table": f"tideway.{name}"}))
        for name in ("logs", "web")
    }
    seen = 0
    for name, table in catalog_tables.items():
        rows = table.scan().to_arrow()
        assert set(rows.column("service").to_pylist()) == {"web" if name == "web" else "api"}
        assert set(lineage_counts(rows).values()) == {1}
        seen += rows.num_rows
        # Every committed file is one of the consumer's deterministic objects, under the
        # table's own data path; nothing else is there.
        committed = sorted(t.file.file_path for t in table.scan().plan_files())
        assert committed == table_files(aws, f"{table.location()}/data")
        assert all("/data/dt=" in p and f"{placed.stream}-shardId-" in p for p in committed)
    assert seen == 40
    # Tideway's own bucket holds no table data: only what is not a table's (none here).
    assert [k for k in object_keys(aws, placed.bucket) if k.endswith(".parquet")] == []
    api = catalog_tables["logs"].scan(row_filter=EqualTo("service", "api"))
    assert api.to_arrow().num_rows == 20
    # tideway compact finds the pipeline's table by its watermarks (it is not under the
    # prefix), and removes no orphan from either location.
    report = await run_compaction(placed, older_than=0, orphans_older_than=2 * 86400)
    assert [r["table"] for r in report["pipeline_tables"]] == ["tideway.web"]
    assert report["orphans_removed"] == 0


@pytest.mark.parametrize("after", [False, True], ids=["before_commit", "after_commit"])
async def test_a_flush_interrupted_around_its_commit_is_replayed_into_the_same_objects(
    aws: Aws, placed: Settings, clients: AwsClients, table: LeaseTable, after: bool
) -> None:
    shard = sorted(await list_shards(clients.kinesis, placed.stream))[0]
    put_services(aws, placed, shard, 20, "c")
    await table.ensure_shard(shard, ())
    leases, _ = await table.scan()
    lease = await table.acquire(leases[shard], "dies")
    ctx = shard_context(placed, clients.kinesis, clients.s3, clients.dynamodb, "dies")
    inner = await table_committer(placed, clients.s3, seed=2)
    ctx = dataclasses.replace(ctx, table=CommitDies(inner, after=after))  # type: ignore[arg-type]
    consumer = ShardConsumer(ctx, lease, lease.epoch, closed=False, budget_share=lambda: 1 << 40)
    with contextlib.suppress(ConnectionError):
        await asyncio.wait_for(consumer.run(asyncio.Event(), drain=True), 60)
    location = load(clients, placed).location()
    uploaded = table_files(aws, location)
    assert uploaded  # the upload went to the catalog's location; the intent is still open
    assert load(clients, placed).scan().to_arrow().num_rows == (10 if after else 0)

    await drain(placed)  # the next owner replays the intent

    result = load(clients, placed)
    rows = result.scan().to_arrow()
    assert rows.num_rows == 10  # the api half; the web half is in tideway.web
    assert set(lineage_counts(rows).values()) == {1}
    assert table_files(aws, location) == uploaded  # the same objects, written once
    assert sorted(t.file.file_path for t in result.scan().plan_files()) == uploaded
