"""Record producers for the decoder tests, built the way real producers write them.

KPL aggregates come from the ``aws_kinesis_agg`` library, Avro datums from fastavro's
writer with single-object and Confluent framing added exactly as their specs describe,
CloudWatch Logs payloads as the AWS documentation example shows. The tests in this
module check the producers themselves against their specifications.
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import random
from decimal import Decimal
from pathlib import Path
from typing import Any

import fastavro
import fastavro.schema
import orjson
from aws_kinesis_agg.aggregator import RecordAggregator

from service.decode import Decoded, DecoderConfig
from service.decode.avro import load_config
from service.loggen import log_records, ndjson_lines

DATA = Path(__file__).parent / "data" / "decode"
AVRO_SCHEMA = DATA / "avro" / "log_event.avsc"
AVRO_REGISTRY = DATA / "avro" / "registry"
LOG_EVENT_ID = 7  # registry/7.avsc is the same schema as log_event.avsc
ACCESS_LOG_ID = 8

# -- contract -------------------------------------------------------------------------


def assert_contract(decoded: Decoded) -> list[dict[str, Any]]:
    """Check the decoder contract and return every line, parsed, in sub-sequence order."""
    objects: list[dict[str, Any]] = []
    for batch in decoded.batches:
        assert batch.count >= 1
        assert not batch.payload.endswith(b"\n")
        lines = batch.payload.split(b"\n")
        assert len(lines) == batch.count
        for line in lines:
            obj = orjson.loads(line)
            assert type(obj) is dict
            objects.append(obj)
    assert len(objects) == decoded.line_count
    assert bool(decoded.batches) != bool(decoded.skipped), decoded
    return objects


# -- KPL --------------------------------------------------------------------------------


def kpl_records(
    payloads: list[bytes], *, explicit_hash_keys: bool = False, max_size: int = 1024 * 1024
) -> list[bytes]:
    """Aggregate ``payloads`` with the Python KPL aggregator; every aggregated record, in order."""
    aggregator = RecordAggregator(max_size=max_size)
    out: list[bytes] = []
    for i, payload in enumerate(payloads):
        ehk = str((i * 7919) << 100) if explicit_hash_keys else None
        full = aggregator.add_user_record(f"pk-{i % 13}", payload, explicit_hash_key=ehk)
        if full is not None:
            out.append(full.get_contents()[2])
    rest = aggregator.clear_and_get()
    if rest is not None and rest.get_num_user_records():
        out.append(rest.get_contents()[2])
    return out


# -- CloudWatch Logs --------------------------------------------------------------------

CONTROL_MESSAGE = {
    "messageType": "CONTROL_MESSAGE",
    "owner": "CloudwatchLogs",
    "logGroup": "",
    "logStream": "",
    "subscriptionFilters": [],
    "logEvents": [
        {
            "id": "",
            "timestamp": 1432826855000,
            "message": "CWL CONTROL MESSAGE: Checking health of destination Kinesis stream.",
        }
    ],
}


def cwl_data_message(
    messages: list[str],
    *,
    log_group: str = "CloudTrail/logs",
    log_stream: str = "111111111111_CloudTrail/logs_us-east-1",
    first_ms: int = 1432826855000,
) -> dict[str, Any]:
    """A DATA_MESSAGE shaped like the AWS documentation example."""
    return {
        "owner": "111111111111",
        "logGroup": log_group,
        "logStream": log_stream,
        "subscriptionFilters": ["Destination"],
        "messageType": "DATA_MESSAGE",
        "logEvents": [
            {
                "id": str(31953106606966983378809025079804211143289615424298221568 + i),
                "timestamp": first_ms + i,
                "message": message,
            }
            for i, message in enumerate(messages)
        ],
    }


def cwl_record(payload: dict[str, Any]) -> bytes:
    """The Kinesis record CloudWatch Logs writes: the payload as gzip-compressed JSON."""
    return gzip.compress(orjson.dumps(payload))


# -- Avro -------------------------------------------------------------------------------

_RABIN_EMPTY = 0xC15D213AA4D7A795
_MASK = (1 << 64) - 1


def _rabin_table() -> list[int]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (_RABIN_EMPTY & (-(fp & 1) & _MASK))
        table.append(fp)
    return table


_RABIN_TABLE = _rabin_table()


def crc64_avro(data: bytes) -> int:
    """The Rabin fingerprint of the Avro specification ("Schema Fingerprints")."""
    fp = _RABIN_EMPTY
    for byte in data:
        fp = (fp >> 8) ^ _RABIN_TABLE[(fp ^ byte) & 0xFF]
    return fp


def avro_config() -> DecoderConfig:
    return load_config(AVRO_SCHEMA, AVRO_REGISTRY)


def avro_schema(path: Path = AVRO_SCHEMA) -> Any:
    return fastavro.parse_schema(orjson.loads(path.read_bytes()))


def schemaless(schema: Any, datum: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, schema, datum)
    return out.getvalue()


def single_object(schema: Any, datum: dict[str, Any]) -> bytes:
    """Avro single-object encoding: C3 01, 8-byte little-endian CRC-64-AVRO of the PCF, datum."""
    canonical = fastavro.schema.to_parsing_canonical_form(schema).encode()
    return b"\xc3\x01" + crc64_avro(canonical).to_bytes(8, "little") + schemaless(schema, datum)


def confluent(schema_id: int, schema: Any, datum: dict[str, Any]) -> bytes:
    """Confluent wire format: magic byte 0, 4-byte big-endian schema id, datum."""
    return b"\x00" + schema_id.to_bytes(4, "big") + schemaless(schema, datum)


LEVELS = ("DEBUG", "INFO", "WARN", "ERROR")


def log_event_datums(count: int, seed: int = 7) -> list[dict[str, Any]]:
    """LogEvent datums made from service.loggen records."""
    rng = random.Random(seed)
    return [
        {
            "timestamp": dt.datetime(2026, 11, 20, 6, tzinfo=dt.UTC)
            + dt.timedelta(milliseconds=rng.randrange(6 * 3600 * 1000)),
            "level": rng.choice(LEVELS),
            "service": str(record.get("service") or record.get("app")),
            "message": str(record.get("message") or record.get("msg")),
            "host": str(record["host"]) if rng.random() < 0.8 else None,
            "trace_id": bytes.fromhex(str(record["trace_id"])),
            "duration_ms": float(record["http"]["duration_ms"]),  # type: ignore[index]
            "amount": Decimal(rng.randrange(100000)) / 100 if rng.random() < 0.3 else None,
            "attributes": {"region": str(record["region"]), "version": str(record["version"])},
        }
        for record in log_records(count, seed=seed)
    ]


def ndjson(count: int, seed: int = 7) -> bytes:
    return b"\n".join(ndjson_lines(count, seed=seed))


# -- the producers checked against their specifications ----------------------------------


def test_rabin_fingerprint_matches_the_avro_specification_and_fastavro() -> None:
    # Test vectors of the Avro project (share/test/data/schema-tests.txt), signed 64-bit.
    signed = {b'"null"': 7195948357588979594, b'"string"': -8142146995180207161}
    for canonical_text, expected in signed.items():
        assert crc64_avro(canonical_text) == expected & _MASK
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
