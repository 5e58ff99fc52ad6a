"""An Iceberg table under concurrency and compaction (docs/tables.md): racing workers, a
zombie and its heir committing the same flush, group commit, and `tideway compact` (SQLite
catalog, files in the test backend's S3)."""

from __future__ import annotations

import asyncio
import functools
import random
import time
from pathlib import Path

import orjson
import pyarrow as pa
import pytest
from pyiceberg.expressions import EqualTo
from pyiceberg.table import Table

from service.aws import aws_clients
from service.compaction import remove_orphans
from service.consume.context import table_committer
from service.resources import ensure_iceberg_table
from service.schema import table_schema
from service.settings import Settings
from service.sink.compact import compact, expire_snapshots
from service.sink.iceberg import catalog_properties, ensure_table, open_catalog
from service.sink.iceberg_commit import TableCommitter, watermark
from service.sink.plan import Layout, plan_flush
from tests.builders import ARRIVAL, MAPPING, record
from tests.conftest import Aws

STREAM = "logs"
BUCKET = "iceberg-commits"
IDENTIFIER = "tideway.logs"


@pytest.fixture
def catalog_props(aws: Aws, tmp_path: Path) -> dict[str, str]:
    aws.client("s3").create_bucket(Bucket=BUCKET)
    props = catalog_properties(
        {"type": "sql", "uri": f"sqlite:///{tmp_path}/catalog.db", "warehouse": f"s3://{BUCKET}/w"},
        s3_endpoint=aws.endpoint,
        region="us-east-1",
    )
    state, _ = ensure_table(
        open_catalog(props), IDENTIFIER, f"s3://{BUCKET}/logs", table_schema(service=True)
    )
    assert state == "created"
    return props


def committer(props: dict[str, str], seed: int) -> TableCommitter:
    catalog = open_catalog(props)  # each worker has its own catalog client
    return TableCommitter(
        lambda: catalog.load_table(IDENTIFIER), STREAM, bucket=BUCKET, rng=random.Random(seed)
    )


def uploaded_flush(
    aws: Aws, shard: str, last: int, *, lines: int = 3, service: str = "api", bucket: str = BUCKET
) -> list[tuple[str, bytes]]:
    """The data objects of one flush of ``shard`` ending at ``last``, uploaded."""
    rows = [
        orjson.dumps({"message": f"{shard}-{last}-{i}", "service": service}) for i in range(lines)
    ]
    plan = plan_flush(
        shard, [record(rows, seq=last)], [], Layout(STREAM, service_column=True), MAPPING
    )
    s3 = aws.client("s3")
    for obj in plan.objects:
        s3.put_object(Bucket=bucket, Key=obj.key, Body=obj.body)
    return [(o.key, o.body) for o in plan.objects]


def table_of(props: dict[str, str]) -> Table:
    return open_catalog(props).load_table(IDENTIFIER)


async def test_racing_workers_a_zombie_and_its_heir_commit_every_flush_once(
    aws: Aws, catalog_props: dict[str, str]
) -> None:
    a, b = committer(catalog_props, 1), committer(catalog_props, 2)
    flushes = {
        f"shard-{w}{i}": uploaded_flush(aws, f"shard-{w}{i}", 10 + i)
        for w in "ab"
        for i in range(3)
    }
    contested = uploaded_flush(aws, "shard-z", 50)  # the zombie's and the heir's replay

    results = await asyncio.gather(
        *(a.commit(s, 10 + int(s[-1]), f) for s, f in flushes.items() if s[-2] == "a"),
        *(b.commit(s, 10 + int(s[-1]), f) for s, f in flushes.items() if s[-2] == "b"),
        a.commit("shard-z", 50, contested),
        b.commit("shard-z", 50, contested),
    )

    assert results[:6] == [True] * 6
    assert sorted(results[6:]) == [False, True]  # exactly one of them added it
    table = table_of(catalog_props)
    rows = table.scan().to_arrow()
    assert rows.num_rows == 7 * 3
    assert sorted(rows.column("message").to_pylist()) == sorted(
        f"{s}-{last}-{i}"
        for s, last in [*((s, 10 + int(s[-1])) for s in flushes), ("shard-z", 50)]
        for i in range(3)
    )
    assert watermark(table, STREAM, "shard-z") == 50
    assert all(watermark(table, STREAM, s) == 10 + int(s[-1]) for s in flushes)


