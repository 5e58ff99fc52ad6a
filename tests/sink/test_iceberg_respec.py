"""Issue 17: partition-spec evolution. When the partition template gains a column key the
table's spec evolves (the files already committed keep theirs), new flushes are committed
under the new spec, a flush still cut by the old template (a pinned replay, a consumer not
yet restarted) is fitted to it instead of failing, and compaction rewrites the old spec's
files under the new one; every row is read back exactly once, and a filter on the new key
prunes by partition (SQLite catalog, files in the test backend's S3)."""

from __future__ import annotations

import random
from pathlib import Path

import orjson
import pyarrow as pa
import pytest
from pyiceberg.catalog import Catalog
from pyiceberg.expressions import EqualTo
from pyiceberg.table import Table

from service.schema import table_schema
from service.sink.compact import compact
from service.sink.iceberg import (
    SpansPartitions,
    catalog_properties,
    data_file,
    ensure_table,
    open_catalog,
)
from service.sink.iceberg_respec import RESPEC_PREFIX, evolve_spec
from service.sink.iceberg_tables import TableRouter
from service.sink.parquet import decode_parquet
from service.sink.partition import PartitionTemplate
from service.sink.plan import Layout, plan_flush
from tests.builders import ARRIVAL, MAPPING, record
from tests.conftest import Aws, lineage_counts

BUCKET = "iceberg-respec"
IDENTIFIER = "tideway.logs"
OLD = PartitionTemplate()  # dt={date}/hour={hour}/service={service}
NEW = PartitionTemplate("dt={date}/hour={hour}/service={service}/lvl={severity_text}")
LEVELS = ("error", "warn", "info")


@pytest.fixture
def catalog(aws: Aws, tmp_path: Path) -> Catalog:
    aws.client("s3").create_bucket(Bucket=BUCKET)
    props = catalog_properties(
        {"type": "sql", "uri": f"sqlite:///{tmp_path}/c.db", "warehouse": f"s3://{BUCKET}/w"},
        s3_endpoint=aws.endpoint,
        region="us-east-1",
    )
    made = open_catalog(props)
    ensure_table(made, IDENTIFIER, f"s3://{BUCKET}/logs", table_schema(service=True), OLD.keys)
    return made


def router(catalog: Catalog, template: PartitionTemplate) -> TableRouter:
    """A consumer's tables, with ``template`` as its partition template."""
    return TableRouter(
        catalog,
        IDENTIFIER,
        stream="logs",
        bucket=BUCKET,
        prefix="",
        schema=table_schema(service=True),
        rng=random.Random(0),
        keys=template.keys,
    )


def uploaded(
    aws: Aws, shard: str, last: int, template: PartitionTemplate
) -> list[tuple[str, bytes]]:
    """The data objects of one flush (12 lines of two services and three levels) planned
    under ``template``, uploaded."""
    lines = [
        orjson.dumps(
            {
                "message": f"{shard}-{last}-{i}",
                "service": ("api", "web")[i % 2],
                "level": LEVELS[i % 3],
            }
        )
        for i in range(12)
    ]
    layout = Layout("logs", template=template, service_column=True)
    plan = plan_flush(shard, [record(lines, seq=last)], [], layout, MAPPING)
    s3 = aws.client("s3")
    for obj in plan.objects:
        s3.put_object(Bucket=BUCKET, Key=obj.key, Body=obj.body)
    return [(o.key, o.body) for o in plan.objects if o.key.endswith(".parquet")]


def spec_of(table: Table) -> list[tuple[str, str]]:
    return [(f.name, str(f.transform)) for f in table.spec().fields]


def uniform(table: Table, path: str, column: str) -> bool:
    """Whether every row of the committed file ``path`` has one value of ``column``."""
    with table.io.new_input(path).open() as stream:
        rows = decode_parquet(stream.read())
    return len(set(rows.column(column).to_pylist())) == 1


