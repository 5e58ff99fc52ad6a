"""Columnar field mapping: a flush's decoded records -> canonical Arrow columns (pure).

Gives exactly the rows of ``mapping.ColumnBuilder`` (the readable specification), built
column by column: each line is parsed once by orjson (``map`` runs the loop in C), every
mapped field is popped for all rows in one pass per candidate name (later candidates only
visit the rows still missing the field), lineage and per-batch metadata are repeated with
numpy, and ``attributes`` is the same ``orjson.dumps`` of what is left, so the bytes match.

Why orjson dicts and not a native engine: ``attributes`` must be lossless JSON of every
unmapped field, in the line's own key order. DuckDB, Polars and pyarrow.json parse into a
schema and cannot re-emit "everything else" faster than this (measured in docs/writer.md).
"""

from __future__ import annotations

import gc
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from operator import methodcaller
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from service.schema import TIMESTAMP, table_schema
from service.sink.mapping import (
    UNKNOWN_SERVICE,
    BadLine,
    ColumnBuilder,
    DecodedRecord,
    FieldMapping,
    parse_time_us,
    severity_number_override,
    severity_of,
)

_MISSING: Any = object()
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)
_loads = orjson.loads
_dumps = orjson.dumps
_fromiso = datetime.fromisoformat


def build_columns(
    records: Sequence[DecodedRecord], mapping: FieldMapping
) -> tuple[pa.Table, list[tuple[DecodedRecord, str]]]:
    """Rows of every good record (canonical schema + ``service``), and (record, reason) for
    each record holding a line that is not a JSON object; never raises for bad input."""
    # Holding one dict per line makes every allocation tick the cyclic GC, which then walks
    # them all again and again (measured: 4x slower). These dicts cannot form cycles.
    paused = gc.isenabled()
    gc.disable()
    try:
        return _build(records, mapping)
    finally:
        if paused:
            gc.enable()


# Lines mapped per pass: each chunk's dicts are revisited while still in the CPU cache, and
# its Python objects become Arrow and are freed before the next chunk, so the allocator
# reuses the same memory (measured: whole-flush passes over 200k dicts ran 2-3x slower,
# most of it in first-touch page faults for fresh memory).
CHUNK_LINES = 2048


def _build(
    records: Sequence[DecodedRecord], mapping: FieldMapping
) -> tuple[pa.Table, list[tuple[DecodedRecord, str]]]:
    chunks: list[pa.RecordBatch] = []
    objs: list[dict[str, Any]] = []
    arrival: list[int] = []
    default: list[str] = []
    good: list[DecodedRecord] = []
    bad: list[tuple[DecodedRecord, str]] = []
    for record in records:  # per-record loop (tens of lines each); lines are parsed by map
        parsed = _parse_record(record)
        if parsed is None:
            bad.append((record, _reason(record, mapping)))
            continue
        objs.extend(parsed)
        arrival.extend([record.meta.arrival_us] * len(parsed))
        for batch in record.batches:
            default.extend([batch.service or batch.log_group or UNKNOWN_SERVICE] * batch.count)
        good.append(record)
        if len(objs) >= CHUNK_LINES:
            chunks.append(_map_chunk(objs, arrival, default, mapping))
            objs, arrival, default = [], [], []
    if objs or not chunks:
        chunks.append(_map_chunk(objs, arrival, default, mapping))
    return _table(pa.Table.from_batches(chunks), good), bad


def _parse_record(record: DecodedRecord) -> list[dict[str, Any]] | None:
    out: list[dict[str, Any]] = []
    for batch in record.batches:
        lines = batch.payload.split(b"\n") if batch.count else []
        if len(lines) != batch.count:
            return None
        try:
            parsed = list(map(_loads, lines))
        except orjson.JSONDecodeError:
            return None
        if any(type(o) is not dict for o in parsed):
            return None
        out.extend(parsed)
    return out


def _reason(record: DecodedRecord, mapping: FieldMapping) -> str:
    # Rare path: the specification names the exact line and why.
    try:
        ColumnBuilder(mapping).add_record(record)
    except BadLine as exc:
        return str(exc)
    return "unmappable record"


def _map_chunk(
    objs: list[dict[str, Any]], arrival: list[int], default: list[str], m: FieldMapping
) -> pa.RecordBatch:
    """Map one chunk of parsed lines, in ColumnBuilder's order of pops."""
    ts = _event_times(objs, arrival, m)
    sev_text, sev_num = _severities(objs, m)
    service = [t or d for t, d in zip(_texts(_pop_first(objs, m.service)), default, strict=True)]
    return pa.record_batch(
        {
            "timestamp": pa.array(np.asarray(ts, dtype=np.int64), TIMESTAMP),
            "severity_text": pa.array(sev_text, pa.string()),
            "severity_number": pa.array(sev_num, pa.int32()),
            "host": pa.array(_texts(_pop_first(objs, m.host)), pa.string()),
            "message": pa.array(_texts(_pop_first(objs, m.message)), pa.string()),
            "trace_id": pa.array(_texts(_pop_first(objs, m.trace_id)), pa.string()),
            "span_id": pa.array(_texts(_pop_first(objs, m.span_id)), pa.string()),
            "attributes": _attributes(list(map(_dumps, objs))),
            "service": pa.array(service, pa.string()),
        }
    )


def _table(mapped: pa.Table, records: list[DecodedRecord]) -> pa.Table:
    columns = {**_lineage(records), **{n: mapped.column(n) for n in mapped.column_names}}
    schema = table_schema().append(pa.field("service", pa.string(), nullable=False))
    return pa.table([columns[name] for name in schema.names], schema=schema)


