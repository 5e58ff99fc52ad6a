"""The column transforms of a pipeline: rename, drop, set, cast, hash (pure, columnar).

Each transform is a function ``pa.Table -> pa.Table``. A column a transform names but the
table lacks (a parsed field absent from this flush) is left alone. A value that does not
cast becomes null and its row gets the reason in ``parse_error``, so nothing is lost
silently.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from service.schema import TIMESTAMP

PARSE_ERROR = "parse_error"
CAST_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "float32": pa.float32(),
    "float64": pa.float64(),
    "bool": pa.bool_(),
    "timestamp": TIMESTAMP,
}
# The text each type reads (RE2): anything else becomes null with a reason.
_READS = {
    "int": r"^\s*[-+]?\d{1,18}\s*$",
    "float": r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$|^\s*[-+]?(inf|nan)\s*$",
    "bool": r"^(true|false|1|0)$",
    "timestamp": r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?)?(Z|[+-]\d{2}:?\d{2})?$",
}
Transform = Callable[[pa.Table], pa.Table]


def rename(names: Mapping[str, str]) -> Transform:
    def run(table: pa.Table) -> pa.Table:
        for old, new in names.items():
            if old in table.column_names and old != new:
                column = table.column(old)
                table = table.drop_columns([old])
                table = _put(table, new, column)
        return table

    return run


def drop(names: tuple[str, ...]) -> Transform:
    def run(table: pa.Table) -> pa.Table:
        return table.drop_columns([n for n in names if n in table.column_names])

    return run


def assign(values: Mapping[str, Any], text_only: frozenset[str]) -> Transform:
    """Constant columns; a name in ``text_only`` (a canonical text column) gets the text."""

    def run(table: pa.Table) -> pa.Table:
        for name, value in values.items():
            scalar = pa.scalar(value)
            if name in text_only or pa.types.is_null(scalar.type):
                scalar = pa.scalar(None if value is None else _text_of(value), pa.string())
            table = _put(table, name, pa.repeat(scalar, table.num_rows))
        return table

    return run


def cast(types: Mapping[str, str]) -> Transform:
    def run(table: pa.Table) -> pa.Table:
        for name, type_name in types.items():
            if name not in table.column_names:
                continue
            values, failed = cast_values(table.column(name).combine_chunks(), type_name)
            table = _put(table, name, values)
            if failed is not None:
                table = note_error(table, failed, f"cast {name} to {type_name} failed")
        return table

    return run


def hash_columns(names: tuple[str, ...], key: bytes) -> Transform:
    """HMAC-SHA256 (hex) of each value's text under ``key``: deterministic, null stays null."""

    def run(table: pa.Table) -> pa.Table:
        for name in names:
            if name in table.column_names:
                table = _put(table, name, keyed_hash(table.column(name).combine_chunks(), key))
        return table

    return run


def keyed_hash(values: pa.Array[Any], key: bytes) -> pa.Array[Any]:
    """HMAC-SHA256 hex of each value's text. Arrow has no HMAC kernel, so each distinct
    value is hashed once in Python (dictionary encoding): the loop is per value, not line."""
    text = values if pa.types.is_string(values.type) else _as_text(values)
    encoded: Any = pc.dictionary_encode(text)
    digests = [
        None if v is None else hmac.new(key, v.encode(), hashlib.sha256).hexdigest()
        for v in encoded.dictionary.to_pylist()
    ]
    return pc.take(pa.array(digests, pa.string()), encoded.indices)


def cast_values(values: Any, type_name: str) -> tuple[Any, Any]:
    """``values`` as ``type_name``; the mask of values that could not convert (None: all did)."""
    target: Any = CAST_TYPES[type_name]
    try:
        return pc.cast(values, target), None
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        pass
    text = _as_text(values)
    family = type_name.rstrip("0123456789")
    readable = pc.match_substring_regex(text, _READS.get(family, "^$"), ignore_case=True)
    kept = pc.if_else(readable, pc.utf8_trim_whitespace(text), pa.scalar(None, pa.string()))
    try:
        out = pc.cast(kept, target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        out = pa.nulls(len(values), target)  # e.g. an int beyond int32: no value converts
    failed = pc.and_(pc.is_valid(values), pc.is_null(out))
    return out, failed


def note_error(table: pa.Table, failed: Any, reason: str) -> pa.Table:
    """``reason`` in ``parse_error`` on the ``failed`` rows (after any reason already there)."""
    if not pc.any(failed).as_py():
        return table
    note = pc.if_else(failed, pa.scalar(reason), pa.scalar(None, pa.string()))
    if PARSE_ERROR in table.column_names:
        old = table.column(PARSE_ERROR).combine_chunks()
        joined = pc.binary_join_element_wise(old, note, pa.scalar("; "))  # null if either is
        note = pc.if_else(pc.is_null(old), note, pc.if_else(pc.is_null(note), old, joined))
    return _put(table, PARSE_ERROR, note)


def _put(table: pa.Table, name: str, column: Any) -> pa.Table:
    """``table`` with ``name`` set to ``column``, in place when it exists, else appended."""
    if name in table.column_names:
        return table.set_column(table.column_names.index(name), name, column)
    return table.append_column(name, column)


def _as_text(values: Any) -> Any:
    if pa.types.is_string(values.type):
        return values
    if pa.types.is_boolean(values.type):
        return pc.if_else(values, "true", "false")
    try:
        return pc.cast(values, pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return pa.nulls(len(values), pa.string())


def _text_of(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


@dataclass(frozen=True, slots=True)
class Step:
    """One configured transform: its position and kind (for error lines) and its function."""

    kind: str
    run: Transform
