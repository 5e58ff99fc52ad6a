"""Chunks of whole records mapped by the C scanner (``_scan.map_lines``), pure.

The scanner maps the lines written the way orjson writes JSON and leaves the others; the
lines left (and those whose time did not parse inside the window, so the key must stay in
``attributes``) go through the Python path (``columns``) one by one, and a record holding a
line that is not a JSON object goes there whole, to be named bad. Both paths give ``ColumnBuilder``'s rows; tests/test_mapping.py
holds the three to each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from service.decode.types import DecodedRecord
from service.scanner import SCAN
from service.schema import SEVERITY_NUMBERS, TIMESTAMP
from service.sink.event_time import number_times_us, string_times_us
from service.sink.rules import (
    ATTRIBUTES,
    GROUPS,
    HOST,
    MESSAGE,
    SERVICE,
    SEVERITY,
    SEVERITY_NUMBER,
    SPAN_ID,
    TIME,
    TRACE_ID,
    FieldMapping,
    default_service,
)

# The scanner's group table is the rules' own, or the native path is refused at import.
if SCAN is not None and (SCAN.GROUPS, SCAN.SEVERITY_NUMBER) != (GROUPS, SEVERITY_NUMBER):
    raise ImportError(f"service/_scan.c groups {SCAN.GROUPS} are not rules.GROUPS {GROUPS}")

# Value kinds of the scanner (service/_scan.c): 0 is absent or null.
STRING, INT, FLOAT = 1, 2, 3
# The scanner's columns: one per group, then the attributes.
SCANNED = (*GROUPS, ATTRIBUTES)


def name_groups(mapping: FieldMapping) -> tuple[tuple[bytes, ...], ...]:
    """The mapping's names as the scanner takes them, in ``GROUPS`` order."""
    return tuple(tuple(name.encode() for name in names) for names in mapping.groups())


def supports(mapping: FieldMapping) -> bool:
    """Whether the scanner can map this flush: it is switched on (``service.scanner``), and
    extra typed columns take the Python path (their values are checked one by one)."""
    return (
        SCAN is not None
        and not mapping.extra_columns
        and all(len(g) <= 16 for g in name_groups(mapping))
    )


@dataclass
class NativeChunk:
    """Whole records whose line counts are right, with what their rows repeat."""

    records: list[DecodedRecord] = field(default_factory=list)
    parts: list[bytes | None] = field(default_factory=list)  # None: let go (scan_chunk)
    record_lines: list[int] = field(default_factory=list)
    batch_lines: list[int] = field(default_factory=list)
    batch_default: list[str] = field(default_factory=list)
    lines: int = 0
    bytes: int = 0

    def add(self, record: DecodedRecord) -> None:
        """Take ``record``, whose batches hold the lines they declare (``miscounted``)."""
        total = 0
        for batch in record.batches:
            if batch.count:
                self.parts.append(batch.payload)
                self.bytes += len(batch.payload)
                self.batch_lines.append(batch.count)
                self.batch_default.append(default_service(batch))
                total += batch.count
        self.records.append(record)
        self.record_lines.append(total)
        self.lines += total


def miscounted(records: Sequence[DecodedRecord]) -> list[bool]:
    """Per record: whether one of its batches does not hold the lines it declares
    (``rules.line_count_fault``), every payload's newlines counted in one call of the
    scanner (memchr), not one ``bytes.count`` pass per batch."""
    assert SCAN is not None, "supports() is False without the scanner"
    batches = [b for r in records for b in r.batches]
    newlines = np.frombuffer(SCAN.newlines([b.payload for b in batches]), dtype=np.int64)
    declared = np.fromiter((b.count for b in batches), dtype=np.int64, count=len(batches))
    held = np.where(declared > 0, newlines + 1, 0)
    of_batch = np.repeat(np.arange(len(records)), [len(r.batches) for r in records])
    wrong = np.zeros(len(records), dtype=bool)
    wrong[of_batch[held != declared]] = True
    return wrong.tolist()


@dataclass(frozen=True)
class Scanned:
    """One chunk's rows as the scanner and Arrow made them; ``taken`` marks the rows that
    are right as they are (the rest belong to records the Python path must redo)."""

    batch: pa.RecordBatch
    taken: np.ndarray[Any, Any]
    record_of_row: np.ndarray[Any, Any]
    arrival: np.ndarray[Any, Any]  # the record's arrival time, per row


def scan_chunk(
    chunk: NativeChunk, mapping: FieldMapping, groups: Any, *, release: bool = False
) -> Scanned:
    """The chunk's rows; ``release``: each part whose lines all mapped becomes None in
    ``chunk.parts`` as the scanner goes (only the parts of lines left to Python stay)."""
    n = chunk.lines
    assert SCAN is not None, "supports() is False without the scanner"
    mapped, sevnum, sevnum_ok, scanned = SCAN.map_lines(chunk.parts, n, groups, release)
    cols = dict(zip(SCANNED, scanned, strict=True))
    taken = np.frombuffer(mapped, dtype=np.uint8).astype(bool)
    record_of_row = np.repeat(
        np.arange(len(chunk.records), dtype=np.int64), np.asarray(chunk.record_lines, np.int64)
    )
    arrival = np.asarray([r.meta.arrival_us for r in chunk.records], np.int64)[record_of_row]
    ts, time_ok = _times(cols[TIME], arrival, mapping)
    taken &= time_ok
    sev_text, sev_num = _severity(cols[SEVERITY], sevnum, sevnum_ok)
    default = pa.array(chunk.batch_default, pa.string()).take(
        np.repeat(np.arange(len(chunk.batch_lines)), np.asarray(chunk.batch_lines, np.int64))
    )
    batch = pa.record_batch(
        {
            "timestamp": pa.array(ts, TIMESTAMP),
            "severity_text": sev_text,
            "severity_number": sev_num,
            "host": _text(cols[HOST]),
            "message": _text(cols[MESSAGE]),
            "trace_id": _text(cols[TRACE_ID]),
            "span_id": _text(cols[SPAN_ID]),
            "attributes": _text(cols[ATTRIBUTES]),
            "service": _service(cols[SERVICE], default),
        }
    )
    return Scanned(batch, taken, record_of_row, arrival)