async def test_flushes_waiting_for_a_commit_go_into_one_snapshot(
    aws: Aws, catalog_props: dict[str, str]
) -> None:
    c = committer(catalog_props, 3)
    flushes = [(f"shard-{i}", uploaded_flush(aws, f"shard-{i}", 7)) for i in range(6)]

    added = await asyncio.gather(*(c.commit(s, 7, f) for s, f in flushes))

    assert added == [True] * 6
    # The first commit runs alone; the five that arrived meanwhile share the next snapshot.
    assert c.commits == 2
    table = table_of(catalog_props)
    assert len(table.snapshots()) == 2
    assert table.scan().to_arrow().num_rows == 6 * 3
    summary = table.current_snapshot().summary  # type: ignore[union-attr]
    assert sum(k.startswith("tideway.shard.") for k in summary.additional_properties) == 5


async def test_a_table_with_pyiceberg_commit_retries_on_gets_them_turned_off_first(
    aws: Aws, catalog_props: dict[str, str]
) -> None:
    with table_of(catalog_props).transaction() as tx:
        tx.set_properties({"commit.retry.num-retries": "4"})
    c = committer(catalog_props, 4)
    assert await c.commit("shard-0", 3, uploaded_flush(aws, "shard-0", 3)) is True
    table = table_of(catalog_props)
    assert table.properties["commit.retry.num-retries"] == "0"
    assert table.scan().to_arrow().num_rows == 3


def by_lineage(table: pa.Table) -> list[dict[str, object]]:
    rows = table.to_pylist()
    return sorted(
        rows,
        key=lambda r: (
            r["kinesis_shard_id"],
            int(r["kinesis_sequence_number"]),
            r["kinesis_sub_sequence"],
        ),
    )


async def test_compact_rewrites_closed_partitions_in_one_commit_rows_and_watermarks_unchanged(
    aws: Aws, catalog_props: dict[str, str]
) -> None:
    c = committer(catalog_props, 5)
    for last in range(1, 6):
        await c.commit("shard-0", last, uploaded_flush(aws, "shard-0", last))
    for last in (11, 12):
        await c.commit("shard-1", last, uploaded_flush(aws, "shard-1", last, service="web"))
    before = table_of(catalog_props)
    rows_before = by_lineage(before.scan().to_arrow())
    hour_start = ARRIVAL / 1e6  # every row's hour (the lines carry no time)
    run = functools.partial(
        compact,
        lambda: table_of(catalog_props),
        older_than=3600,
        target=1 << 20,
        rng=random.Random(0),
    )

    # The hour ended 30 minutes ago: still open, nothing is rewritten.
    assert run(now=hour_start + 3600 + 1800).files_before == 0
    report = run(now=hour_start + 3 * 3600)

    assert (report.partitions, report.files_before, report.files_after, report.rows) == (
        2,
        7,
        2,
        21,
    )
    after = table_of(catalog_props)
    assert len(after.snapshots()) == len(before.snapshots()) + 1
    assert after.current_snapshot().snapshot_id == report.snapshot_id  # type: ignore[union-attr]
    files = [t.file for t in after.scan().plan_files()]
    assert len(files) == 2
    assert all("/compacted-" in f.file_path for f in files)
    assert by_lineage(after.scan().to_arrow()) == rows_before
    assert after.scan(row_filter=EqualTo("service", "web")).to_arrow().num_rows == 6
    assert (watermark(after, STREAM, "shard-0"), watermark(after, STREAM, "shard-1")) == (5, 12)
    # A replay of an old flush still finds it committed; a second run has nothing to do.
    assert await c.commit("shard-0", 5, uploaded_flush(aws, "shard-0", 5)) is False
    assert run(now=hour_start + 3 * 3600).files_before == 0
    assert len(table_of(catalog_props).snapshots()) == len(after.snapshots())

    # Expiry forgets every snapshot but the current one; rows and watermarks stay.
    expired = expire_snapshots(
        lambda: table_of(catalog_props), now=time.time() + 60, keep_for=0, rng=random.Random(0)
    )
    assert expired == len(after.snapshots()) - 1
    final = table_of(catalog_props)
    assert [s.snapshot_id for s in final.snapshots()] == [report.snapshot_id]
    assert by_lineage(final.scan().to_arrow()) == rows_before
    assert watermark(final, STREAM, "shard-0") == 5
    assert await c.commit("shard-0", 5, uploaded_flush(aws, "shard-0", 5)) is False


