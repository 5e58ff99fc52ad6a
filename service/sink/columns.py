"""Columnar field mapping: chunks of decoded lines -> the mapped Arrow columns (pure).

Gives exactly the rows of ``mapping.ColumnBuilder`` (the readable specification), built
column by column in chunks: each line is parsed once by orjson (``map`` runs the loop in C).
Which key each mapped column takes ("first present wins") depends only on the line's key
set, except for dotted names that may match a nested object; so each distinct key tuple is
planned once (``keyplan``) and the pops run as ``map(dict.pop, rows, keys)`` in C. Lines whose
plan would need to look inside a value take the specification's per-line path, with the
same ``rules``. ``attributes`` is the same ``orjson.dumps`` of what is left, so the bytes
match; ``lineage`` adds the columns that only depend on the record.

Why orjson dicts and not a native engine: ``attributes`` must be lossless JSON of every
unmapped field, in the line's own key order. DuckDB, Polars and pyarrow.json parse into a
schema and cannot re-emit "everything else" faster than this (measured in docs/writer.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import compress, repeat
from operator import itemgetter
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from service.decode.types import DecodedRecord
from service.schema import TIMESTAMP, extra_sources
from service.sink.event_time import times_us
from service.sink.keyplan import ABSENT, FALLBACK, SLOT, KeyPlans, pop_nested
from service.sink.rules import (
    ATTRIBUTES,
    HOST,
    MESSAGE,
    NOFIT,
    PLAN_SLOTS,
    SERVICE,
    SEVERITY,
    SEVERITY_NUMBER,
    SPAN_ID,
    TIME,
    TRACE_ID,
    UNWRITABLE,
    FieldMapping,
    default_service,
    extra_fit,
    line_count_fault,
    parse_line,
    pop_first,
    severity_number_override,
    severity_of,
    take_event_time,
    text_of,
)

_loads = orjson.loads
_dumps = orjson.dumps
_pop = dict.pop
_get = dict.get

# Lines mapped per pass: each chunk's dicts are revisited while still in the CPU cache, and
# its Python objects become Arrow and are freed before the next chunk, so the allocator
# reuses the same memory (measured: whole-flush passes over 200k dicts ran 2-3x slower,
# most of it in first-touch page faults for fresh memory).
CHUNK_LINES = 2048


class LineChunk:
    """Lines of whole records waiting to be mapped, with their per-line defaults."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.arrival: list[int] = []
        self.default: list[str] = []
        self.records: list[DecodedRecord] = []


def add_record(chunk: LineChunk, record: DecodedRecord) -> bool:
    """Take ``record``'s lines into ``chunk``; False (taking nothing) if a batch's line count
    is wrong."""
    if any(line_count_fault(batch) for batch in record.batches):
        return False
    lines: list[bytes] = []
    default: list[str] = []
    for batch in record.batches:
        lines += batch.payload.split(b"\n") if batch.count else []
        default += [default_service(batch)] * batch.count
    chunk.lines += lines
    chunk.default += default
    chunk.arrival += [record.meta.arrival_us] * len(lines)
    chunk.records.append(record)
    return True


# A line's row while it is not a JSON object: mapped like an empty line, then dropped.
LineFault = tuple[int, str]  # (row in the chunk, why the line is not a JSON object)


def _parse(chunk: LineChunk) -> tuple[list[dict[str, Any]], list[LineFault]]:
    """The chunk's lines as dicts, and the rows whose line is not a JSON object (an empty
    dict stands in for each, so every row keeps its place)."""
    try:
        objs = list(map(_loads, chunk.lines))
        if set(map(type, objs)) <= {dict}:
            return objs, []
    except orjson.JSONDecodeError:
        pass
    # Rare path: some line is not a JSON object; each line is parsed again on its own.
    objs, faults = [], []
    for row, line in enumerate(chunk.lines):
        obj, why = parse_line(line)
        if obj is None:
            faults.append((row, why))
        objs.append({} if obj is None else obj)
    return objs, faults


class ChunkMapper:
    """What one flush's chunks share: the key plans, the parsed severity names and the
    extra columns' rules."""

    def __init__(self, mapping: FieldMapping) -> None:
        self.mapping = mapping
        self.plans = KeyPlans(mapping)
        self.severity_cache: dict[str | None, tuple[str | None, int | None]] = {}
        self.extras = [(f, extra_sources(f), extra_fit(f)) for f in mapping.extra_columns]


