"""Avro records in three framings, and loading their schemas once at start.

- raw (schemaless) datum, written with the schema named by ``TIDEWAY_AVRO_SCHEMA``;
- single-object encoding: ``C3 01`` + CRC-64-AVRO fingerprint of the writer schema's
  Parsing Canonical Form (8 bytes, little-endian) + datum;
- Confluent wire format: ``00`` + schema id (4 bytes, big-endian) + datum, the schema
  read from ``TIDEWAY_AVRO_SCHEMA_DIR/<id>.avsc``.

Each datum becomes one JSON object line: a record as its fields, any other top-level
type as ``{"value": ...}``. ``bytes`` and ``fixed`` become base64 strings, ``decimal``
a decimal string (exact), logical timestamps and dates ISO 8601 strings (RFC 3339 with
``+00:00`` for UTC instants), ``uuid`` its canonical string.

Decoding is pure; only ``load_config`` reads files.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import fastavro
import fastavro.schema
import orjson

from service.decode.avro_check import (
    Checked,
    check_datum,
    named_types,
    needs_check,
    schema_nodes,
)
from service.decode.types import Decoded, DecoderConfig, LineBatch
from service.errors import DecodeError

SOURCE = "avro"
SINGLE_OBJECT_MAGIC = b"\xc3\x01"
_SINGLE_OBJECT_HEADER = 10
_CONFLUENT_HEADER = 5
_SCHEMA_FILE = re.compile(r"[0-9]{1,10}\.avsc")
# What avro_check needs of each schema, by identity (the config holds the schemas for the
# process's life); bounded for configs built by hand in tests and fuzzers.
_CHECKED: dict[int, Checked] = {}
_CHECKED_KEPT = 1024
_REASON_CHARS = 119  # dead-letter reasons stay short (tests/decode/test_fuzz.py)


def load_config(
    avro_schema: Path | None,
    avro_schema_dir: Path | None,
    *,
    max_decompressed_bytes: int | None = None,
) -> DecoderConfig:
    """Parse the configured schemas; raise DecodeError naming the setting and file when one is bad."""
    schema = _load_schema(avro_schema, "TIDEWAY_AVRO_SCHEMA") if avro_schema else None
    by_id: dict[int, Any] = {}
    if avro_schema_dir is not None:
        if not avro_schema_dir.is_dir():
            raise DecodeError(f"TIDEWAY_AVRO_SCHEMA_DIR: {avro_schema_dir} is not a directory")
        for path in sorted(avro_schema_dir.glob("*.avsc")):
            if not _SCHEMA_FILE.fullmatch(path.name) or int(path.stem) > 0xFFFFFFFF:
                raise DecodeError(f"TIDEWAY_AVRO_SCHEMA_DIR: {path} must be named <schema id>.avsc")
            by_id[int(path.stem)] = _load_schema(path, "TIDEWAY_AVRO_SCHEMA_DIR")
    known = ([schema] if schema is not None else []) + list(by_id.values())
    config = DecoderConfig(
        avro_schema=schema,
        avro_schemas_by_id=by_id,
        avro_schemas_by_fingerprint={fingerprint(s): s for s in known},
    )
    if max_decompressed_bytes is None:
        return config
    return dataclasses.replace(config, max_decompressed_bytes=max_decompressed_bytes)


def parse_schema(schema: Any) -> Any:
    """A fastavro-parsed schema; raise DecodeError when it cannot be decoded safely."""
    parsed = fastavro.parse_schema(schema, named_schemas={})
    if _has_zero_size_array_items(parsed):
        # A 10-byte datum could claim 2**62 items of zero bytes each: decoding it would
        # spin and allocate without bound, so such a schema is refused at start.
        raise DecodeError("avro schema has an array of zero-size items (null or empty)")
    return parsed


def fingerprint(schema: Any) -> bytes:
    """CRC-64-AVRO fingerprint of the Parsing Canonical Form, as the 8 bytes on the wire."""
    canonical = fastavro.schema.to_parsing_canonical_form(schema)
    return bytes.fromhex(fastavro.schema.fingerprint(canonical, "CRC-64-AVRO"))


def decode_single_object(data: bytes, config: DecoderConfig) -> Decoded:
    """``C3 01`` + fingerprint + datum; raise DecodeError for an unknown fingerprint or bad datum."""
    fp = data[2:_SINGLE_OBJECT_HEADER]
    by_fp = config.avro_schemas_by_fingerprint or _fingerprints(config)
    return _framed(
        data,
        config,
        by_fp.get(fp),
        _SINGLE_OBJECT_HEADER,
        "avro_single_object",
        unknown=f"avro fingerprint {fp.hex()} unknown",
        mismatch=f"avro datum does not match schema {fp.hex()}",
    )


def decode_confluent(data: bytes, config: DecoderConfig) -> Decoded:
    """``00`` + schema id + datum; raise DecodeError for an unknown schema id or bad datum."""
    schema_id = int.from_bytes(data[1:_CONFLUENT_HEADER], "big")
    return _framed(
        data,
        config,
        config.avro_schemas_by_id.get(schema_id),
        _CONFLUENT_HEADER,
        "avro_confluent",
        unknown=f"avro schema id {schema_id} unknown",
        mismatch=f"avro datum does not match schema id {schema_id}",
    )


def _framed(
    data: bytes,
    config: DecoderConfig,
    schema: Any,
    header: int,
    fmt: str,
    *,
    unknown: str,
    mismatch: str,
) -> Decoded:
    """A datum behind a ``header``-byte framing; with no schema for it, the bytes may still be
    a raw datum of the configured schema (both framings start with bytes a raw datum can)."""
    if schema is None:
        raw = decode_raw(data, config)
        if raw is not None:
            return raw
        raise DecodeError(unknown)
    line = _datum_line(data, header, schema)
    if isinstance(line, DecodeError):
        raise DecodeError(f"{mismatch}: {line.reason}"[:_REASON_CHARS])
    return _decoded(fmt, line)


def decode_raw(data: bytes, config: DecoderConfig) -> Decoded | None:
    """A schemaless datum of the configured schema consuming all of ``data``; else None."""
    if config.avro_schema is None:
        return None
    line = _datum_line(data, 0, config.avro_schema)
    return None if isinstance(line, DecodeError) else _decoded("avro", line)


def is_single_object(data: bytes) -> bool:
    """True when ``data`` is framed as Avro single-object encoding."""
    return len(data) >= _SINGLE_OBJECT_HEADER and data[:2] == SINGLE_OBJECT_MAGIC


def is_confluent(data: bytes) -> bool:
    """True when ``data`` is framed as the Confluent wire format (a zero byte, then an id)."""
    return len(data) >= _CONFLUENT_HEADER and data[0] == 0


def _datum_line(data: bytes, offset: int, schema: Any) -> bytes | DecodeError:
    """The datum at ``offset`` as one JSON object line; else why it is not one datum of
    ``schema`` filling ``data`` exactly. fastavro trusts declared lengths and depths, so
    a datum it cannot take safely is checked first (avro_check), and any failure is
    checked again for a precise reason."""
    checked = _checked(schema)
    try:
        if needs_check(data, checked.recursive):
            check_datum(data, offset, checked)
    except DecodeError as exc:
        return exc
    buffer = io.BytesIO(data)
    buffer.seek(offset)
    try:
        datum = fastavro.schemaless_reader(buffer, schema, None)
        if buffer.tell() != len(data):
            return _why(data, offset, checked, "datum ends before the record")
        value = datum if type(datum) is dict else {"value": datum}
        return orjson.dumps(value, default=_json_default)
    # fastavro reports bad bytes as EOFError, UnicodeDecodeError, IndexError, ValueError,
    # OverflowError (dates), and orjson as TypeError: every one means "not this schema".
    except Exception as exc:
        return _why(data, offset, checked, type(exc).__name__)


def _why(data: bytes, offset: int, checked: Checked, otherwise: str) -> DecodeError:
    """The walk's precise reason for a datum fastavro refused, else ``otherwise``."""
    try:
        check_datum(data, offset, checked)
    except DecodeError as exc:
        return exc
    return DecodeError(otherwise)


