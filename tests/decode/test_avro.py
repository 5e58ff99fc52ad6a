"""Avro in its three framings, written by fastavro; schemas loaded once by load_config."""

from __future__ import annotations

import base64
import datetime as dt
import io
import uuid
from pathlib import Path

import fastavro
import orjson
import pytest

from service.decode import DecoderConfig, decode_record
from service.decode.avro import load_config, parse_schema
from service.errors import DecodeError
from tests.builders import (
    ACCESS_LOG_ID,
    AVRO_REGISTRY,
    AVRO_SCHEMA,
    LOG_EVENT_ID,
    assert_contract,
    avro_config,
    avro_schema,
    confluent,
    log_event_datums,
    schemaless,
    single_object,
)

CONFIG = avro_config()
SCHEMA = avro_schema()
DATUMS = log_event_datums(20)


def _expected(datum: dict[str, object]) -> dict[str, object]:
    out = dict(datum)
    out["timestamp"] = datum["timestamp"].isoformat()  # type: ignore[attr-defined]
    out["trace_id"] = base64.b64encode(datum["trace_id"]).decode()  # type: ignore[arg-type]
    out["amount"] = None if datum["amount"] is None else str(datum["amount"])
    return out


@pytest.mark.parametrize("datum", DATUMS[:5])
def test_raw_schemaless_datum_decodes_with_the_configured_schema(datum: dict[str, object]) -> None:
    decoded = decode_record(schemaless(SCHEMA, datum), CONFIG)
    assert decoded.format == "avro"
    assert decoded.batches[0].source == "avro"
    assert assert_contract(decoded) == [_expected(datum)]


@pytest.mark.parametrize("datum", DATUMS[5:10])
def test_single_object_encoding_is_matched_by_its_fingerprint(datum: dict[str, object]) -> None:
    decoded = decode_record(single_object(SCHEMA, datum), CONFIG)
    assert decoded.format == "avro_single_object"
    assert assert_contract(decoded) == [_expected(datum)]


@pytest.mark.parametrize("datum", DATUMS[10:15])
def test_confluent_wire_format_uses_the_schema_with_its_id(datum: dict[str, object]) -> None:
    decoded = decode_record(confluent(LOG_EVENT_ID, SCHEMA, datum), CONFIG)
    assert decoded.format == "avro_confluent"
    assert assert_contract(decoded) == [_expected(datum)]


def test_confluent_access_log_logical_types_become_json_strings() -> None:
    schema = avro_schema(AVRO_REGISTRY / "8.avsc")
    request_id = uuid.UUID("6f1c2a3e-1d2b-4c5d-8e9f-0a1b2c3d4e5f")
    datum = {
        "ts": dt.datetime(2026, 11, 20, 6, 1, 2, 345678, tzinfo=dt.UTC),
        "method": "GET",
        "path": "/api/cart",
        "status": 200,
        "request_id": str(request_id),
        "body": b"\x00\xff\x10",
        "tags": ["a", "b"],
    }
    (line,) = assert_contract(decode_record(confluent(ACCESS_LOG_ID, schema, datum), CONFIG))
    assert line == {
        "ts": "2026-11-20T06:01:02.345678+00:00",
        "method": "GET",
        "path": "/api/cart",
        "status": 200,
        "request_id": str(request_id),
        "body": "AP8Q",
        "tags": ["a", "b"],
    }


def test_unknown_confluent_schema_id_is_rejected_with_reason() -> None:
    with pytest.raises(DecodeError) as err:
        decode_record(confluent(42, SCHEMA, DATUMS[0]), DecoderConfig())
    assert err.value.reason == "avro schema id 42 unknown"


def test_unknown_single_object_fingerprint_is_rejected_with_reason() -> None:
    other = fastavro.parse_schema({"type": "record", "name": "X", "fields": []})
    with pytest.raises(DecodeError, match=r"avro fingerprint [0-9a-f]{16} unknown"):
        decode_record(single_object(other, {}), CONFIG)


def test_confluent_datum_that_does_not_match_its_schema_is_rejected() -> None:
    record = confluent(LOG_EVENT_ID, SCHEMA, DATUMS[0])
    with pytest.raises(DecodeError, match="avro datum does not match schema id 7"):
        decode_record(record[:-3], CONFIG)


def test_confluent_datum_with_trailing_bytes_is_rejected() -> None:
    record = confluent(LOG_EVENT_ID, SCHEMA, DATUMS[0]) + b"\x00"
    with pytest.raises(DecodeError, match="does not match schema id 7"):
        decode_record(record, CONFIG)


