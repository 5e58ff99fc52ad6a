"""The rows of an Iceberg table's files (pure): the partition's service as a real column and
each row in the hour of its own ``timestamp`` (DESIGN §11)."""

from __future__ import annotations

import pyarrow as pa

from service.sink.opened import HOUR_US


def iceberg_partitions(table: pa.Table) -> pa.Table:
    """``table`` (with the ``_hour`` and ``_service`` of ``with_partitions``) with ``service``
    set to the guarded ``_service`` and ``_hour`` to the hour of ``timestamp``: the values the
    table's ``identity(service)`` and ``hour(timestamp)`` transforms give every row, so no
    file spans two partitions (the guard may have moved a row to another hour's
    ``__other__``; Iceberg keeps it in its own hour, under ``__other__``)."""
    ts = table.column("timestamp").combine_chunks().cast(pa.int64()).to_numpy()
    hours = pa.array(ts // HOUR_US)
    table = table.set_column(table.schema.get_field_index("_hour"), "_hour", hours)
    return table.set_column(
        table.schema.get_field_index("service"), "service", table.column("_service")
    )
