"""KPL aggregated records, made by the aws_kinesis_agg aggregator."""

from __future__ import annotations

import gzip
import hashlib

import pytest
import zstandard
from aws_kinesis_agg.deaggregator import iter_deaggregate_records

from service import envelope
from service.decode import DecoderConfig, decode_record
from service.errors import DecodeError
from service.loggen import ndjson_lines
from tests.builders import (
    assert_contract,
    avro_config,
    avro_schema,
    confluent,
    cwl_data_message,
    cwl_record,
    kpl_records,
    log_event_datums,
    ndjson,
)

CONFIG = DecoderConfig()


def test_kpl_record_of_json_lines_yields_every_user_record_in_order() -> None:
    lines = ndjson_lines(120)
    (record,) = kpl_records(lines)
    decoded = decode_record(record, CONFIG)
    assert decoded.format == "kpl"
    assert [b.source for b in decoded.batches] == ["kpl"]
    assert decoded.batches[0].payload == b"\n".join(lines)
    assert assert_contract(decoded) == [__import__("orjson").loads(x) for x in lines]


def test_kpl_records_with_explicit_hash_keys_decode_like_the_reference_deaggregator() -> None:
    lines = ndjson_lines(3000, seed=11)
    records = kpl_records(lines, explicit_hash_keys=True, max_size=51200)
    assert len(records) > 10
    ours: list[bytes] = []
    theirs: list[bytes] = []
    for data in records:
        decoded = decode_record(data, CONFIG)
        assert_contract(decoded)
        ours.extend(b"\n".join(b.payload for b in decoded.batches).split(b"\n"))
        theirs.extend(
            r["kinesis"]["data"]
            for r in iter_deaggregate_records(
                {
                    "SequenceNumber": "1",
                    "PartitionKey": "p",
                    "ApproximateArrivalTimestamp": 0,
                    "Data": data,
                },
                data_format="Boto3",
            )
        )
    import base64

    assert ours == lines == [base64.b64decode(x) for x in theirs]


def test_kpl_record_with_bad_md5_is_rejected_with_reason() -> None:
    (record,) = kpl_records(ndjson_lines(5))
    corrupted = record[:-1] + bytes([record[-1] ^ 0x01])
    with pytest.raises(DecodeError) as err:
        decode_record(corrupted, CONFIG)
    assert err.value.reason == "kpl md5 mismatch"


def test_kpl_record_with_flipped_payload_byte_fails_its_md5() -> None:
    (record,) = kpl_records(ndjson_lines(5))
    flipped = bytearray(record)
    flipped[40] ^= 0x20
    with pytest.raises(DecodeError, match="kpl md5 mismatch"):
        decode_record(bytes(flipped), CONFIG)


def test_kpl_record_shorter_than_its_trailer_is_truncated() -> None:
    with pytest.raises(DecodeError, match="kpl record truncated"):
        decode_record(b"\xf3\x89\x9a\xc2" + b"\x00" * 10, CONFIG)


def test_kpl_record_with_valid_md5_over_garbage_protobuf_is_malformed() -> None:
    body = b"\x1a\xff\xff\xff"
    with pytest.raises(DecodeError, match="kpl protobuf malformed"):
        decode_record(b"\xf3\x89\x9a\xc2" + body + hashlib.md5(body).digest(), CONFIG)


def test_kpl_user_record_missing_its_data_is_rejected() -> None:
    body = b"\x0a\x01k" + b"\x1a\x02\x08\x00"  # one partition key, one record without data
    with pytest.raises(DecodeError, match="misses a required field"):
        decode_record(b"\xf3\x89\x9a\xc2" + body + hashlib.md5(body).digest(), CONFIG)


def test_kpl_record_without_user_records_is_skipped_on_purpose() -> None:
    body = b"\x0a\x01k"
    decoded = decode_record(b"\xf3\x89\x9a\xc2" + body + hashlib.md5(body).digest(), CONFIG)
    assert decoded.skipped == "kpl record holds no user records"
    assert_contract(decoded)


def test_kpl_user_records_of_every_format_decode_recursively_in_order() -> None:
    env = envelope.encode(
        envelope.EnvelopeRecord(b'{"a":1}\n{"a":2}', 2, 1_000_000, source="http", service="web")
    )
    datum = log_event_datums(1)[0]
    users = [
        b'{"n":0}',
        b'{"n":1}\n{"n":2}',
        env,
        gzip.compress(b'{"n":3}\n{"n":4}'),
        zstandard.ZstdCompressor().compress(b'{"n":5}'),
        cwl_record(cwl_data_message(["cw1", "cw2"], log_group="/aws/lambda/f")),
        confluent(7, avro_schema(), datum),
        b"a plain text line",
        b'{"n":6}',
    ]
    (record,) = kpl_records(users)
    decoded = decode_record(record, avro_config())
    objects = assert_contract(decoded)
    assert decoded.line_count == 2 + 1 + 2 + 2 + 1 + 2 + 1 + 1 + 1 == len(objects)
    assert [b.source for b in decoded.batches] == ["kpl", "http", "kpl", "cloudwatch", "kpl"]
    assert decoded.batches[1].service == "web"
    assert decoded.batches[3].log_group == "/aws/lambda/f"
    assert [o.get("n") for o in objects[:8]] == [0, 1, 2, None, None, 3, 4, 5]
    assert objects[10]["service"] == datum["service"]
    assert objects[11] == {"message": "a plain text line"}
    assert objects[12] == {"n": 6}


def test_kpl_user_record_that_cannot_be_decoded_dead_letters_the_whole_record() -> None:
    (record,) = kpl_records([b'{"ok":1}', b"\xff\xfe not utf-8"])
    with pytest.raises(DecodeError) as err:
        decode_record(record, CONFIG)
    assert err.value.reason.startswith("kpl user record: ")


def test_kpl_inside_kpl_is_refused() -> None:
    (inner,) = kpl_records([b'{"a":1}'])
    (outer,) = kpl_records([inner])
    with pytest.raises(DecodeError, match="nested in a kpl record"):
        decode_record(outer, CONFIG)


def test_kpl_of_ndjson_user_records_counts_lines_not_user_records() -> None:
    users = [ndjson(3, seed=i) for i in range(4)]
    (record,) = kpl_records(users)
    decoded = decode_record(record, CONFIG)
    assert decoded.line_count == 12
    assert len(decoded.batches) == 1
    assert_contract(decoded)