def test_raw_avro_is_only_accepted_when_it_fills_the_record() -> None:
    # Without an exact fit the record is not Avro: here it falls through to text.
    record = schemaless(SCHEMA, DATUMS[0])
    config = DecoderConfig(avro_schema=CONFIG.avro_schema)
    assert decode_record(record, config).format == "avro"
    with pytest.raises(DecodeError, match="neither a known format"):
        decode_record(record + b"\xff", config)


def test_raw_avro_is_not_attempted_without_a_configured_schema() -> None:
    record = schemaless(SCHEMA, DATUMS[0])
    with pytest.raises(DecodeError):
        decode_record(record, DecoderConfig())


def test_json_wins_over_raw_avro() -> None:
    string_schema = fastavro.parse_schema({"type": "string"})
    config = DecoderConfig(avro_schema=string_schema)
    assert decode_record(b'{"a": 1}', config).format == "json"


def test_single_object_works_for_a_config_built_without_load_config() -> None:
    config = DecoderConfig(avro_schema=CONFIG.avro_schema)
    assert decode_record(single_object(SCHEMA, DATUMS[0]), config).format == ("avro_single_object")


def test_non_record_datum_is_wrapped_as_value() -> None:
    schema = fastavro.parse_schema({"type": "array", "items": "long"})
    config = DecoderConfig(avro_schema=schema)
    assert assert_contract(decode_record(schemaless(schema, [1, 2]), config)) == [{"value": [1, 2]}]


def test_load_config_reads_schema_and_registry(tmp_path: Path) -> None:
    assert set(CONFIG.avro_schemas_by_id) == {LOG_EVENT_ID, ACCESS_LOG_ID}
    assert len(CONFIG.avro_schemas_by_fingerprint) == 2  # 7.avsc is log_event.avsc
    assert load_config(AVRO_SCHEMA, None).avro_schemas_by_id == {}


def test_load_config_names_a_misnamed_registry_file(tmp_path: Path) -> None:
    (tmp_path / "latest.avsc").write_bytes(AVRO_SCHEMA.read_bytes())
    with pytest.raises(DecodeError, match=r"TIDEWAY_AVRO_SCHEMA_DIR: .*latest.avsc must be named"):
        load_config(None, tmp_path)


def test_load_config_names_an_invalid_schema_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.avsc"
    bad.write_bytes(orjson.dumps({"type": "record", "name": "X", "fields": [{"name": "a"}]}))
    with pytest.raises(DecodeError, match=r"TIDEWAY_AVRO_SCHEMA: .*bad.avsc: invalid Avro schema"):
        load_config(bad, None)


def test_schema_with_array_of_nulls_is_refused_because_decoding_is_unbounded(
    tmp_path: Path,
) -> None:
    path = tmp_path / "1.avsc"
    path.write_bytes(orjson.dumps({"type": "array", "items": "null"}))
    with pytest.raises(DecodeError, match="zero-size items"):
        load_config(None, tmp_path)


# ------------------------------------------------------------ hostile data, honest data
# (the attacks themselves: tests/hostile/consumer.py, measured one process each)


def _confluent(schema: dict[str, object], datum: object) -> tuple[bytes, DecoderConfig]:
    parsed = parse_schema(schema)
    out = io.BytesIO()
    fastavro.schemaless_writer(out, parsed, datum)
    return b"\x00\x00\x00\x00\x07" + out.getvalue(), DecoderConfig(avro_schemas_by_id={7: parsed})


NODE = {
    "type": "record",
    "name": "Node",
    "fields": [{"name": "v", "type": "string"}, {"name": "next", "type": ["null", "Node"]}],
}


def test_an_honest_recursive_datum_still_decodes() -> None:
    datum: dict[str, object] | None = None
    for i in range(20):
        datum = {"v": str(i), "next": datum}
    data, config = _confluent(NODE, datum)
    (batch,) = decode_record(data, config).batches
    assert orjson.loads(batch.payload) == datum


def test_honest_long_runs_of_high_bytes_and_extreme_longs_still_decode() -> None:
    schema = {
        "type": "record",
        "name": "T",
        "fields": [{"name": "s", "type": "string"}, {"name": "n", "type": "long"}],
    }
    for n in (-(2**63), 2**63 - 1):
        datum = {"s": "日本語のログ" * 50, "n": n}
        data, config = _confluent(schema, datum)
        assert orjson.loads(decode_record(data, config).batches[0].payload) == datum


def test_a_datum_nested_past_the_limit_is_refused_without_a_crash() -> None:
    data = b"\x00\x00\x00\x00\x07" + b"\x02\x00" * 100_000 + b"\x00"
    _, config = _confluent(NODE, {"v": "", "next": None})
    with pytest.raises(DecodeError, match="nested deeper than 128"):
        decode_record(data, config)
