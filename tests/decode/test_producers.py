"""The test producers checked against their specifications."""

from __future__ import annotations

import gzip

import fastavro.schema
import orjson

from tests.builders import (
    MASK_64,
    avro_schema,
    crc64_avro,
    cwl_data_message,
    cwl_record,
    kpl_records,
)

# -- the producers checked against their specifications ----------------------------------


def test_rabin_fingerprint_matches_the_avro_specification_and_fastavro() -> None:
    # Test vectors of the Avro project (share/test/data/schema-tests.txt), signed 64-bit.
    signed = {b'"null"': 7195948357588979594, b'"string"': -8142146995180207161}
    for canonical_text, expected in signed.items():
        assert crc64_avro(canonical_text) == expected & MASK_64
    canonical = fastavro.schema.to_parsing_canonical_form(avro_schema())
    assert crc64_avro(canonical.encode()).to_bytes(8, "little").hex() == (
        fastavro.schema.fingerprint(canonical, "CRC-64-AVRO")
    )


def test_kpl_producer_writes_magic_protobuf_and_md5_trailer() -> None:
    import hashlib

    (record,) = kpl_records([b'{"a":1}', b'{"b":2}'])
    assert record[:4] == b"\xf3\x89\x9a\xc2"
    assert hashlib.md5(record[4:-16]).digest() == record[-16:]


def test_cwl_producer_writes_gzip_json() -> None:
    record = cwl_record(cwl_data_message(["x"]))
    assert record[:2] == b"\x1f\x8b"
    assert orjson.loads(gzip.decompress(record))["messageType"] == "DATA_MESSAGE"