def map_chunk(chunk: LineChunk, mapper: ChunkMapper) -> tuple[pa.RecordBatch, list[LineFault]]:
    """The mapped columns of one chunk's lines (lineage is added by ``lineage.assemble``);
    and the rows whose line cannot be mapped: not a JSON object, or ``UNWRITABLE`` (their
    rows hold placeholders for the caller to drop, so every other row keeps its place and
    its sub-sequence)."""
    objs, faults = _parse(chunk)
    try:
        return _map_objects(chunk, mapper, objs), faults
    except orjson.JSONEncodeError:
        pass
    # Rare path: some line cannot be written back. Each line is tried alone (the same
    # mapping, so the same verdict as the specification's), then the rest mapped again.
    for row in sorted(set(range(len(chunk.lines))).difference(r for r, _ in faults)):
        one = LineChunk()
        one.lines, one.arrival = [chunk.lines[row]], [chunk.arrival[row]]
        one.default = [chunk.default[row]]
        try:
            _map_objects(one, mapper, _parse(one)[0])
        except orjson.JSONEncodeError:
            faults.append((row, UNWRITABLE))
    faults.sort()
    objs, _ = _parse(chunk)
    for row, _ in faults:
        objs[row] = {}
    return _map_objects(chunk, mapper, objs), faults


def _map_objects(
    chunk: LineChunk, mapper: ChunkMapper, objs: list[dict[str, Any]]
) -> pa.RecordBatch:
    m, plans = mapper.mapping, mapper.plans
    by_row = list(map(plans.__getitem__, map(tuple, objs)))
    slow = [i for i, p in enumerate(by_row) if p is FALLBACK] if plans.fallbacks else []
    columns = list(zip(*by_row, strict=True)) if by_row else [()] * len(SLOT)
    keys = dict(zip(PLAN_SLOTS, columns, strict=True))
    # Popped in the plans' slot order: a key taken by one slot is gone for the next.
    got: dict[str, list[Any]] = {}
    for slot in PLAN_SLOTS:
        if slot == TIME:
            got[slot] = _event_times(objs, chunk.arrival, keys[slot], m)
        elif slot == SEVERITY_NUMBER:
            got[slot] = _overrides(objs, keys[slot])
        else:
            got[slot] = _pop_column(objs, keys[slot])
            if slot in plans.nested:  # before the next slot's pops: it may take the rest
                pop_nested(objs, keys[slot], got[slot])
    for i in slow:  # the specification's own per-line path
        for slot, value in _spec_row(objs[i], chunk.arrival[i], m).items():
            got[slot][i] = value
    sev_text, sev_num = _severities(got[SEVERITY], got[SEVERITY_NUMBER], mapper.severity_cache)
    # Extra columns take from what the canonical columns left, before attributes are dumped.
    extras = _extra_columns(objs, mapper.extras) if mapper.extras else {}
    batch = pa.record_batch(
        {
            "timestamp": pa.array(np.asarray(got[TIME], dtype=np.int64), TIMESTAMP),
            "severity_text": pa.array(sev_text, pa.string()),
            "severity_number": pa.array(sev_num, pa.int32()),
            **{g: _texts(got[g]) for g in (HOST, MESSAGE, TRACE_ID, SPAN_ID)},
            ATTRIBUTES: _attributes(_compact_dumps(objs)),
            SERVICE: _services(got[SERVICE], chunk.default),
            **extras,
        }
    )
    return batch


def _compact_dumps(objs: list[dict[str, Any]]) -> list[bytes]:
    """``orjson.dumps`` of each object, copied to its exact size: a dumps result holds ~4 KB
    until freed, and one record's lines make one chunk (issue 15: a CloudWatch record of
    200k events held 800 MB). The copy costs ~0.1 us a line."""
    return [bytes(memoryview(d)) for d in map(_dumps, objs)]


def _pop_column(objs: list[dict[str, Any]], keys: Sequence[Any]) -> list[Any]:
    return list(map(_pop, objs, keys, repeat(None)))


def _overrides(objs: list[dict[str, Any]], keys: Sequence[Any]) -> list[Any]:
    """``severity_number`` where it overrides (then popped), else None."""
    values = list(map(_get, objs, keys, repeat(None)))
    if values.count(None) == len(values):
        return values
    valid = list(map(severity_number_override, values))
    list(map(_pop, compress(objs, valid), compress(keys, valid)))
    return [v if ok else None for v, ok in zip(values, valid, strict=True)]


