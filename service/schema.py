"""Canonical columns of the table (DESIGN §4): names, Arrow types, and the Arrow schema (pure)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
import pyarrow as pa

TIMESTAMP = pa.timestamp("us", tz="UTC")

# Order is the on-disk column order; readers rely on names and types, not order.
CANONICAL_FIELDS: tuple[pa.Field[Any], ...] = (
    pa.field("timestamp", TIMESTAMP, nullable=False),
    pa.field("observed_timestamp", TIMESTAMP, nullable=False),
    pa.field("severity_text", pa.string()),
    pa.field("severity_number", pa.int32()),
    pa.field("host", pa.string()),
    pa.field("message", pa.string()),
    pa.field("trace_id", pa.string()),
    pa.field("span_id", pa.string()),
    pa.field("attributes", pa.string()),
    pa.field("source", pa.string()),
    pa.field("log_group", pa.string()),
    pa.field("log_stream", pa.string()),
    pa.field("kinesis_shard_id", pa.string(), nullable=False),
    pa.field("kinesis_sequence_number", pa.string(), nullable=False),
    pa.field("kinesis_sub_sequence", pa.int32(), nullable=False),
)
CANONICAL_SCHEMA = pa.schema(CANONICAL_FIELDS)
COLUMN_NAMES: tuple[str, ...] = tuple(f.name for f in CANONICAL_FIELDS)

# Hive partition columns live in the path only (DESIGN §4).
PARTITION_COLUMNS: tuple[str, ...] = ("dt", "hour", "service")

LINEAGE_KEY: tuple[str, ...] = (
    "kinesis_shard_id",
    "kinesis_sequence_number",
    "kinesis_sub_sequence",
)

# OpenTelemetry severity numbers for the usual level names (logs data model, SeverityNumber).
SEVERITY_NUMBERS: dict[str, int] = {
    "trace": 1,
    "debug": 5,
    "info": 9,
    "information": 9,
    "informational": 9,
    "notice": 10,
    "warn": 13,
    "warning": 13,
    "error": 17,
    "err": 17,
    "critical": 21,
    "crit": 21,
    "fatal": 21,
    "alert": 22,
    "emergency": 23,
    "emerg": 24,
    "panic": 24,
}


# An Iceberg table's files carry the partition's service as a real column (DESIGN §11).
SERVICE_FIELD: pa.Field[Any] = pa.field("service", pa.string(), nullable=False)


def table_schema(extra: tuple[pa.Field[Any], ...] = (), *, service: bool = False) -> pa.Schema:
    """The file schema: canonical columns, ``service`` for an Iceberg table, then configured
    extra typed columns (without the aliases kept in their metadata, so files only carry
    names and types)."""
    fields = CANONICAL_FIELDS + ((SERVICE_FIELD,) if service else ())
    if not extra:
        return pa.schema(fields) if service else CANONICAL_SCHEMA
    return pa.schema(fields + tuple(f.remove_metadata() for f in extra))


# Extra typed columns (DESIGN §4): Avro types of a record's fields -> Arrow column types.
_AVRO_PRIMITIVES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "int": pa.int32(),
    "long": pa.int64(),
    "float": pa.float32(),
    "double": pa.float64(),
    "boolean": pa.bool_(),
}
_AVRO_TIMESTAMPS = ("timestamp-millis", "timestamp-micros")
_ALIASES = b"aliases"
# Columns the writer adds while partitioning (``sink.partition.with_partitions``).
_WORKING_COLUMNS = ("_hour", "_service")


def extra_fields(record: Any, partition_keys: Iterable[str] = ()) -> tuple[pa.Field[Any], ...]:
    """The nullable Arrow column of each top-level field of an Avro record schema, in order;
    a field's ``aliases`` are kept in its metadata (see ``extra_sources``).

    Raises ValueError (one line) for a schema that is not a record, an unsupported type, or
    a name that is taken by a canonical column, a partition key or another field.
    """
    if not isinstance(record, dict) or record.get("type") not in ("record", "error"):
        raise ValueError('must be an Avro record schema ({"type": "record", ...})')
    if not record.get("fields"):
        raise ValueError("the record declares no fields")
    taken = {*COLUMN_NAMES, *PARTITION_COLUMNS, *partition_keys, *_WORKING_COLUMNS}
    out: list[pa.Field[Any]] = []
    for item in record.get("fields", ()):
        name = item["name"]
        if name in taken:
            raise ValueError(f"field {name!r} collides with a canonical or partition column")
        taken.add(name)
        aliases = [str(a) for a in item.get("aliases", ())]
        out.append(
            pa.field(
                name,
                _arrow_type(name, item["type"]),
                nullable=True,
                metadata={_ALIASES: orjson.dumps(aliases)} if aliases else None,
            )
        )
    return tuple(out)


def extra_sources(column: pa.Field[Any]) -> tuple[str, ...]:
    """The top-level keys that feed an extra column, in order: its name, then its aliases."""
    aliases = (column.metadata or {}).get(_ALIASES)
    return (column.name, *(orjson.loads(aliases) if aliases else ()))


def _arrow_type(name: str, avro: Any) -> pa.DataType:
    if isinstance(avro, list):  # a union: null plus exactly one supported type
        branches = [b for b in avro if b != "null"]
        if len(branches) == 1 and len(avro) <= 2:
            return _arrow_type(name, branches[0])
    elif isinstance(avro, str) and avro in _AVRO_PRIMITIVES:
        return _AVRO_PRIMITIVES[avro]
    elif isinstance(avro, dict):
        if avro.get("type") == "long" and avro.get("logicalType") in _AVRO_TIMESTAMPS:
            return TIMESTAMP
        if avro.get("logicalType") is None and not isinstance(avro.get("type"), dict | list):
            return _arrow_type(name, avro.get("type"))
    supported = "string, int, long, float, double, boolean, long timestamp-millis/-micros"
    raise ValueError(
        f"field {name!r} has unsupported type {orjson.dumps(avro).decode()} "
        f"(supported: {supported}, optionally in a union with null)"
    )
