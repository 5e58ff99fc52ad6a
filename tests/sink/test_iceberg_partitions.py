"""Issue 17: the partition template as the Iceberg table's partition spec. Keys that are
columns become ``identity``, ``truncate[W]`` or ``bucket[N]`` fields (the Hive path shows the
same transformed value), every file holds one partition even in the guard's overflow, and a
pyiceberg row filter prunes files by them (SQLite catalog, files in the test backend's S3)."""

from __future__ import annotations

import io
import random
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest
from pyiceberg.expressions import EqualTo
from pyiceberg.transforms import BucketTransform
from pyiceberg.types import StringType

from service.schema import table_schema
from service.sink.iceberg import catalog_properties, ensure_table, open_catalog
from service.sink.iceberg_commit import TableCommitter
from service.sink.iceberg_spec import spec_fields
from service.sink.partition import PartitionTemplate
from service.sink.plan import Layout, plan_flush
from tests.builders import MAPPING, record
from tests.conftest import Aws

BUCKET = "iceberg-partitions"
TEMPLATE = (
    "dt={date}/hour={hour}/service={service}/lvl={severity_text:truncate[1]}/hb={host:bucket[4]}"
)
HOSTS = [f"h{i}" for i in range(4)]


def test_template_keys_map_to_iceberg_transforms_and_attributes_shape_keys_only() -> None:
    template = PartitionTemplate(
        "dt={date}/hour={hour}/service={service}/t={host:truncate[3]}/b={trace_id:bucket[16]}"
        "/env={attributes.env}/lg={log_group}/h={severity_text}"
    )
    assert [(f.source, str(f.transform), f.name) for f in spec_fields(template.keys)] == [
        ("timestamp", "hour", "timestamp_hour"),
        ("service", "identity", "service"),
        ("host", "truncate[3]", "host_truncate"),
        ("trace_id", "bucket[16]", "trace_id_bucket"),
        ("severity_text", "identity", "severity_text"),
    ]
    with pytest.raises(ValueError, match="truncate\\[W\\] or bucket\\[N\\]"):
        PartitionTemplate("dt={date}/service={service}/x={host:hash[2]}")


def flush(layout: Layout, last: int) -> list[tuple[str, bytes]]:
    lines = [
        orjson.dumps({"message": f"m{i}", "service": "api", "host": h, "level": lvl})
        for i, (h, lvl) in enumerate((h, lvl) for h in HOSTS for lvl in ("error", "warn"))
    ]
    plan = plan_flush("shard-0", [record(lines, seq=last)], [], layout, MAPPING)
    return [(o.key, o.body) for o in plan.objects if o.key.endswith(".parquet")]


@pytest.fixture
def props(aws: Aws, tmp_path: Path) -> dict[str, str]:
    aws.client("s3").create_bucket(Bucket=BUCKET)
    return catalog_properties(
        {"type": "sql", "uri": f"sqlite:///{tmp_path}/c.db", "warehouse": f"s3://{BUCKET}/w"},
        s3_endpoint=aws.endpoint,
        region="us-east-1",
    )


async def test_truncate_and_bucket_partitions_prune_a_row_filter_and_match_the_path(
    aws: Aws, props: dict[str, str]
) -> None:
    template = PartitionTemplate(TEMPLATE)
    catalog = open_catalog(props)
    ensure_table(
        catalog, "tideway.logs", f"s3://{BUCKET}/logs", table_schema(service=True), template.keys
    )
    files = flush(Layout("logs", template=template, service_column=True), 5)
    s3 = aws.client("s3")
    for key, body in files:
        s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    committer = TableCommitter(
        lambda: catalog.load_table("tideway.logs"), "logs", bucket=BUCKET, rng=random.Random(0)
    )
    assert await committer.commit("shard-0", 5, files) is True

    table = catalog.load_table("tideway.logs")
    assert table.scan().to_arrow().num_rows == 8
    every = list(table.scan().plan_files())
    bucket = BucketTransform(4).transform(StringType())
    for task in every:  # the Hive path names the partition Iceberg records
        path = task.file.file_path
        assert f"/hb={task.file.partition[3]}/" in path
        assert f"/lvl={task.file.partition[2]}/" in path
    h1 = list(table.scan(row_filter=EqualTo("host", "h1")).plan_files())
    assert 0 < len(h1) < len(every)
    assert {t.file.partition[3] for t in h1} == {bucket("h1")}
    rows = table.scan(row_filter=EqualTo("host", "h1")).to_arrow()
    assert sorted(rows.column("severity_text").to_pylist()) == ["error", "warn"]
    errors = list(table.scan(row_filter=EqualTo("severity_text", "error")).plan_files())
    assert {t.file.partition[2] for t in errors} == {"e"}


async def test_rows_the_guard_overflows_commit_as_one_partition_and_keep_their_values(
    aws: Aws, props: dict[str, str]
) -> None:
    template = PartitionTemplate("dt={date}/hour={hour}/service={service}/h={host}")
    catalog = open_catalog(props)
    ensure_table(
        catalog, "tideway.logs", f"s3://{BUCKET}/logs", table_schema(service=True), template.keys
    )
    layout = Layout("logs", template=template, service_column=True, max_partitions=3)
    files = flush(layout, 6)
    s3 = aws.client("s3")
    for key, body in files:
        s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    other = [b for k, b in files if "/h=__other__/" in k]
    assert other
    rows = pq.read_table(io.BytesIO(other[0])).to_pylist()
    assert {r["host"] for r in rows} == {"__other__"}
    assert {orjson.loads(r["attributes"])["host"] for r in rows} <= set(HOSTS)
    committer = TableCommitter(
        lambda: catalog.load_table("tideway.logs"), "logs", bucket=BUCKET, rng=random.Random(0)
    )
    assert await committer.commit("shard-0", 6, files) is True
    table = catalog.load_table("tideway.logs")
    assert table.scan().to_arrow().num_rows == 8
