"""An Iceberg table's schema against the columns of a flush's files (pure): which columns the
table gains (union by name), and how a file whose column the table types otherwise is made
to fit (the table's type wins; a value that does not convert is kept in ``attributes``).

Columns appear later in two ways: an extra typed column added to ``TIDEWAY_EXTRA_COLUMNS``,
and a pipeline's parsed columns, which follow the data (a JSON field first seen in this
flush). Neither may fail a flush, so a conflict is settled here rather than refused.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.io.pyarrow import _ConvertToIcebergWithoutIDs, schema_to_pyarrow, visit_pyarrow
from pyiceberg.schema import Schema

ATTRIBUTES = "attributes"


# A file column of the first type reads as the second without conversion (Iceberg's own
# type promotion: int -> long, float -> double); strings are one type in either width.
_READS_AS = {
    (pa.int32(), pa.int64()),
    (pa.float32(), pa.float64()),
    (pa.string(), pa.large_string()),
    (pa.large_string(), pa.string()),
    (pa.binary(), pa.large_binary()),
    (pa.large_binary(), pa.binary()),
}


@dataclass(frozen=True, slots=True)
class Evolution:
    """What the table needs for a file: columns to add, and columns to convert (name ->
    the table's Arrow type) because the table types them otherwise."""

    added: tuple[pa.Field[Any], ...] = ()
    converted: tuple[tuple[str, pa.DataType], ...] = ()


def table_arrow_types(schema: Schema) -> dict[str, pa.DataType]:
    """The table's top-level columns as Arrow types."""
    arrow = schema_to_pyarrow(schema, include_field_ids=False)
    return {f.name: f.type for f in arrow}


def evolution(table: Mapping[str, pa.DataType], file: pa.Schema) -> Evolution:
    """How ``file`` (a data file's Arrow schema) fits the table (``table_arrow_types``)."""
    added: list[pa.Field[Any]] = []
    converted: list[tuple[str, pa.DataType]] = []
    for f in file:
        have = table.get(f.name)
        if have is None:
            if _has_iceberg_type(f):  # else readers skip it: the name mapping lacks it
                added.append(f.with_nullable(True))  # earlier files have no value for it
        elif not reads_as(f.type, have):
            converted.append((f.name, have))
    return Evolution(tuple(added), tuple(converted))


def _has_iceberg_type(f: pa.Field[Any]) -> bool:
    """Whether an Arrow column has an Iceberg type (not ``null``, not ``uint64``, ...)."""
    try:
        visit_pyarrow(pa.schema([f]), _ConvertToIcebergWithoutIDs())
    except (TypeError, ValueError, NotImplementedError):
        return False
    return True


def reads_as(file_type: pa.DataType, table_type: pa.DataType) -> bool:
    """True when a file column of ``file_type`` is read as ``table_type`` unchanged."""
    if file_type.equals(table_type) or (file_type, table_type) in _READS_AS:
        return True
    if pa.types.is_timestamp(file_type) and pa.types.is_timestamp(table_type):
        return file_type.unit == "us" and (file_type.tz is None) == (table_type.tz is None)
    return False


def conform(rows: pa.Table, converted: tuple[tuple[str, pa.DataType], ...]) -> pa.Table:
    """``rows`` with each converted column cast to the table's type. A value that does not
    convert becomes null in the column and is kept, as it came, under the column's name in
    the row's ``attributes`` (DESIGN §4, as for any mapped column). Deterministic."""
    moved: dict[int, dict[str, Any]] = {}
    for name, target in converted:
        i = rows.schema.get_field_index(name)
        column = rows.column(i).combine_chunks()
        cast, failed = _cast_each(column, target)
        rows = rows.set_column(i, pa.field(name, target, nullable=True), cast)
        for row in failed:
            moved.setdefault(row, {})[name] = column[row].as_py()
    if moved and ATTRIBUTES in rows.column_names:
        rows = _into_attributes(rows, moved)
    return rows


def conformed_key(key: str, converted: tuple[tuple[str, pa.DataType], ...]) -> str:
    """The key of a converted copy of the object ``key``: in its directory, named by the
    conversion (deterministic), and outside the ``{stream}-{shard}-`` names that replays
    list and delete as stale."""
    folder, _, name = key.rpartition("/")
    digest = hashlib.blake2b(repr(converted).encode(), digest_size=6).hexdigest()
    return f"{folder}/conformed-{digest}-{name}"


def _cast_each(column: pa.Array[Any], target: pa.DataType) -> tuple[pa.Array[Any], list[int]]:
    """``column`` cast to ``target``, and the rows whose non-null value did not convert."""
    try:
        return pc.cast(column, target, safe=True), []
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    # The slow path runs only for a file that really holds values of another type: per value.
    values: list[Any] = []
    failed: list[int] = []
    for row, value in enumerate(column):
        try:
            values.append(pc.cast(pa.array([value.as_py()], column.type), target)[0].as_py())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            values.append(None)
            if value.is_valid:
                failed.append(row)
    return pa.array(values, target), failed


def _into_attributes(rows: pa.Table, moved: dict[int, dict[str, Any]]) -> pa.Table:
    i = rows.schema.get_field_index(ATTRIBUTES)
    texts = rows.column(i).to_pylist()
    for row, values in moved.items():
        text = texts[row]
        doc = orjson.loads(text) if isinstance(text, str) and text else {}
        if not isinstance(doc, dict):
            doc = {}
        for name, value in values.items():
            doc.setdefault(name, value)
        texts[row] = orjson.dumps(doc, default=str, option=orjson.OPT_SORT_KEYS).decode()
    return rows.set_column(i, rows.schema.field(i), pa.array(texts, rows.schema.field(i).type))
