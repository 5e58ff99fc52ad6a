"""The whole path over real HTTP on loopback -> moto Kinesis -> consumer -> moto S3 -> pyarrow."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime, timedelta

import orjson
import pyarrow as pa

from service.aws import aws_clients
from service.resources import ensure_lease_table
from service.schema import CANONICAL_SCHEMA
from service.settings import Settings
from tests.conftest import Aws, Server, drain, lineage_counts, object_keys, read_table
from tests.ingest_support import post_body as post

NOW = datetime.now(UTC).replace(minute=30, second=0, microsecond=0) - timedelta(hours=3)


def line(i: int, service: str, hours_ago: int) -> dict[str, object]:
    when = NOW - timedelta(hours=hours_ago, seconds=i)
    return {
        "timestamp": when.isoformat().replace("+00:00", "Z"),
        "level": "warn" if i % 3 else "error",
        "service": service,
        "message": f"event {i}",
        "host": "web-1",
        "trace_id": f"{i:032x}",
        "span_id": f"{i:016x}",
        "http": {"status": 200 + i % 3, "path": "/x"},
        "case": i,
    }


async def test_every_line_sent_over_http_lands_once_with_canonical_columns(
    aws: Aws, ready: Settings, server: Server
) -> None:
    lines = [line(i, ("api", "db")[i % 2], i % 3) for i in range(600)]
    ndjson = b"\n".join(orjson.dumps(x) for x in lines[:300])
    assert await post(server.url + "/ingest", ndjson, "application/x-ndjson") == (
        200,
        {"accepted": 300, "rejected": 0, "errors": []},
    )
    gz = gzip.compress(b"\n".join(orjson.dumps(x) for x in lines[300:500]))
    status, answer = await post(server.url + "/ingest", gz, "application/x-ndjson", "gzip")
    assert (status, answer["accepted"]) == (200, 200)
    status, answer = await post(
        server.url + "/ingest", orjson.dumps(lines[500:]), "application/json"
    )
    assert (status, answer["accepted"]) == (200, 100)
    status, answer = await post(server.url + "/ingest", b"plain one\nplain two\n", "text/plain")
    assert (status, answer["accepted"]) == (200, 2)

    await drain(ready)
    table = read_table(aws, ready)

    assert table.num_rows == 602
    assert set(lineage_counts(table).values()) == {1}
    for field in CANONICAL_SCHEMA:
        assert table.schema.field(field.name).type == field.type, field.name
    rows = {r["message"]: r for r in table.to_pylist()}
    r = rows["event 7"]
    assert r["severity_text"] == "warn" and r["severity_number"] == 13
    assert r["host"] == "web-1" and r["trace_id"] == f"{7:032x}" and r["span_id"] == f"{7:016x}"
    assert orjson.loads(r["attributes"]) == {"http": {"status": 201, "path": "/x"}, "case": 7}
    when = NOW - timedelta(hours=1, seconds=7)
    assert r["timestamp"] == when
    assert (r["dt"], r["hour"], r["service"]) == (when.strftime("%Y-%m-%d"), when.hour, "db")
    assert r["source"] == "http"
    assert rows["plain two"]["service"] == "unknown"
    # Partition columns live in the path only, never inside the files.
    key = next(k for k in object_keys(aws, ready.bucket, "logs/") if "service=api" in k)
    # The lines span three hours before NOW, which may cross a midnight.
    hours = {NOW - timedelta(hours=h) for h in range(3)}
    folders = {f"logs/dt={t:%Y-%m-%d}/hour={t:%H}/service=api/" for t in hours}
    assert key.rsplit("/", 1)[0] + "/" in folders and key.endswith(".parquet")
    assert f"/{ready.stream}-shardId-" in key


async def test_same_records_give_byte_identical_files(
    aws: Aws, ready: Settings, server: Server
) -> None:
    body = b"\n".join(orjson.dumps(line(i, "svc", i % 2)) for i in range(200))
    assert (await post(server.url + "/ingest", body, "application/x-ndjson"))[0] == 200
    await drain(ready)
    other = ready.model_copy(update={"prefix": "again/", "lease_table": ready.lease_table + "-2"})

    async with aws_clients("dynamodb") as clients:
        await ensure_lease_table(clients.dynamodb, other.lease_table)
    await drain(other)

    s3 = aws.client("s3")
    first = object_keys(aws, ready.bucket, "logs/")
    second = object_keys(aws, ready.bucket, "again/logs/")
    assert first and [k.removeprefix("again/") for k in second] == first
    for key in first:
        a = s3.get_object(Bucket=ready.bucket, Key=key)["Body"].read()
        b = s3.get_object(Bucket=ready.bucket, Key="again/" + key)["Body"].read()
        assert a == b, key


def test_table_schema_is_the_contract() -> None:
    assert CANONICAL_SCHEMA.field("timestamp").type == pa.timestamp("us", tz="UTC")
    assert CANONICAL_SCHEMA.field("kinesis_sub_sequence").type == pa.int32()
