"""Issue 17, DESIGN §6: Iceberg commits are counted (snapshots, conflicts, files, bytes,
latency) as a worker's Prometheus metrics (SQLite catalog, files in the test backend's S3)."""

from __future__ import annotations

import random
from pathlib import Path

import orjson
from prometheus_client import CollectorRegistry

from service.schema import table_schema
from service.sink.iceberg import catalog_properties, ensure_table, open_catalog
from service.sink.iceberg_commit import FlushFiles, TableCommitter, TableFile
from service.sink.plan import Layout, plan_flush
from service.telemetry.iceberg import IcebergMetrics
from tests.builders import MAPPING, record
from tests.conftest import Aws

BUCKET = "iceberg-metrics"


async def test_commits_conflicts_files_bytes_and_latency_are_counted(
    aws: Aws, tmp_path: Path
) -> None:
    aws.client("s3").create_bucket(Bucket=BUCKET)
    props = catalog_properties(
        {"type": "sql", "uri": f"sqlite:///{tmp_path}/c.db", "warehouse": f"s3://{BUCKET}/w"},
        s3_endpoint=aws.endpoint,
        region="us-east-1",
    )
    catalog = open_catalog(props)
    ensure_table(catalog, "tideway.logs", f"s3://{BUCKET}/logs", table_schema(service=True))
    lines = [orjson.dumps({"message": "m", "service": s}) for s in ("api", "web")]
    plan = plan_flush(
        "shard-0", [record(lines, seq=4)], [], Layout("logs", service_column=True), MAPPING
    )
    files = [(o.key, o.body) for o in plan.objects]
    for key, body in files:
        aws.client("s3").put_object(Bucket=BUCKET, Key=key, Body=body)
    registry = CollectorRegistry()
    metrics = IcebergMetrics(registry)
    stale = catalog.load_table("tideway.logs")  # read before the other worker's commit
    loads = iter([stale])

    def load():  # type: ignore[no-untyped-def]
        return next(loads, None) or catalog.load_table("tideway.logs")

    first = TableCommitter(
        lambda: catalog.load_table("tideway.logs"),
        "logs",
        bucket=BUCKET,
        rng=random.Random(0),
        on_commit=metrics.observe_commit,
    )
    late = TableCommitter(
        load, "logs", bucket=BUCKET, rng=random.Random(1), on_commit=metrics.observe_commit
    )
    assert await first.commit("shard-0", 4, files) is True
    # The late worker's commit was built on the old snapshot: refused, re-read, found in.
    assert await late.commit("shard-0", 4, files) is False

    def value(name: str) -> float | None:
        return registry.get_sample_value(name)

    assert value("tideway_iceberg_commits_total") == 1
    assert value("tideway_iceberg_commit_conflicts_total") == 1
    assert value("tideway_iceberg_files_committed_total") == 2
    assert value("tideway_iceberg_bytes_committed_total") == sum(len(b) for _, b in files)
    assert value("tideway_iceberg_commit_duration_seconds_count") == 1
    assert value("tideway_iceberg_commits_given_up_total") == 0


async def test_flushes_per_snapshot_handoffs_and_the_held_gauge(aws: Aws, tmp_path: Path) -> None:
    aws.client("s3").create_bucket(Bucket=BUCKET)
    props = catalog_properties(
        {"type": "sql", "uri": f"sqlite:///{tmp_path}/c.db", "warehouse": f"s3://{BUCKET}/w"},
        s3_endpoint=aws.endpoint,
        region="us-east-1",
    )
    catalog = open_catalog(props)
    ensure_table(catalog, "tideway.logs", f"s3://{BUCKET}/logs", table_schema(service=True))
    flushes = []
    for shard in ("shard-0", "shard-1"):
        lines = [orjson.dumps({"message": shard, "service": "api"})]
        plan = plan_flush(
            shard, [record(lines, seq=9)], [], Layout("logs", service_column=True), MAPPING
        )
        files = tuple(TableFile.of(f"s3://{BUCKET}/{o.key}", o.body) for o in plan.objects)
        for o in plan.objects:
            aws.client("s3").put_object(Bucket=BUCKET, Key=o.key, Body=o.body)
        flushes.append(FlushFiles(shard, 9, files))
    registry = CollectorRegistry()
    metrics = IcebergMetrics(registry)
    committer = TableCommitter(
        lambda: catalog.load_table("tideway.logs"),
        "logs",
        bucket=BUCKET,
        rng=random.Random(0),
        on_commit=metrics.observe_commit,
    )
    assert await committer.commit_many(flushes) == {"shard-0", "shard-1"}
    assert await committer.commit_many(flushes) == frozenset()  # in the table: no snapshot
    metrics.observe_handoff("added", 0.4)
    metrics.observe_handoff("fallback", 31.0)
    metrics.observe_held(True)

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert value("tideway_iceberg_commits_total") == 1
    assert value("tideway_iceberg_flushes_per_snapshot_count") == 1
    assert value("tideway_iceberg_flushes_per_snapshot_sum") == 2
    assert value("tideway_iceberg_handoffs_total", outcome="added") == 1
    assert value("tideway_iceberg_handoffs_total", outcome="present") == 0
    assert value("tideway_iceberg_handoffs_total", outcome="fallback") == 1
    assert value("tideway_iceberg_handoff_wait_seconds_count") == 2
    assert value("tideway_iceberg_committer_held") == 1