def left_lines(chunk: NativeChunk, rows: np.ndarray[Any, Any]) -> tuple[list[bytes], list[str]]:
    """Text and batch default service (service, else log group, else unknown) of the given
    rows (ascending), splitting only the batches that hold them."""
    starts = np.cumsum(np.asarray([0, *chunk.batch_lines], np.int64))
    batch_of = (np.searchsorted(starts, rows, side="right") - 1).tolist()
    texts: list[bytes] = []
    split: dict[int, list[bytes]] = {}
    for row, b in zip(rows.tolist(), batch_of, strict=True):
        if b not in split:
            part = chunk.parts[b]
            assert part is not None, "a part with a line left to Python is never let go"
            split[b] = part.split(b"\n")
        texts.append(split[b][row - int(starts[b])])
    return texts, [chunk.batch_default[b] for b in batch_of]


def _kinds(column: tuple[bytes, bytes, bytes]) -> np.ndarray[Any, Any]:
    return np.frombuffer(column[0], dtype=np.uint8)


def _text(column: tuple[bytes, bytes, bytes], valid: Any = None) -> pa.Array[Any]:
    kind, offsets, data = column
    if valid is None:
        valid = _kinds(column) != 0
    bitmap = None if valid.all() else pa.py_buffer(np.packbits(valid, bitorder="little").tobytes())
    return pa.Array.from_buffers(
        pa.string(), len(kind), [bitmap, pa.py_buffer(offsets), pa.py_buffer(data)]
    )


def _times(
    column: tuple[bytes, bytes, bytes], arrival: np.ndarray[Any, Any], m: FieldMapping
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """(event time, row keeps its time key out of attributes rightly?) per row."""
    kind = _kinds(column)
    present = kind != 0
    ts = arrival.copy()
    if not present.any():
        return ts, np.ones(len(kind), dtype=bool)
    text = _text(column, np.ones(len(kind), dtype=bool))
    # Zoned RFC 3339 strings (nearly every string time) are read by the scanner; the other
    # strings and the numbers go through event_time, which reads them as parse_time_us does.
    assert SCAN is not None, "supports() is False without the scanner"
    zoned_us, zoned_ok = SCAN.zoned_times(*column)
    us = np.frombuffer(zoned_us, dtype=np.int64).copy()
    parsed = np.frombuffer(zoned_ok, dtype=np.uint8).astype(bool)
    for wanted, parse in (
        ((kind == STRING) & ~parsed, string_times_us),
        (kind >= INT, number_times_us),
    ):
        where = np.flatnonzero(wanted)
        if len(where):
            us[where], parsed[where] = parse(text.take(where))
    inside = parsed & m.in_window(us, arrival)
    ts[inside] = us[inside]
    return ts, inside | ~present


def _severity(
    column: tuple[bytes, bytes, bytes], sevnum: bytes, sevnum_ok: bytes
) -> tuple[pa.Array[Any], pa.Array[Any]]:
    """``severity_of`` per row (names looked up once per distinct value), then the override."""
    kind = _kinds(column)
    text = _text(column)
    number = np.zeros(len(kind), dtype=np.int32)
    known = np.zeros(len(kind), dtype=bool)
    if (kind != 0).any():
        encoded: Any = pc.dictionary_encode(text)
        names = encoded.dictionary.to_pylist()
        looked = [SEVERITY_NUMBERS.get(v.strip().lower()) for v in names]
        lut = np.asarray([v or 0 for v in looked], dtype=np.int32)
        lut_ok = np.asarray([v is not None for v in looked], dtype=bool)
        index = encoded.indices.fill_null(0).to_numpy(zero_copy_only=False)
        if len(lut):
            number, known = lut[index], lut_ok[index] & (kind != 0)
        is_int = np.flatnonzero(kind == INT)
        if len(is_int):  # ints 1-24 are OpenTelemetry numbers, not text
            value = pc.cast(text.take(is_int), pa.int64()).to_numpy(zero_copy_only=False)
            otel = is_int[(value >= 1) & (value <= 24)]
            if len(otel):
                number[otel] = value[(value >= 1) & (value <= 24)]
                known[otel] = True
                valid = kind != 0
                valid[otel] = False
                text = _text(column, valid)
    override = np.frombuffer(sevnum_ok, dtype=np.uint8).astype(bool)
    if override.any():
        number = np.where(override, np.frombuffer(sevnum, dtype=np.int32), number)
        known |= override
    return text, pa.array(number, pa.int32(), mask=~known)


def _service(column: tuple[bytes, bytes, bytes], default: pa.Array[Any]) -> pa.Array[Any]:
    """The line's service unless absent, null or empty (``text or default``)."""
    offsets = np.frombuffer(column[1], dtype=np.int32)
    keep = (_kinds(column) != 0) & (np.diff(offsets) > 0)
    if keep.all():
        return _text(column)
    if not keep.any():
        return default
    out: pa.Array[Any] = pc.if_else(pa.array(keep), _text(column), default)
    return out
