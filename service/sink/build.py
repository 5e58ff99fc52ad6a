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
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from service.decode.types import DecodedRecord
from service.sink import native
from service.sink.columns import (
    CHUNK_LINES,
    ChunkMapper,
    LineChunk,
    add_record,
    map_chunk,
    unmapped_reason,
)
from service.sink.lineage import assemble
from service.sink.mapping import build_table_reference
from service.sink.rules import FieldMapping


class MappingPath(enum.Enum):
    """Which path maps a flush; ``build_table`` takes the fastest that supports the mapping."""

    NATIVE = "native"
    COLUMNAR = "columnar"
    REFERENCE = "reference"


def build_table(
    records: Sequence[DecodedRecord],
    mapping: FieldMapping,
    path: MappingPath = MappingPath.NATIVE,
) -> tuple[pa.Table, list[tuple[DecodedRecord, str]]]:
    """Rows of every good record (``rules.output_schema``), and (record, reason) for each
    record holding a line that is not a JSON object; never raises for bad input. ``path``
    is the fastest path to try: native falls back to columnar when the scanner cannot take
    the mapping (or is switched off)."""
    if path is MappingPath.REFERENCE:
        return build_table_reference(records, mapping)
    # Holding one dict per line makes every allocation tick the cyclic GC, which then walks
    # them all again and again (measured: 4x slower). These dicts cannot form cycles.
    paused = gc.isenabled()
    gc.disable()
    try:
        mapper = ChunkMapper(mapping)
        if path is MappingPath.NATIVE and native.supports(mapping):
            return _build_native(records, mapper)
        return _build_columnar(records, mapper)
    finally:
        if paused:
            gc.enable()


def _build_columnar(
    records: Sequence[DecodedRecord], mapper: ChunkMapper
) -> tuple[pa.Table, list[tuple[DecodedRecord, str]]]:
    mapping = mapper.mapping
    chunks: list[pa.RecordBatch] = []
    good: list[DecodedRecord] = []
    bad: list[tuple[DecodedRecord, str]] = []
    chunk = LineChunk()
    for record in records:  # per-record loop (tens of lines each); lines are parsed by map
        if not add_record(chunk, record):
            bad.append((record, unmapped_reason(record, mapping)))
            continue
        if len(chunk.lines) >= CHUNK_LINES:
            chunks.append(map_chunk(chunk, mapper, good, bad))
            chunk = LineChunk()
    if chunk.lines or not chunks:
        chunks.append(map_chunk(chunk, mapper, good, bad))
    return _finish(records, chunks, good, bad, mapping)


def _finish(
    records: Sequence[DecodedRecord],
    chunks: list[pa.RecordBatch],
    good: list[DecodedRecord],
    bad: list[tuple[DecodedRecord, str]],
    mapping: FieldMapping,
) -> tuple[pa.Table, list[tuple[DecodedRecord, str]]]:
    # A bad record found late (inside a chunk) is reported in the order of the records.
    order = {id(r): i for i, r in enumerate(records)}
    bad.sort(key=lambda item: order[id(item[0])])
    return assemble(pa.Table.from_batches(chunks), good, mapping), bad


# Bytes per call of the C scanner. A flush is usually one call, so its columns are single
# Arrow chunks, which the partition gather (plan.py) takes ~3x faster than many chunks;
# the cap keeps the scanner's int32 offsets safe.
NATIVE_CHUNK_BYTES = 512 * 1024 * 1024


def _build_native(
    records: Sequence[DecodedRecord], mapper: ChunkMapper
) -> tuple[pa.Table, list[tuple[DecodedRecord, str]]]:
    groups = native.name_groups(mapper.mapping)
    chunks: list[pa.RecordBatch] = []
    good: list[DecodedRecord] = []
    bad: list[tuple[DecodedRecord, str]] = []
    chunk = native.NativeChunk()
    for record in records:
        if not chunk.add(record):
            bad.append((record, unmapped_reason(record, mapper.mapping)))
            continue
        if chunk.bytes >= NATIVE_CHUNK_BYTES:
            chunks.append(_merge_native(chunk, mapper, groups, good, bad))
            chunk = native.NativeChunk()
    if chunk.records or not chunks:
        chunks.append(_merge_native(chunk, mapper, groups, good, bad))
    return _finish(records, chunks, good, bad, mapper.mapping)


def _merge_native(
    chunk: native.NativeChunk,
    mapper: ChunkMapper,
    groups: Any,
    good: list[DecodedRecord],
    bad: list[tuple[DecodedRecord, str]],
) -> pa.RecordBatch:
    """The scanner's rows, with the lines it left mapped by the Python path and put back in
    place. A record holding a line that is not a JSON object goes whole to the Python path,
    which names the line and dead-letters the record as the specification does."""
    scanned = native.scan_chunk(chunk, mapper.mapping, groups)
    if scanned.taken.all():
        good.extend(chunk.records)
        return scanned.batch
    left = np.flatnonzero(~scanned.taken)
    texts, defaults = native.left_lines(chunk, left)
    record_of = scanned.record_of_row
    broken = sorted(
        {int(record_of[r]) for r, t in zip(left, texts, strict=True) if not _is_object(t)}
    )
    in_broken = np.isin(record_of, broken)
    # Lines the scanner left in records that are otherwise fine: one by one.
    one = LineChunk()
    one_rows = left[~in_broken[left]]
    for r, text, default in zip(left.tolist(), texts, defaults, strict=True):
        if not in_broken[r]:
            one.lines.append(text)
            one.arrival.append(int(scanned.arrival[r]))
            one.default.append(default)
    redone = [map_chunk(one, mapper, [], bad)] if one.lines else []
    rows = [one_rows] if one.lines else []
    # Records with a broken line: whole, through the path that finds and names bad lines.
    dropped: set[int] = set()
    if broken:
        whole = LineChunk()
        for i in broken:
            add_record(whole, chunk.records[i])  # line counts were checked by the native chunk
        whole_good: list[DecodedRecord] = []
        redone.append(map_chunk(whole, mapper, whole_good, bad))
        kept = {id(r) for r in whole_good}
        dropped = {i for i in broken if id(chunk.records[i]) not in kept}
        rows.append(np.flatnonzero(np.isin(record_of, [i for i in broken if i not in dropped])))
    good.extend(r for i, r in enumerate(chunk.records) if i not in dropped)
    # The redone rows replace theirs in place: a linear copy of each column, not a gather.
    at = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    replacement = pa.Table.from_batches(redone, schema=scanned.batch.schema)
    replacement = replacement.take(np.argsort(at, kind="stable")).combine_chunks()
    where = np.zeros(len(record_of), dtype=bool)
    where[at] = True
    mask = pa.array(where)
    columns = [
        pc.replace_with_mask(column, mask, replacement.column(k).combine_chunks())
        if len(at)
        else column
        for k, column in enumerate(scanned.batch.columns)
    ]
    batch = pa.RecordBatch.from_arrays(columns, schema=scanned.batch.schema)
    if dropped:
        batch = batch.filter(pa.array(~np.isin(record_of, sorted(dropped))))
    return batch


def _is_object(line: bytes) -> bool:
    try:
        return type(orjson.loads(line)) is dict
    except orjson.JSONDecodeError:
        return False
