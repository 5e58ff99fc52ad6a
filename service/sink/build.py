"""The one entry point from decoded records to the flush's table: native -> columnar ->
reference (pure).

The native path (``native``, the C scanner) maps the lines it is sure of and hands the rest
to the columnar path (``columns``); the columnar path maps anything; the reference path
(``mapping``) is the specification both are held to (tests/sink/test_mapping.py,
test_scan.py). All three read the same ``rules`` and give the same rows, byte for byte.
"""

from __future__ import annotations

import enum
import gc
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from service.decode.types import DecodedRecord
from service.sink import native
from service.sink.columns import (
    CHUNK_LINES,
    ChunkMapper,
    LineChunk,
    LineFault,
    add_record,
    map_chunk,
)
from service.sink.lineage import Lineage
from service.sink.mapping import build_table_reference
from service.sink.rules import (
    FieldMapping,
    Unmapped,
    line_count_fault,
    output_schema,
    record_raw,
)


class MappingPath(enum.Enum):
    """Which path maps a flush; ``build_table`` takes the fastest that supports the mapping."""

    NATIVE = "native"
    COLUMNAR = "columnar"
    REFERENCE = "reference"


def build_table(
    records: Sequence[DecodedRecord],
    mapping: FieldMapping,
    path: MappingPath = MappingPath.NATIVE,
) -> tuple[pa.Table, list[Unmapped]]:
    """Rows of every line that is a JSON object (``rules.output_schema``), and what could
    not be mapped, in record and line order: each line that is not a JSON object by itself
    (its record's other lines land, with their own sub-sequences), or a whole record whose
    batches do not hold the lines they declare. Never raises for bad input. ``path`` is the
    fastest path to try: native falls back to columnar when the scanner cannot take the
    mapping (or is switched off)."""
    if path is MappingPath.REFERENCE:
        return build_table_reference(records, mapping)
    mapped, lineage, unmapped = build_rows(records, mapping, path)
    return lineage.join(mapped, output_schema(mapping.extra_columns)), unmapped


def build_rows(
    records: Sequence[DecodedRecord],
    mapping: FieldMapping,
    path: MappingPath = MappingPath.NATIVE,
    *,
    release: bool = False,
) -> tuple[pa.Table, Lineage, list[Unmapped]]:
    """``build_table`` without the lineage columns: the mapped columns, the rows' lineage
    (``Lineage.join`` makes the table of any of the rows) and what could not be mapped.
    The native or columnar path only. ``release``: the flush takes over ``records`` (a
    list): on the native path each one is left hollow and its bytes are let go as the
    scanner maps them, so input and table are never held whole together (docs/writer.md)."""
    # Holding one dict per line makes every allocation tick the cyclic GC, which then walks
    # them all again and again (measured: 4x slower). These dicts cannot form cycles.
    paused = gc.isenabled()
    gc.disable()
    try:
        mapper = ChunkMapper(mapping)
        if path is MappingPath.NATIVE and native.supports(mapping):
            taken = records if release and isinstance(records, list) else None
            return _build_native(records, mapper, taken)
        return _build_columnar(records, mapper)
    finally:
        if paused:
            gc.enable()


class _Flush:
    """The mapped batches of a flush's whole records, and the rows (counted over the whole
    flush) whose line is not a JSON object."""

    def __init__(self) -> None:
        self.records: list[DecodedRecord] = []
        self.broken: list[Unmapped] = []  # records whose line counts are wrong
        self.batches: list[pa.RecordBatch] = []
        self.faults: list[tuple[int, str, bytes]] = []  # (row, reason, line)
        self.rows = 0

    def add(self, batch: pa.RecordBatch, faults: list[tuple[int, str, bytes]]) -> None:
        self.faults += [(self.rows + row, why, line) for row, why, line in faults]
        self.batches.append(batch)
        self.rows += batch.num_rows

    def refuse(self, record: DecodedRecord) -> None:
        why = next(f for f in map(line_count_fault, record.batches) if f)
        self.broken.append(Unmapped(record, None, why, record_raw(record)))

    def finish(self, records: Sequence[DecodedRecord]) -> tuple[pa.Table, Lineage, list[Unmapped]]:
        mapped = pa.Table.from_batches(self.batches)
        lineage = Lineage.of(self.records)
        lines = _line_faults(self.records, self.faults)
        if lines:  # the rows of lines that are not objects go; every other row keeps its place
            keep = np.ones(mapped.num_rows, dtype=bool)
            keep[[row for row, _, _ in self.faults]] = False
            mapped, lineage = mapped.filter(pa.array(keep)), lineage.keep(keep)
        # In the order of the records, then of their lines.
        order = {id(r): i for i, r in enumerate(records)}
        unmapped = sorted(
            self.broken + lines,
            key=lambda u: (order[id(u.record)], -1 if u.line is None else u.line),
        )
        return mapped, lineage, unmapped