def _extra_columns(
    objs: list[dict[str, Any]], extras: list[tuple[pa.Field[Any], tuple[str, ...], Any]]
) -> dict[str, pa.Array[Any]]:
    """Each extra column, as ``mapping.take_extra`` fills it line by line: the first present
    source key, popped only when its value fits the column's type."""
    out: dict[str, pa.Array[Any]] = {}
    for column, sources, fit in extras:
        raw = list(map(_get, objs, repeat(sources[0]), repeat(ABSENT)))
        keys = [sources[0]] * len(objs)
        for alias in sources[1:]:  # rare: per-line loop over the lines still missing a key
            for i in [i for i, v in enumerate(raw) if v is ABSENT]:
                if alias in objs[i]:
                    raw[i], keys[i] = objs[i][alias], alias
        # One call per value (measured in benchmarks/writer.py only when columns are set).
        fitted = [NOFIT if v is ABSENT else fit(v) for v in raw]
        taken = [v is not NOFIT for v in fitted]
        list(map(_pop, compress(objs, taken), compress(keys, taken)))
        values = [None if v is NOFIT else v for v in fitted]
        out[column.name] = pa.array(values, column.type)
    return out


def _spec_row(obj: dict[str, Any], arrival_us: int, m: FieldMapping) -> dict[str, Any]:
    """One line exactly as ``mapping.ColumnBuilder`` pops it, by plan slot (raw values; the
    override or None)."""
    row: dict[str, Any] = {TIME: take_event_time(obj, arrival_us, m)}
    for slot in PLAN_SLOTS[1:]:
        if slot == SEVERITY_NUMBER:
            valid = severity_number_override(obj.get(SEVERITY_NUMBER))
            row[slot] = obj.pop(SEVERITY_NUMBER) if valid else None
        else:
            row[slot] = pop_first(obj, m.names(slot))
    return row


def _texts(values: list[Any]) -> pa.Array[Any]:
    try:  # the common case: every value a string or absent
        return pa.array(values, pa.string())
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        pass
    return pa.array(list(map(text_of, values)), pa.string())


def _services(raw: list[Any], default: list[str]) -> pa.Array[Any]:
    if not set(map(type, raw)) <= {str, type(None)}:
        raw = [v if type(v) is str or v is None else _dumps(v).decode() for v in raw]
    # An empty service name counts as absent (``text or default`` in the specification).
    return pa.array([t or d for t, d in zip(raw, default, strict=True)], pa.string())


def _event_times(
    objs: list[dict[str, Any]], arrival: list[int], keys: Sequence[Any], m: FieldMapping
) -> list[int]:
    """Event time per row; the field is removed only when it parsed inside the window."""
    ts, parsed = times_us(list(map(_get, objs, keys, repeat(None))))
    at = np.asarray(arrival, dtype=np.int64)
    inside = parsed & m.in_window(ts, at)
    keep = inside.tolist()
    list(map(_pop, compress(objs, keep), compress(keys, keep)))
    out: list[int] = np.where(inside, ts, at).tolist()
    return out


def _severities(
    raw: list[Any], override: list[Any], cache: dict[str | None, tuple[str | None, int | None]]
) -> tuple[list[str | None], list[int | None]]:
    if set(map(type, raw)) <= {str, type(None)}:  # few distinct level names: parse each once
        if len(cache) > 4096:
            cache.clear()
        missing = set(raw).difference(cache)
        for value in missing:
            cache[value] = severity_of(value)
        pairs = list(map(cache.__getitem__, raw))
    else:
        pairs = list(map(severity_of, raw))
    texts = list(map(itemgetter(0), pairs))
    numbers = list(map(itemgetter(1), pairs))
    if override.count(None) != len(override):
        for i, value in enumerate(override):
            if value is not None:
                numbers[i] = value
    return texts, numbers


def _attributes(dumped: list[bytes]) -> pa.Array[Any]:
    lengths = np.fromiter(map(len, dumped), dtype=np.int64, count=len(dumped))
    offsets = np.zeros(len(dumped) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    if dumped.count(b"{}") == 0 and offsets[-1] < 2**31:
        # The common case, built from two buffers: growing an Arrow builder touches twice
        # the fresh memory, and page faults on it cost 4x the copy (measured at 1M lines).
        # orjson's output is UTF-8, so it is viewed as text without validation.
        buffers = [
            None,
            pa.py_buffer(offsets.astype(np.int32).tobytes()),
            pa.py_buffer(b"".join(dumped)),
        ]
        return pa.Array.from_buffers(pa.string(), len(dumped), buffers)
    text: Any = pa.array(dumped, pa.binary()).cast(pa.string())
    empty = pc.equal(text, pa.scalar("{}", pa.string()))
    out: pa.Array[Any] = pc.if_else(empty, pa.scalar(None, pa.string()), text)
    return out
