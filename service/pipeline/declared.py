"""A pipeline's declared column types (``columns = { status = "int64" }``), applied last (pure).

Athena and Glue read every file of a table with one schema, so a column's type must not
depend on the lines a flush happened to hold. A declared column is cast to its type in
every flush, and is present (all null) in a flush where no line has it; a value that does
not fit its type becomes null and its row keeps the reason in ``parse_error`` (never the
value itself: it may be what redaction is there to hide). Declared columns come after the
others, in the document's order, then ``parse_error``: the same layout in every file.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from service.pipeline.transform import CAST_TYPES, PARSE_ERROR, cast_values, note_error


def declare(table: pa.Table, columns: Sequence[tuple[str, str]]) -> pa.Table:
    """``table`` with each declared (name, type) column cast (or added, all null), then
    ``parse_error`` (added, all null, if no step wrote one)."""
    typed: list[tuple[str, Any]] = []
    for name, type_name in columns:
        if name not in table.column_names:
            target: Any = CAST_TYPES[type_name]
            typed.append((name, pa.nulls(table.num_rows, target)))
            continue
        values, failed = cast_values(table.column(name).combine_chunks(), type_name)
        table = table.drop_columns([name])
        typed.append((name, values))
        if failed is not None:
            table = note_error(table, failed, f"column {name}: not of type {type_name}")
    if PARSE_ERROR in table.column_names:
        error = table.column(PARSE_ERROR)
        table = table.drop_columns([PARSE_ERROR])
    else:
        error = pa.chunked_array([pa.nulls(table.num_rows, pa.string())])
    for name, values in typed:
        table = table.append_column(name, values)
    return table.append_column(PARSE_ERROR, error)
