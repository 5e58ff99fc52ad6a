"""The rows of an Iceberg table's files (pure): the partition's service as a real column, each
row in the hour of its own ``timestamp``, and every spec column uniform inside a file, also
in the cardinality guard's overflow (DESIGN §11)."""

from __future__ import annotations

from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from service.sink.iceberg_spec import spec_fields
from service.sink.partition import event_hours, safe_services
from service.sink.template import OTHER_SERVICE, SERVICE, PartitionTemplate


def iceberg_partitions(table: pa.Table, template: PartitionTemplate | None = None) -> pa.Table:
    """``table`` (with the ``_hour`` and ``_service`` of ``with_partitions``) with ``service``
    set to the row's path-safe service (``__other__`` when the guard overflowed the row) and
    ``_hour`` to the hour of ``timestamp``: the values the table's transforms see, so no file
    spans two partitions (the guard may have moved a row to another hour's ``__other__``;
    Iceberg keeps it in its own hour, under ``__other__``). In an overflowed row every other
    key column of the spec (``{tenant}``) holds ``__other__`` too (null when not text), and
    its value is kept in ``attributes`` under the column's name, as the service's is."""
    hours = pa.array(event_hours(table))
    table = table.set_column(table.schema.get_field_index("_hour"), "_hour", hours)
    guarded = table.column("_service").combine_chunks()
    overflow: Any = pc.equal(guarded, pa.scalar(OTHER_SERVICE, pa.string()))
    if template is None or template.keys == (SERVICE,):
        service = guarded  # the guarded name is the safe service itself
    else:
        safe = safe_services(table.column(SERVICE).combine_chunks())
        service = pc.if_else(overflow, pa.scalar(OTHER_SERVICE, pa.string()), safe)
        rows = pc.indices_nonzero(overflow).to_pylist()
        if rows:
            table = _overflowed_keys(table, template, rows)
    return table.set_column(table.schema.get_field_index(SERVICE), SERVICE, service)


def _overflowed_keys(table: pa.Table, template: PartitionTemplate, rows: list[int]) -> pa.Table:
    """The spec's key columns (other than service) made uniform on the overflowed ``rows``,
    their values kept in ``attributes``. A per-row loop over those rows only."""
    columns = [f.source for f in spec_fields(template.keys)[1:] if f.source != SERVICE]
    columns = [c for c in columns if c in table.column_names]
    if not columns:
        return table
    attrs: list[Any] = table.column("attributes").to_pylist()
    for name in columns:
        index = table.schema.get_field_index(name)
        values: list[Any] = table.column(index).to_pylist()
        is_text = pa.types.is_string(table.schema.field(index).type)
        for row in rows:
            original = values[row]
            values[row] = OTHER_SERVICE if is_text else None
            if original is not None and original != values[row]:
                merged = orjson.loads(attrs[row]) if attrs[row] else {}
                merged.setdefault(name, original)
                attrs[row] = orjson.dumps(merged, default=str).decode()
        field = table.schema.field(index)
        table = table.set_column(index, field, pa.array(values, field.type))
    index = table.schema.get_field_index("attributes")
    return table.set_column(index, "attributes", pa.array(attrs, pa.string()))
