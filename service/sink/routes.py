"""A flush's mapped rows through the configured pipelines -> one table per destination (pure).

The pipelines see every column of DESIGN §4, lineage included (conditions read
``log_group``, sampling reads the lineage key); each destination then gets back its rows'
mapped columns and their ``Lineage``, so ``plan`` writes it as it writes ``logs``. A
destination's schema is the §4 columns, then its new columns (parsed fields, set columns,
``parse_error``, ``pipeline_version``) in the order they appeared; every file of a flush
under pipelines carries the document's version in its Parquet key-value metadata.
"""

from __future__ import annotations

from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import pyarrow as pa

from service.pipeline.engine import ARRIVAL_COLUMN, DEFAULT_TABLE, LINEAGE_COLUMNS, Pipelines
from service.sink.gather import chunk_count
from service.sink.lineage import Lineage
from service.sink.order import flush_order

VERSION_KEY = b"tideway.pipeline_version"
_WORKING = ("service",)  # mapped, but a partition value, not a file column


def routed(
    table: pa.Table, lineage: Lineage, pipelines: Pipelines | None, schema: pa.Schema
) -> Iterator[tuple[str, pa.Table, Lineage, pa.Schema]]:
    """(destination, mapped columns, lineage, file schema) of each destination, in the
    document's order (the default table last). ``table`` is build_rows' mapped table;
    without pipelines, every row goes to ``logs`` as it is."""
    if pipelines is None:
        yield DEFAULT_TABLE, table, lineage, schema
        return
    # Only the lineage columns the pipelines read: the others would be made per row for
    # the whole flush and copied by every pipeline's filter, then dropped unread.
    read = pipelines.lineage_read()
    # The Iceberg layout's file schema has ``service`` already (a real column there).
    whole = schema if "service" in schema.names else schema.append(pa.field("service", pa.string()))
    whole = pa.schema([f for f in whole if f.name not in LINEAGE_COLUMNS or f.name in read])
    joined = lineage.join(table, whole)
    if pipelines.reads_arrival():
        joined = joined.append_column(ARRIVAL_COLUMN, lineage.arrival())
    metadata: dict[Any, Any] = {VERSION_KEY: pipelines.version.encode()}
    # Each route's rows are taken in the writer's partition order, so the writer slices
    # its partitions out of the route instead of gathering a second copy of them. A table
    # of several chunks (Arrow's take would join each column's chunks for every route)
    # keeps the filters and the writer's gathers.
    order = flush_order(table) if chunk_count(table) <= 1 else None
    # One destination at a time (Pipelines.routes): the caller makes its files and lets it
    # go before the next is made, so the peak is the flush's table and one destination;
    # the table goes once the last is made (the caller dropped it too).
    del table
    for route in pipelines.routes(joined, order):
        columns = route.columns
        if ARRIVAL_COLUMN in columns.column_names:
            columns = columns.drop_columns([ARRIVAL_COLUMN])
        mapped = columns.drop_columns([n for n in columns.column_names if n in LINEAGE_COLUMNS])
        yield route.table, mapped, lineage.take(route.rows), _schema(columns, schema, metadata)
        del route, columns, mapped  # before the next destination is made


def _schema(columns: pa.Table, base: pa.Schema, metadata: dict[Any, Any]) -> pa.Schema:
    present = set(columns.column_names) | LINEAGE_COLUMNS  # re-attached by the writer
    fields: list[pa.Field[Any]] = [f for f in base if f.name in present]
    known = set(base.names) | set(_WORKING)
    fields += [columns.schema.field(n) for n in columns.column_names if n not in known]
    return pa.schema(fields, metadata=metadata)


def code_version() -> str:
    """Which code wrote a plan document (people read it in /status; replays do not compare
    it): with pipelines, a plan's bytes depend on the code of the parsers too."""
    try:
        tideway = version("tideway")
    except PackageNotFoundError:
        tideway = "unknown"
    return f"tideway {tideway}, pyarrow {pa.__version__}"
