"""Issue 17 (DESIGN §11): the consumer's files committed to an Iceberg table exactly once,
read back through pyiceberg (SQL catalog on SQLite, warehouse in the test backend's S3)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pyiceberg.expressions import EqualTo
from pyiceberg.table import Table

from service.aws import AwsClients
from service.compaction import run_compaction
from service.consume.context import iceberg_properties, shard_context, table_committer
from service.consume.leases import LeaseTable
from service.consume.reader import list_shards
from service.consume.shard import ShardConsumer
from service.resources import ensure_iceberg_table, setup
from service.schema import CANONICAL_FIELDS
from service.settings import Settings
from service.sink.iceberg import open_catalog
from service.sink.iceberg_commit import TableCommitter, watermark
from tests.conftest import Aws, drain, lineage_counts, object_keys

SERVICES = ("api", "web")


@pytest.fixture
async def iceberg(ready: Settings, clients: AwsClients, tmp_path: Path) -> Settings:
    """The test settings with an Iceberg table in a SQLite catalog, created by setup."""
    settings = Settings.load(
        None,
        **{
            **ready.model_dump(exclude_unset=True),
            "table_format": "iceberg",
            "iceberg_catalog": "sql",
            "iceberg_catalog_uri": f"sqlite:///{tmp_path}/catalog.db",
            "lease_duration": 1.0,  # an heir takes a dead worker's shard sooner
        },
    )
    assert await ensure_iceberg_table(clients.s3, settings) == "created"
    return settings


def load(clients: AwsClients, settings: Settings) -> Table:
    catalog = open_catalog(iceberg_properties(settings, clients.s3))
    return catalog.load_table(settings.iceberg_table)


def data_keys(aws: Aws, settings: Settings) -> list[str]:
    return [k for k in object_keys(aws, settings.bucket, "logs/") if k.endswith(".parquet")]


def put_services(aws: Aws, settings: Settings, shard_id: str, n: int, tag: str) -> None:
    """``n`` JSON lines to one shard, alternately of the services api and web."""
    kinesis = aws.client("kinesis")
    listing = kinesis.list_shards(StreamName=settings.stream)["Shards"]
    key = next(s["HashKeyRange"]["StartingHashKey"] for s in listing if s["ShardId"] == shard_id)
    for i in range(n):
        line = b'{"message": "%s-%d", "service": "%s", "level": "warn"}' % (
            tag.encode(),
            i,
            SERVICES[i % 2].encode(),
        )
        kinesis.put_record(
            StreamName=settings.stream, Data=line, PartitionKey="k", ExplicitHashKey=key
        )


def check_design_table(table: Table, settings: Settings) -> None:
    """DESIGN §11: the columns and types of §4 plus ``service``, partitioned by hour and
    service, at the consumer's location."""
    iceberg_types = {"timestamp[us, tz=UTC]": "timestamptz", "int32": "int", "string": "string"}
    expected = {f.name: (iceberg_types[str(f.type)], not f.nullable) for f in CANONICAL_FIELDS}
    expected["service"] = ("string", True)
    columns = {f.name: (str(f.field_type), f.required) for f in table.schema().fields}
    assert columns == expected
    assert table.location() == f"s3://{settings.bucket}/logs"
    assert [(f.name, str(f.transform)) for f in table.spec().fields] == [
        ("timestamp_hour", "hour"),
        ("service", "identity"),
    ]