def _line_faults(
    records: list[DecodedRecord], faults: list[tuple[int, str, bytes]]
) -> list[Unmapped]:
    if not faults:
        return []
    per_record = np.array([sum(b.count for b in r.batches) for r in records], dtype=np.int64)
    starts = np.cumsum(per_record) - per_record
    rows = np.array([row for row, _, _ in faults], dtype=np.int64)
    which = np.searchsorted(starts, rows, side="right") - 1
    return [
        Unmapped(records[i], row - int(starts[i]), why, line)
        for i, (row, why, line) in zip(which.tolist(), faults, strict=True)
    ]


def _chunk_faults(chunk: LineChunk, faults: list[LineFault]) -> list[tuple[int, str, bytes]]:
    return [(row, why, chunk.lines[row]) for row, why in faults]


def _build_columnar(
    records: Sequence[DecodedRecord], mapper: ChunkMapper
) -> tuple[pa.Table, Lineage, list[Unmapped]]:
    flush = _Flush()
    chunk = LineChunk()
    for record in records:  # per-record loop (tens of lines each); lines are parsed by map
        if not add_record(chunk, record):
            flush.refuse(record)
            continue
        flush.records.append(record)
        if len(chunk.lines) >= CHUNK_LINES:
            batch, faults = map_chunk(chunk, mapper)
            flush.add(batch, _chunk_faults(chunk, faults))
            chunk = LineChunk()
    if chunk.lines or not flush.batches:
        batch, faults = map_chunk(chunk, mapper)
        flush.add(batch, _chunk_faults(chunk, faults))
    return flush.finish(records)


# Bytes per call of the C scanner. A flush is usually one call, so its columns are single
# Arrow chunks, which the partition gather (plan.py) takes ~3x faster than many chunks;
# the cap keeps the scanner's int32 offsets safe.
NATIVE_CHUNK_BYTES = 512 * 1024 * 1024


def _build_native(
    records: Sequence[DecodedRecord], mapper: ChunkMapper, taken: list[DecodedRecord] | None
) -> tuple[pa.Table, Lineage, list[Unmapped]]:
    """The scanner's rows of ``records``. ``taken`` (``records`` itself, when the flush took
    them over): each record is replaced by its hollow copy as it joins a chunk, so its
    bytes are held by the chunk alone, and the scanner lets them go as it maps them."""
    groups = native.name_groups(mapper.mapping)
    flush = _Flush()
    chunk = native.NativeChunk()
    release = taken is not None
    for place, (record, wrong) in enumerate(zip(records, native.miscounted(records), strict=True)):
        if wrong:
            flush.refuse(record)
            continue
        chunk.add(record)
        held = record
        if taken is not None:
            taken[place] = chunk.records[-1] = held = record.hollow()
        flush.records.append(held)
        if chunk.bytes >= NATIVE_CHUNK_BYTES:
            flush.add(*_merge_native(chunk, mapper, groups, release))
            chunk = native.NativeChunk()
    if chunk.records or not flush.batches:
        flush.add(*_merge_native(chunk, mapper, groups, release))
    return flush.finish(records)


def _merge_native(
    chunk: native.NativeChunk, mapper: ChunkMapper, groups: Any, release: bool
) -> tuple[pa.RecordBatch, list[tuple[int, str, bytes]]]:
    """The scanner's rows, with the lines it left mapped by the columnar path and put back
    in place; and the rows whose line is not a JSON object (placeholders to drop)."""
    scanned = native.scan_chunk(chunk, mapper.mapping, groups, release=release)
    if scanned.taken.all():
        return scanned.batch, []
    left = np.flatnonzero(~scanned.taken)
    texts, defaults = native.left_lines(chunk, left)
    one = LineChunk()
    one.lines = texts
    one.arrival = scanned.arrival[left].tolist()
    one.default = defaults
    redone, faults = map_chunk(one, mapper)
    # The redone rows replace theirs in place: a linear copy of each column, not a gather.
    where = np.zeros(len(scanned.taken), dtype=bool)
    where[left] = True
    mask = pa.array(where)
    columns = [
        pc.replace_with_mask(column, mask, redone.column(name))
        for name, column in zip(scanned.batch.schema.names, scanned.batch.columns, strict=True)
    ]
    batch = pa.RecordBatch.from_arrays(columns, schema=scanned.batch.schema)
    return batch, [(int(left[row]), why, texts[row]) for row, why in faults]