async def test_a_template_change_evolves_the_spec_and_every_row_is_read_once_across_it(
    aws: Aws, catalog: Catalog
) -> None:
    before = router(catalog, OLD)
    await before.open("logs", create=False)
    for last in (1, 2):
        await before.commit("shard-0", last, uploaded(aws, "shard-0", last, OLD), OLD.keys)
    old_spec = catalog.load_table(IDENTIFIER).spec().spec_id

    after = router(catalog, NEW)  # a consumer restarted with the new template
    await after.open("logs", create=False)
    table = catalog.load_table(IDENTIFIER)
    assert spec_of(table) == [
        ("timestamp_hour", "hour"),
        ("service", "identity"),
        ("severity_text", "identity"),
    ]
    new_spec = table.spec().spec_id
    for last in (3, 4):
        await after.commit("shard-0", last, uploaded(aws, "shard-0", last, NEW), NEW.keys)
    # A consumer still on the old template (its table read before the spec moved), and a
    # replay of an intent pinned with it: neither fails, both are fitted to the new spec.
    assert await before.commit("shard-1", 5, uploaded(aws, "shard-1", 5, OLD), OLD.keys)
    assert await after.commit("shard-1", 6, uploaded(aws, "shard-1", 6, OLD), OLD.keys)

    table = catalog.load_table(IDENTIFIER)
    rows = table.scan().to_arrow()
    assert rows.num_rows == 6 * 12
    assert set(lineage_counts(rows).values()) == {1}
    files = [t.file for t in table.scan().plan_files()]
    old = [f for f in files if f.spec_id == old_spec]
    new = [f for f in files if f.spec_id == new_spec]
    assert len(old) + len(new) == len(files)
    assert len(old) == 4  # two flushes x two services: they keep the old spec
    assert all(f"/{RESPEC_PREFIX}" not in f.file_path for f in old)
    fitted = [f for f in new if f"/{RESPEC_PREFIX}" in f.file_path]
    assert len(fitted) == 2 * 6  # two old-template flushes x two services x three levels
    for f in new:  # every new-spec file holds exactly its partition's level
        assert uniform(table, f.file_path, "severity_text")
        assert f.partition[2] is not None

    # Pruning on the new key: every new-spec file planned for error is error's partition,
    # and the scan still returns exactly the error rows of both specs.
    errors = table.scan(row_filter=EqualTo("severity_text", "error"))
    planned = [t.file for t in errors.plan_files()]
    assert {f.partition[2] for f in planned if f.spec_id == new_spec} == {"error"}
    assert len([f for f in planned if f.spec_id == new_spec]) < len(new)
    assert errors.to_arrow().num_rows == 6 * 4

    # Compaction of the closed hour: the old spec's files are rewritten under the new one
    # (one output per level), rows unchanged.
    by_key = sorted(lineage_counts(rows))
    report = compact(
        lambda: catalog.load_table(IDENTIFIER),
        now=ARRIVAL / 1e6 + 3 * 3600,
        older_than=3600,
        target=1 << 20,
        rng=random.Random(0),
    )
    assert report.files_before > 0
    table = catalog.load_table(IDENTIFIER)
    after_rows = table.scan().to_arrow()
    assert sorted(lineage_counts(after_rows)) == by_key
    assert set(lineage_counts(after_rows).values()) == {1}
    compacted = [t.file for t in table.scan().plan_files()]
    assert {f.spec_id for f in compacted} == {new_spec}
    assert all(uniform(table, f.file_path, "severity_text") for f in compacted)
    # The old spec's files were binned by their old partition (hour, service): their
    # outputs sit beside the new spec's compacted files until the next run merges them.
    assert len(compacted) == 2 * (2 * 3)
    again = compact(
        lambda: catalog.load_table(IDENTIFIER),
        now=ARRIVAL / 1e6 + 3 * 3600,
        older_than=3600,
        target=1 << 20,
        rng=random.Random(0),
    )
    assert (again.files_before, again.files_after) == (12, 6)  # hour x services x levels
    final = catalog.load_table(IDENTIFIER).scan().to_arrow()
    assert sorted(lineage_counts(final)) == by_key
    assert set(lineage_counts(final).values()) == {1}


def test_a_changed_transform_keeps_its_name_and_evolving_again_is_a_no_op(
    catalog: Catalog,
) -> None:
    schema = table_schema(service=True)
    one = PartitionTemplate("dt={date}/hour={hour}/service={service}/l={severity_text:truncate[1]}")
    two = PartitionTemplate("dt={date}/hour={hour}/service={service}/l={severity_text:truncate[2]}")
    table, evolved = evolve_spec(catalog.load_table(IDENTIFIER), one.keys, schema)
    assert evolved
    table, evolved = evolve_spec(table, two.keys, schema)
    assert evolved
    assert spec_of(table)[-1] == ("severity_text_truncate", "truncate[2]")
    assert table.properties["write.metadata.metrics.column.severity_text"] == "full"
    specs = len(table.specs())
    assert evolve_spec(catalog.load_table(IDENTIFIER), two.keys, schema)[1] is False
    assert len(catalog.load_table(IDENTIFIER).specs()) == specs
    # Back to the original template: the field goes, the table is as partitioned as before.
    table, evolved = evolve_spec(table, OLD.keys, schema)
    assert evolved
    assert spec_of(table) == [("timestamp_hour", "hour"), ("service", "identity")]


def test_a_file_spanning_partitions_of_the_spec_is_refused_not_misfiled(
    aws: Aws, catalog: Catalog
) -> None:
    bucketed = PartitionTemplate("dt={date}/hour={hour}/service={service}/hb={host:bucket[4]}")
    table, _ = evolve_spec(
        catalog.load_table(IDENTIFIER), bucketed.keys, table_schema(service=True)
    )
    rows = [orjson.dumps({"message": f"m{i}", "service": "api", "host": f"h{i}"}) for i in range(8)]
    plan = plan_flush("shard-0", [record(rows)], [], Layout("logs", service_column=True), MAPPING)
    (body,) = [o.body for o in plan.objects if o.key.endswith(".parquet")]
    assert len(set(decode_parquet(body).column("host").to_pylist())) == 8
    with pytest.raises(SpansPartitions, match="host_bucket"):
        data_file(table.metadata, f"s3://{BUCKET}/x.parquet", body)
    # A file of one bucket (two hosts in it) is taken, with that bucket.
    one = [
        o.body
        for o in plan_flush(
            "shard-0",
            [record(rows)],
            [],
            Layout("logs", template=bucketed, service_column=True),
            MAPPING,
        ).objects
        if o.key.endswith(".parquet")
    ]
    hosts = [pa.compute.unique(decode_parquet(b).column("host")).to_pylist() for b in one]
    assert any(len(h) > 1 for h in hosts)  # the bucket check reads the column's values
    for b in one:
        assert data_file(table.metadata, f"s3://{BUCKET}/y.parquet", b).partition[2] is not None