def _lineage(records: list[DecodedRecord]) -> dict[str, pa.Array[Any]]:
    """Per-row columns that only depend on the record and batch: repeated, not looped."""
    counts = np.array([b.count for r in records for b in r.batches], dtype=np.int64)
    per_record = np.array([sum(b.count for b in r.batches) for r in records], dtype=np.int64)
    rows = int(counts.sum())
    batch_of_row = pa.array(np.repeat(np.arange(len(counts), dtype=np.int64), counts), pa.int64())
    batches = [(r, b) for r in records for b in r.batches]

    def per_batch(values: list[Any], typ: pa.DataType) -> pa.Array[Any]:
        return pa.array(values, typ).take(batch_of_row)

    starts = np.cumsum(per_record) - per_record
    sub = np.arange(rows, dtype=np.int64) - np.repeat(starts, per_record)
    return {
        "observed_timestamp": per_batch(
            [b.observed_us or r.meta.arrival_us for r, b in batches], TIMESTAMP
        ),
        "source": per_batch([b.source or None for _, b in batches], pa.string()),
        "log_group": per_batch([b.log_group or None for _, b in batches], pa.string()),
        "log_stream": per_batch([b.log_stream or None for _, b in batches], pa.string()),
        "kinesis_shard_id": per_batch([r.meta.shard_id for r, _ in batches], pa.string()),
        "kinesis_sequence_number": per_batch(
            [str(r.meta.sequence_number) for r, _ in batches], pa.string()
        ),
        "kinesis_sub_sequence": pa.array(sub.astype(np.int32), pa.int32()),
    }


def _first_present(
    objs: list[dict[str, Any]], names: tuple[str, ...], *, pop: bool
) -> tuple[list[Any], list[int]]:
    """Per row, the value of the first of ``names`` present (``_MISSING`` if none) and its
    index in ``names``. Later names visit only the rows still missing, so the common case
    (the first or second name present) costs one or two C-level passes."""
    values: list[Any] = [_MISSING] * len(objs)
    which = [-1] * len(objs)
    todo = list(range(len(objs)))
    for k, name in enumerate(names):
        if not todo:
            break
        subset = objs if len(todo) == len(objs) else [objs[i] for i in todo]
        verb = "pop" if pop else "get"
        got = list(map(methodcaller(verb, name, _MISSING), subset))
        if pop and "." in name:  # ECS style nested key, as ColumnBuilder's _pop_first
            got = [
                _pop_nested(o, name) if g is _MISSING else g
                for o, g in zip(subset, got, strict=True)
            ]
        still = []
        for i, g in zip(todo, got, strict=True):
            if g is _MISSING:
                still.append(i)
            else:
                values[i] = g
                which[i] = k
        todo = still
    return values, which


def _pop_nested(obj: dict[str, Any], name: str) -> Any:
    head, _, tail = name.partition(".")
    inner = obj.get(head)
    if isinstance(inner, dict) and tail in inner:
        value = inner.pop(tail)
        if not inner:
            del obj[head]
        return value
    return _MISSING


def _pop_first(objs: list[dict[str, Any]], names: tuple[str, ...]) -> list[Any]:
    values, _ = _first_present(objs, names, pop=True)
    return [None if v is _MISSING else v for v in values]


def _texts(values: list[Any]) -> list[str | None]:
    return [v if type(v) is str or v is None else orjson.dumps(v).decode() for v in values]


def _event_times(objs: list[dict[str, Any]], arrival: list[int], m: FieldMapping) -> list[int]:
    """Event time per row; the field is removed only when it parsed inside the window."""
    values, which = _first_present(objs, m.time, pop=False)
    parsed = list(map(_time_us, values))
    out: list[int] = []
    for obj, ts, at, k in zip(objs, parsed, arrival, which, strict=True):
        if ts is not None and at - m.max_past_us <= ts <= at + m.max_future_us:
            del obj[m.time[k]]
            out.append(ts)
        else:
            out.append(at)
    return out


def _time_us(value: Any) -> int | None:
    if value is _MISSING:
        return None
    if type(value) is str and ":" in value:
        # float() never accepts ':', so parse_time_us would go straight to fromisoformat.
        try:
            parsed = _fromiso(value.strip())
        except ValueError:
            return None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return (parsed - _EPOCH) // _ONE_US
    return parse_time_us(value)


def _severities(
    objs: list[dict[str, Any]], m: FieldMapping
) -> tuple[list[str | None], list[int | None]]:
    raw = _pop_first(objs, m.severity)
    cache: dict[str, tuple[str | None, int | None]] = {}

    def one(value: Any) -> tuple[str | None, int | None]:
        if type(value) is str:  # few distinct level names: parse each once
            hit = cache.get(value)
            if hit is None:
                hit = cache[value] = severity_of(value)
            return hit
        return severity_of(value)

    pairs = list(map(one, raw))
    texts = [p[0] for p in pairs]
    numbers = [p[1] for p in pairs]
    overrides = list(map(methodcaller("get", "severity_number"), objs))
    for i, value in enumerate(overrides):
        if value is not None and severity_number_override(value):
            numbers[i] = objs[i].pop("severity_number")
    return texts, numbers


def _attributes(dumped: list[bytes]) -> pa.Array[Any]:
    text: Any = pa.array(dumped, pa.binary()).cast(pa.string())
    empty = pc.equal(text, pa.scalar("{}", pa.string()))
    out: pa.Array[Any] = pc.if_else(empty, pa.scalar(None, pa.string()), text)
    return out
