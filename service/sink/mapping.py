"""The reference mapping: decoded JSON lines -> canonical columns, one line at a time (pure).

This is the readable specification the columnar and native paths (``build``) are held to,
row for row and byte for byte; every rule it applies comes from ``rules``. Every field that
is not mapped to a column is kept in ``attributes`` (JSON text), so a line can be rebuilt
from its row. A value that cannot be mapped (a time that does not parse, a time outside the
window) stays in ``attributes`` and the column falls back deterministically.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
import pyarrow as pa

from service.decode.types import DecodedRecord, LineBatch, RecordMeta
from service.schema import extra_sources
from service.sink.rules import (
    SEVERITY_NUMBER,
    UNWRITABLE,
    FieldMapping,
    Unmapped,
    default_service,
    extra_fit,
    line_count_fault,
    output_schema,
    parse_line,
    pop_first,
    record_raw,
    severity_number_override,
    severity_of,
    take_event_time,
    take_extra,
    text_of,
)


class ColumnBuilder:
    """Accumulates rows column by column; ``table()`` returns canonical columns + ``service``."""

    def __init__(self, mapping: FieldMapping) -> None:
        self.mapping = mapping
        self.extras = [(extra_sources(f), extra_fit(f)) for f in mapping.extra_columns]
        self.schema = output_schema(mapping.extra_columns)
        self.cols: dict[str, list[Any]] = {name: [] for name in self.schema.names}

    def __len__(self) -> int:
        return len(self.cols["service"])

    def add_record(self, record: DecodedRecord) -> list[Unmapped]:
        """Append every line of ``record`` that is a JSON object, each keeping its position
        in the record as its sub-sequence; return the lines that are not (or the whole
        record, appending nothing, when a batch does not hold the lines it declares)."""
        faults = [f for f in map(line_count_fault, record.batches) if f]
        if faults:
            return [Unmapped(record, None, faults[0], record_raw(record))]
        rows: list[tuple[Any, ...]] = []
        unmapped: list[Unmapped] = []
        sub = 0
        meta = record.meta
        for batch in record.batches:
            observed = batch.observed_us or meta.arrival_us
            lines = batch.payload.split(b"\n") if batch.count else []
            for line in lines:  # per-line loop: measured in benchmarks/writer.py
                obj, why = parse_line(line)
                try:
                    if obj is not None:
                        rows.append(self._row(obj, batch, meta, observed, sub))
                except orjson.JSONEncodeError:
                    obj, why = None, UNWRITABLE
                if obj is None:
                    unmapped.append(Unmapped(record, sub, why, line))
                sub += 1
        for row in rows:
            for name, value in zip(self.cols, row, strict=True):
                self.cols[name].append(value)
        return unmapped

    def _row(
        self, obj: dict[str, Any], batch: LineBatch, meta: RecordMeta, observed: int, sub: int
    ) -> tuple[Any, ...]:
        m = self.mapping
        ts = take_event_time(obj, meta.arrival_us, m)
        sev_text, sev_num = severity_of(pop_first(obj, m.severity))
        if severity_number_override(obj.get(SEVERITY_NUMBER)):
            sev_num = obj.pop(SEVERITY_NUMBER)
        service = text_of(pop_first(obj, m.service))
        host = text_of(pop_first(obj, m.host))
        message = text_of(pop_first(obj, m.message))
        trace_id = text_of(pop_first(obj, m.trace_id))
        span_id = text_of(pop_first(obj, m.span_id))
        # Extra columns see only what the canonical columns left, before attributes.
        extras = tuple(take_extra(obj, sources, fit) for sources, fit in self.extras)
        return (
            ts,
            observed,
            sev_text,
            sev_num,
            host,
            message,
            trace_id,
            span_id,
            orjson.dumps(obj).decode() if obj else None,
            batch.source or None,
            batch.log_group or None,
            batch.log_stream or None,
            meta.shard_id,
            str(meta.sequence_number),
            sub,
            *extras,
            service or default_service(batch),
        )

    def table(self) -> pa.Table:
        """The accumulated rows as Arrow (canonical schema + a ``service`` string column)."""
        return pa.table(self.cols, schema=self.schema)


def build_table_reference(
    records: Sequence[DecodedRecord], mapping: FieldMapping
) -> tuple[pa.Table, list[Unmapped]]:
    """``build.build_table`` one line at a time: the readable specification of the mapping."""
    builder = ColumnBuilder(mapping)
    unmapped: list[Unmapped] = []
    for record in records:
        unmapped += builder.add_record(record)
    return builder.table(), unmapped
