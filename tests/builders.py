"""Shared test builders: records built the way real producers write them, decoded records
for the mapping, and the fuzz seeds of every format (one module, imported by any test).

KPL aggregates come from the ``aws_kinesis_agg`` library, Avro datums from fastavro's
writer with single-object and Confluent framing added exactly as their specs describe,
CloudWatch Logs payloads as the AWS documentation example shows. The tests in this
module check the producers themselves against their specifications.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import io
import random
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import fastavro
import fastavro.schema
import orjson
import pyarrow as pa
import zstandard
from aws_kinesis_agg.aggregator import RecordAggregator
from hypothesis import strategies as st

from service import envelope
from service.decode import Decoded, DecoderConfig
from service.decode.avro import load_config
from service.decode.types import DecodedRecord, LineBatch, RecordMeta
from service.loggen import log_records, ndjson_lines
from service.sink.build import build_table
from service.sink.mapping import build_table_reference
from service.sink.rules import FieldMapping, Unmapped

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
MASK_64 = (1 << 64) - 1


def _rabin_table() -> list[int]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (_RABIN_EMPTY & (-(fp & 1) & MASK_64))
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


# Numbers a JSON scanner and orjson may disagree on: overflow to infinity (orjson refuses
# it), underflow, integers past 64 bits, long decimals, exponents written long.
BOUNDARY_NUMBERS = [
    str(2**63),
    str(2**63 - 1),
    str(-(2**63)),
    str(-(2**63) - 1),
    str(2**64),
    str(2**64 - 1),
    "1e308",
    "1.7976931348623157e308",
    "1.7976931348623158e308",
    "1.7976931348623159e308",
    "1e309",
    "-1e309",
    "-0",
    "-0.0",
    "5e-324",
    "2e-324",
    "1e-400",
    "1" + "0" * 210 + "e99",
    "1" + "0" * 300,
    "1" + "0" * 308,
    "9" * 309,
    "0." + "0" * 299 + "1",
    "0." + "0" * 250 + "1e-99",
    "1" + "0" * 250 + ".5e58",
    "1E+99",
    "1e0099",
    "123456789012345678901234567890",
    "1795161600",
    "1795161600000.5",
]


# -- mapping ---------------------------------------------------------------------------

ARRIVAL = int(datetime(2026, 11, 20, 9, 0, tzinfo=UTC).timestamp() * 1e6)
MAPPING = FieldMapping()


def record(lines: list[bytes], seq: int = 1, **batch: Any) -> DecodedRecord:
    return DecodedRecord(
        RecordMeta("shardId-000", seq, ARRIVAL),
        (LineBatch(b"\n".join(lines), len(lines), **batch),),
    )


def one_row(obj: object, **batch: Any) -> dict[str, Any]:
    table, bad = build_table([record([orjson.dumps(obj)], **batch)], MAPPING)
    assert not bad
    return dict(table.to_pylist()[0])


def assert_same_as_reference(
    records: list[DecodedRecord], mapping: FieldMapping = MAPPING
) -> pa.Table:
    fast, fast_bad = build_table(records, mapping)
    ref, ref_bad = build_table_reference(records, mapping)
    assert fast.schema == ref.schema
    assert fast.to_pylist() == ref.to_pylist()
    assert unmapped(fast_bad) == unmapped(ref_bad)
    return fast


def unmapped(bad: list[Unmapped]) -> list[tuple[int, int | None, str, bytes]]:
    """What a user sees of each unmapped line or record: (sequence, line, reason, data)."""
    return [(u.record.meta.sequence_number, u.line, u.reason, u.data) for u in bad]


def us(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1e6)


json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_value = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
MAPPED_NAMES = [
    "timestamp",
    "time",
    "ts",
    "level",
    "severity",
    "log",
    "service",
    "app",
    "message",
    "msg",
    "host",
    "trace_id",
    "span_id",
    "severity_number",
    "date",
    "@timestamp",
    "body",
]
json_object = st.dictionaries(
    st.sampled_from(MAPPED_NAMES) | st.text(max_size=10), json_value, max_size=8
)


# -- fuzz seeds of every format --------------------------------------------------------

CONFIG = avro_config()
SMALL_LIMIT = DecoderConfig(
    avro_schema=CONFIG.avro_schema,
    avro_schemas_by_id=CONFIG.avro_schemas_by_id,
    avro_schemas_by_fingerprint=CONFIG.avro_schemas_by_fingerprint,
    max_decompressed_bytes=64 * 1024,
)
SCHEMA = avro_schema()
DATUMS = log_event_datums(4)


def _envelope(payload: bytes, count: int) -> bytes:
    record = envelope.EnvelopeRecord(payload, count, 1_700_000_000_000_000, source="http")
    return envelope.encode(record)


def _kpl_seal(protobuf: bytes) -> bytes:
    return b"\xf3\x89\x9a\xc2" + protobuf + hashlib.md5(protobuf).digest()


SEEDS: dict[str, bytes] = {
    "envelope": _envelope(b"\n".join(ndjson_lines(8)), 8),
    "kpl": kpl_records(ndjson_lines(6))[0],
    "kpl_ehk": kpl_records(
        [b'{"a":1}', b"text", confluent(7, SCHEMA, DATUMS[3])], explicit_hash_keys=True
    )[0],
    "cloudwatch": cwl_record(cwl_data_message(["GET /x 200", '{"k":"v"}'])),
    "cloudwatch_control": cwl_record(CONTROL_MESSAGE),
    "json": ndjson_lines(1)[0],
    "json_array": b"[" + b",".join(ndjson_lines(3)) + b"]",
    "ndjson": ndjson(5),
    "ndjson_gzip": gzip.compress(ndjson(5)),
    "ndjson_zstd": zstandard.ZstdCompressor().compress(ndjson(5)),
    "avro_raw": schemaless(SCHEMA, DATUMS[0]),
    "avro_single_object": single_object(SCHEMA, DATUMS[1]),
    "avro_confluent": confluent(7, SCHEMA, DATUMS[2]),
    "text": b"2026-11-20T06:00:00Z INFO request completed in 12 ms",
}
# Re-sealing wraps a mutated body back into its (valid) checksum or compression.
RESEAL: dict[str, Callable[[bytes], bytes]] = {
    "envelope": lambda body: _envelope(body, body.count(b"\n") + 1),
    "kpl": _kpl_seal,
    "gzip": gzip.compress,
    "zstd": zstandard.ZstdCompressor().compress,
}
INNER: dict[str, bytes] = {
    "envelope": b"\n".join(ndjson_lines(4)),
    "kpl": SEEDS["kpl_ehk"][4:-16],
    "gzip": gzip.decompress(SEEDS["cloudwatch"]),
    "zstd": ndjson(3),
}
