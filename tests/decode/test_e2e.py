"""Records of every producer format through moto Kinesis, the consumer's drain and S3."""

from __future__ import annotations

import base64
import gzip

import orjson
import zstandard

from service.loggen import ndjson_lines
from service.settings import Settings
from tests.builders import (
    AVRO_REGISTRY,
    AVRO_SCHEMA,
    CONTROL_MESSAGE,
    LOG_EVENT_ID,
    avro_schema,
    confluent,
    cwl_data_message,
    cwl_record,
    kpl_records,
    log_event_datums,
    ndjson,
    single_object,
)
from tests.conftest import Aws, drain, lineage_counts, read_dead_letters, read_table


async def test_producer_formats_land_with_exact_counts_and_bad_records_dead_letter(
    aws: Aws, ready: Settings
) -> None:
    schema = avro_schema()
    datums = log_event_datums(3)
    (kpl_good,) = kpl_records(ndjson_lines(50), explicit_hash_keys=True)
    (kpl_bad,) = kpl_records(ndjson_lines(5, seed=3))
    kpl_bad = kpl_bad[:-1] + bytes([kpl_bad[-1] ^ 0xFF])
    records: list[tuple[bytes, int]] = [  # (data, rows it must yield)
        (kpl_good, 50),
        (cwl_record(cwl_data_message(["one", "two", '{"three": 3}'], log_group="/ecs/web")), 3),
        (cwl_record(CONTROL_MESSAGE), 0),
        (gzip.compress(ndjson(20, seed=5)), 20),
        (zstandard.ZstdCompressor().compress(ndjson(10, seed=6)), 10),
        (confluent(LOG_EVENT_ID, schema, datums[0]), 1),
        (single_object(schema, datums[1]), 1),
        (b"plain text from a shell script", 1),
    ]
    bad = {
        kpl_bad: "kpl md5 mismatch",
        confluent(42, schema, datums[2]): "avro schema id 42 unknown",
        b"\xff\xfe\x00 binary junk": "record is neither a known format nor UTF-8 text",
        gzip.compress(ndjson(30))[:-10]: "gzip stream truncated",
    }
    entries = [d for d, _ in records] + list(bad)
    kinesis = aws.client("kinesis")
    answer = kinesis.put_records(
        StreamName=ready.stream,
        Records=[{"Data": d, "PartitionKey": f"pk-{i}"} for i, d in enumerate(entries)],
    )
    assert answer["FailedRecordCount"] == 0

    await drain(ready, avro_schema=AVRO_SCHEMA, avro_schema_dir=AVRO_REGISTRY)

    table = read_table(aws, ready)
    assert table.num_rows == sum(n for _, n in records) == 86
    counts = lineage_counts(table)
    assert set(counts.values()) == {1}
    rows = table.to_pylist()
    by_source: dict[str, int] = {}
    for row in rows:
        by_source[row["source"]] = by_source.get(row["source"], 0) + 1
    assert by_source == {"kpl": 50, "cloudwatch": 3, "json": 30, "avro": 2, "text": 1}
    kpl_subs = sorted(r["kinesis_sub_sequence"] for r in rows if r["source"] == "kpl")
    assert kpl_subs == list(range(50))
    cw = [r for r in rows if r["source"] == "cloudwatch"]
    assert {r["log_group"] for r in cw} == {"/ecs/web"}
    assert sorted(r["message"] for r in cw) == sorted(["one", "two", '{"three": 3}'])

    dead = read_dead_letters(aws, ready)
    assert sorted(d["reason"] for d in dead) == sorted(bad.values())
    assert {base64.b64decode(d["data"]) for d in dead} == set(bad)
    assert all(d["kinesis_shard_id"] and d["kinesis_sequence_number"] for d in dead)
    assert orjson.loads(orjson.dumps(dead))  # dead letters are plain JSON