def _checked(schema: Any) -> Checked:
    checked = _CHECKED.get(id(schema))
    if checked is None or checked.schema is not schema:
        if len(_CHECKED) >= _CHECKED_KEPT:
            _CHECKED.clear()
        checked = _CHECKED[id(schema)] = Checked(schema)
    return checked


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _decoded(fmt: str, line: bytes) -> Decoded:
    return Decoded(fmt, (LineBatch(line, 1, source=SOURCE),))


def _fingerprints(config: DecoderConfig) -> dict[bytes, Any]:
    # Only for a config built by hand, without load_config: computed per record, slowly.
    known = [config.avro_schema, *config.avro_schemas_by_id.values()]
    return {fingerprint(s): s for s in known if s is not None}


def load_schema(path: Path, setting: str) -> Any:
    """The parsed Avro schema in ``path``; raise DecodeError naming ``setting`` and the file."""
    return _load_schema(path, setting)


def _load_schema(path: Path, setting: str) -> Any:
    try:
        return parse_schema(orjson.loads(path.read_bytes()))
    except DecodeError as exc:
        raise DecodeError(f"{setting}: {path}: {exc.reason}") from None
    except (OSError, orjson.JSONDecodeError) as exc:
        raise DecodeError(f"{setting}: {path}: cannot read schema ({exc})") from None
    except Exception as exc:  # fastavro raises several types for an invalid schema
        raise DecodeError(f"{setting}: {path}: invalid Avro schema ({exc})") from None


def _has_zero_size_array_items(schema: Any) -> bool:
    nodes = list(schema_nodes(schema))
    named = named_types(schema)
    return any(
        _min_size_is_zero(node["items"], named, set())
        for node in nodes
        if node.get("type") == "array"
    )


def _min_size_is_zero(schema: Any, named: dict[str, Any], seen: set[str]) -> bool:
    if isinstance(schema, str):
        if schema == "null":
            return True
        if schema in seen or schema not in named:
            return False  # a record containing itself unconditionally cannot be written
        return _min_size_is_zero(named[schema], named, seen | {schema})
    if not isinstance(schema, dict):
        return False  # a union always writes its branch index
    kind = schema.get("type")
    if kind == "fixed":
        return bool(schema.get("size") == 0)
    if kind in ("record", "error"):
        name = str(schema.get("name", ""))
        if name in seen:
            return False
        return all(
            _min_size_is_zero(f["type"], named, seen | {name}) for f in schema.get("fields", ())
        )
    return kind == "null"
