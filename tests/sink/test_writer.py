"""From a flush to Parquet objects: determinism, file sizing, the memory budget, and Glue."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from service.consume.buffer import FLUSH_WORKING_SET, FlushPolicy, ShardBuffer
from service.decode import DecoderConfig, RecordMeta
from service.decode.types import DecodedRecord, LineBatch
from service.loggen import ndjson_lines
from service.schema import table_schema
from service.settings import Settings
from service.sink.build import build_rows
from service.sink.gather import Gatherer
from service.sink.glue import PartitionCatalog, table_input
from service.sink.order import partition_order
from service.sink.partition import event_hours, safe_services
from service.sink.plan import Layout, _size_bound, plan_flush
from service.sink.rules import FieldMapping
from tests.conftest import Aws

ARRIVAL = int(datetime(2026, 11, 20, 12, 0, tzinfo=UTC).timestamp() * 1e6)


def generated(n: int, per_record: int = 70) -> list[DecodedRecord]:
    lines = ndjson_lines(n, seed=5)
    return [
        DecodedRecord(
            RecordMeta("shardId-000", seq, ARRIVAL),
            (LineBatch(b"\n".join(lines[i : i + per_record]), len(lines[i : i + per_record])),),
        )
        for seq, i in enumerate(range(0, n, per_record), start=100)
    ]


def test_same_records_give_the_same_keys_and_bytes() -> None:
    recs = generated(3000)
    a = plan_flush("shardId-000", recs, [], Layout("s"), FieldMapping())
    b = plan_flush("shardId-000", list(recs), [], Layout("s"), FieldMapping())
    assert [(o.key, o.body) for o in a.objects] == [(o.key, o.body) for o in b.objects]
    assert a.rows == 3000


def test_files_are_zstd_with_dictionary_and_rows_in_lineage_order() -> None:
    plan = plan_flush("shardId-000", generated(2000), [], Layout("s"), FieldMapping())
    obj = plan.objects[0]
    meta = pq.ParquetFile(io.BytesIO(obj.body)).metadata
    assert meta.row_group(0).column(0).compression == "ZSTD"
    table = pq.read_table(io.BytesIO(obj.body))
    lineage = list(
        zip(
            table["kinesis_sequence_number"].to_pylist(),
            table["kinesis_sub_sequence"].to_pylist(),
            strict=True,
        )
    )
    assert lineage == sorted(lineage, key=lambda x: (int(x[0]), x[1]))
    assert "dt=" not in "".join(table.column_names)


def test_a_partition_over_the_target_is_cut_at_record_boundaries() -> None:
    plan = plan_flush(
        "shardId-000", generated(4000), [], Layout("s", file_target_bytes=4_000), FieldMapping()
    )
    per_partition: dict[str, list[str]] = {}
    for o in plan.objects:
        per_partition.setdefault(o.partition, []).append(o.key)
    assert max(len(v) for v in per_partition.values()) > 1
    assert sum(o.rows for o in plan.objects) == 4000


@pytest.mark.parametrize("chunked", [False, True])
def test_the_size_bound_read_before_a_partitions_size_is_at_least_that_size(
    chunked: bool,
) -> None:
    # plan_flush skips measuring partitions when the bound is under a file's limit: the
    # bound must hold for every partition, a gathered one (rows not in one run) included.
    table, lineage, _ = build_rows(generated(3000, per_record=37), FieldMapping())
    if chunked:
        table = pa.concat_tables([table.slice(0, 1000), table.slice(1000)])
    schema = table_schema(())
    data = Gatherer(table)
    order, ends = partition_order(
        event_hours(table), safe_services(table.column("service").combine_chunks())
    )
    bound = _size_bound(table, lineage)
    sizes = []
    for picked in [*np.split(order, ends[:-1]), np.arange(0, len(order), 3)]:
        rows = np.sort(picked)
        sizes.append(lineage.join(data.take(rows), schema, rows).nbytes)
    assert len(sizes) > 2 and max(sizes) <= bound
    assert bound < 4 * lineage.join(table, schema).nbytes  # a bound, not a guess far above


def test_memory_budget_holds_on_a_skewed_input() -> None:
    """One giant partition and thousands of tiny ones: the buffer is flushed before what it
    holds (charged with the flush's working set) passes the shard's share of the budget."""
    share = 2 * 1024 * 1024
    policy = FlushPolicy(max_bytes=10**12, max_age=10**9)
    buffer, flushed = ShardBuffer(), []
    big = b"\n".join(ndjson_lines(200, seed=1))
    for seq in range(3000):
        tiny = orjson.dumps({"service": f"tiny-{seq}", "message": "x"})
        data = big if seq % 3 == 0 else tiny  # one giant partition, thousands of tiny ones
        buffer.add(data, RecordMeta("shardId-000", seq, ARRIVAL), DecoderConfig(), now=0.0)
        assert buffer.size * FLUSH_WORKING_SET < share + len(big) * FLUSH_WORKING_SET + 4096
        if policy.reason(buffer, 0.0, share) == "memory":
            flushed.append(buffer)
            buffer = ShardBuffer()
    assert len(flushed) > 5
    plan = plan_flush(
        "shardId-000", flushed[0].records, [], Layout("s", max_partitions=100), FieldMapping()
    )
    assert len({o.partition for o in plan.objects}) <= 100
    assert plan.rows == flushed[0].lines


async def test_new_partitions_are_registered_in_glue_once(aws: Aws, settings: Settings) -> None:
    from service.aws import aws_clients

    plan = plan_flush("shardId-000", generated(700), [], Layout("s"), FieldMapping())
    location = f"s3://{settings.bucket}/logs"
    async with aws_clients("glue") as clients:
        await clients.glue.create_database(DatabaseInput={"Name": "logsdb"})
        await clients.glue.create_table(
            DatabaseName="logsdb",
            TableInput=table_input("logs", location, ["dt", "hour", "service"]),
        )
        catalog = PartitionCatalog(clients.glue, "logsdb", "logs", location)
        await catalog.register_plan(plan)
        # A second process (or a replayed flush) registers the same partitions: no error.
        again = PartitionCatalog(clients.glue, "logsdb", "logs", location)
        assert await again.register({o.partition for o in plan.objects}) == len(
            {o.partition for o in plan.objects}
        )
        got = await clients.glue.get_partitions(DatabaseName="logsdb", TableName="logs")
    values = sorted(tuple(p["Values"]) for p in got["Partitions"])
    expected = sorted(
        tuple(seg.split("=")[1] for seg in o.partition.split("/")) for o in plan.objects
    )
    assert values == sorted(set(expected))
    some = got["Partitions"][0]
    assert some["StorageDescriptor"]["Location"].startswith(location + "/dt=")
