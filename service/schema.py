"""Canonical columns of the table (DESIGN §4): names, Arrow types, and the Arrow schema (pure)."""

from __future__ import annotations

from typing import Any

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


def table_schema(extra: tuple[pa.Field[Any], ...] = ()) -> pa.Schema:
    """The file schema: canonical columns, then configured extra typed columns."""
    return pa.schema(CANONICAL_FIELDS + extra) if extra else CANONICAL_SCHEMA