async def test_the_glue_catalog_takes_the_table_and_the_same_exactly_once_commits(
    aws: Aws, settings: Settings
) -> None:
    glue = settings.model_copy(update={"table_format": "iceberg", "iceberg_catalog": "glue"})
    aws.client("s3").create_bucket(Bucket=glue.bucket)
    async with aws_clients("s3") as clients:
        assert await ensure_iceberg_table(clients.s3, glue) == "created"
        assert await ensure_iceberg_table(clients.s3, glue) == "exists"
        c = await table_committer(glue, clients.s3, seed=6)
    files = uploaded_flush(aws, "shard-0", 9, bucket=glue.bucket)
    assert await c.commit("shard-0", 9, files) is True
    assert await c.commit("shard-0", 9, files) is False
    assert await c.committed("shard-0") == 9
    table = aws.client("glue").get_table(DatabaseName="tideway", Name="logs")["Table"]
    assert table["Parameters"]["table_type"].upper() == "ICEBERG"


async def test_orphan_removal_deletes_old_unreferenced_files_and_spares_referenced_and_young(
    aws: Aws, catalog_props: dict[str, str]
) -> None:
    s3 = aws.client("s3")
    c = committer(catalog_props, 7)
    inputs = [uploaded_flush(aws, "shard-0", last)[0][0] for last in (1, 2, 3)]
    for last in (1, 2, 3):
        await c.commit("shard-0", last, uploaded_flush(aws, "shard-0", last))
    report = compact(
        lambda: table_of(catalog_props),
        now=ARRIVAL / 1e6 + 3 * 3600,
        older_than=3600,
        target=1 << 20,
        rng=random.Random(0),
    )
    assert report.files_before == 3
    lost_race = f"{inputs[0].rsplit('/', 1)[0]}/compacted-0123456789abcdef0123.parquet"
    s3.put_object(Bucket=BUCKET, Key=lost_race, Body=b"PAR1 a bin dropped after a lost race")
    await asyncio.sleep(1.1)  # S3 times have one-second steps: the next upload is younger
    in_flight = uploaded_flush(aws, "shard-1", 4)  # uploaded, its commit not landed yet
    young = s3.head_object(Bucket=BUCKET, Key=in_flight[0][0])["LastModified"].timestamp()
    rows = by_lineage(table_of(catalog_props).scan().to_arrow())

    def exists(key: str) -> bool:
        return bool(s3.list_objects_v2(Bucket=BUCKET, Prefix=key).get("KeyCount"))

    async def remove() -> list[str]:
        async with aws_clients("s3") as clients:
            load = functools.partial(table_of, catalog_props)
            return await remove_orphans(clients.s3, load, now=young + 0.5, older_than=1.0)

    # The compacted inputs are still named by older snapshots: only the lost race's goes.
    assert await remove() == [f"s3://{BUCKET}/{lost_race}"]
    assert all(exists(k) for k in inputs) and exists(in_flight[0][0])
    expire_snapshots(
        lambda: table_of(catalog_props), now=time.time() + 60, keep_for=0, rng=random.Random(0)
    )
    # Expired: the inputs are orphans now; the young upload and the table's files stay.
    assert await remove() == sorted(f"s3://{BUCKET}/{k}" for k in inputs)
    table = table_of(catalog_props)
    assert by_lineage(table.scan().to_arrow()) == rows
    assert all(exists(t.file.file_path.split("/", 3)[3]) for t in table.scan().plan_files())
    assert await c.commit("shard-1", 4, in_flight) is True
    assert table_of(catalog_props).scan().to_arrow().num_rows == len(rows) + 3
    assert any(k.endswith(".metadata.json") for k in _keys(s3, "logs/metadata/"))


def _keys(s3: object, prefix: str) -> list[str]:
    page = s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)  # type: ignore[attr-defined]
    return [o["Key"] for o in page.get("Contents", [])]