async def test_consume_commits_every_line_once_to_a_table_that_prunes_by_service(
    aws: Aws, iceberg: Settings, clients: AwsClients
) -> None:
    assert (await setup(iceberg))["iceberg_table"] == "exists"
    check_design_table(load(clients, iceberg), iceberg)
    shards = sorted(await list_shards(clients.kinesis, iceberg.stream))
    for shard in shards:
        put_services(aws, iceberg, shard, 30, shard[-1:])

    await drain(iceberg)  # tideway consume --drain, in this process

    table = load(clients, iceberg)
    rows = table.scan().to_arrow()
    assert rows.num_rows == 60
    assert set(lineage_counts(rows).values()) == {1}
    assert sorted(rows.column("message").to_pylist()) == sorted(
        f"{s[-1:]}-{i}" for s in shards for i in range(30)
    )
    assert rows.schema.field("timestamp").type == pa.timestamp("us", tz="UTC")
    assert set(rows.column("severity_number").to_pylist()) == {13}
    # Files of the other service are pruned by the partition before any is opened.
    every = list(table.scan().plan_files())
    api = list(table.scan(row_filter=EqualTo("service", "api")).plan_files())
    assert 0 < len(api) < len(every)
    assert {t.file.partition[1] for t in api} == {"api"}
    assert table.scan(row_filter=EqualTo("service", "api")).to_arrow().num_rows == 30
    # The table's files are the consumer's own objects, under the table's location.
    assert sorted(t.file.file_path for t in every) == [
        f"s3://{iceberg.bucket}/{k}" for k in data_keys(aws, iceberg)
    ]
    snapshots = len(table.snapshots())

    # The same flushes committed again (a replay whose first commit landed) add nothing.
    committer = await table_committer(iceberg, clients.s3, seed=1)
    s3 = aws.client("s3")
    for shard in shards:
        last = watermark(table, iceberg.stream, shard)
        assert last is not None
        keys = [k for k in data_keys(aws, iceberg) if f"-{shard}-" in k]
        bodies = [(k, s3.get_object(Bucket=iceberg.bucket, Key=k)["Body"].read()) for k in keys]
        assert await committer.commit(shard, last, bodies) is False
    table = load(clients, iceberg)
    assert table.scan().to_arrow().num_rows == 60
    assert len(table.snapshots()) == snapshots
    # tideway compact leaves the hour still open alone, and the young objects of the
    # consumer's replayed flushes (unreferenced or not) are no orphans yet.
    report = await run_compaction(iceberg, older_than=0, orphans_older_than=2 * 86400)
    assert (report["table"], report["files_before"]) == ("tideway.logs", 0)
    assert report["orphans_removed"] == 0
    assert sorted(t.file.file_path for t in load(clients, iceberg).scan().plan_files()) == [
        f"s3://{iceberg.bucket}/{k}" for k in data_keys(aws, iceberg)
    ]


class CommitDies:
    """The worker's committer, but the process dies just before (``after=False``) or just
    after (``after=True``) its first commit reaches the catalog."""

    def __init__(self, inner: TableCommitter, *, after: bool) -> None:
        self._inner, self._after = inner, after

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def commit(self, shard_id: str, last: int, keys: Any, cut_by: Any = None) -> bool:
        if self._after:
            await self._inner.commit(shard_id, last, keys, cut_by)
        raise ConnectionError("the process died here")


@pytest.mark.parametrize("after", [False, True], ids=["before_commit", "after_commit"])
async def test_a_flush_interrupted_around_its_commit_is_in_the_table_exactly_once(
    aws: Aws, iceberg: Settings, clients: AwsClients, table: LeaseTable, after: bool
) -> None:
    shard = sorted(await list_shards(clients.kinesis, iceberg.stream))[0]
    put_services(aws, iceberg, shard, 20, "c")
    await table.ensure_shard(shard, ())
    leases, _ = await table.scan()
    lease = await table.acquire(leases[shard], "dies")
    ctx = shard_context(iceberg, clients.kinesis, clients.s3, clients.dynamodb, "dies")
    inner = await table_committer(iceberg, clients.s3, seed=2)
    ctx = dataclasses.replace(ctx, table=CommitDies(inner, after=after))  # type: ignore[arg-type]
    consumer = ShardConsumer(ctx, lease, lease.epoch, closed=False, budget_share=lambda: 1 << 40)
    with contextlib.suppress(ConnectionError):
        await asyncio.wait_for(consumer.run(asyncio.Event(), drain=True), 60)
    uploaded = data_keys(aws, iceberg)
    assert uploaded  # the files landed in S3; the intent is still open
    rows = load(clients, iceberg).scan().to_arrow()
    assert rows.num_rows == (20 if after else 0)

    await drain(iceberg)  # the next owner takes the dead worker's lease and replays

    result = load(clients, iceberg)
    rows = result.scan().to_arrow()
    assert rows.num_rows == 20
    assert set(lineage_counts(rows).values()) == {1}
    assert data_keys(aws, iceberg) == uploaded  # the same objects, written once
    assert len(result.snapshots()) == 1


async def test_setup_evolves_the_partition_spec_when_the_template_changes(
    iceberg: Settings, clients: AwsClients
) -> None:
    template = "dt={date}/hour={hour}/service={service}/lvl={severity_text:truncate[1]}"
    changed = iceberg.model_copy(update={"partition_template": template})
    assert await ensure_iceberg_table(clients.s3, changed) == "evolved"
    table = load(clients, changed)
    assert [(f.name, str(f.transform)) for f in table.spec().fields][-1] == (
        "severity_text_truncate",
        "truncate[1]",
    )
    assert len(table.specs()) > 1  # the first spec stays, for the files committed under it
    assert await ensure_iceberg_table(clients.s3, changed) == "exists"
    assert await ensure_iceberg_table(clients.s3, iceberg) == "evolved"  # and back
    check_design_table(load(clients, iceberg), iceberg)
