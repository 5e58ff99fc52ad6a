"""Field mapping: decoded JSON lines -> canonical columns (DESIGN §4), deterministic and lossless.

Every field that is not mapped to a column is kept in ``attributes`` (JSON text), so a line
can be rebuilt from its row. A value that cannot be mapped (a time that does not parse, a
time outside the window) stays in ``attributes`` and the column falls back deterministically.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import pyarrow as pa

from service.decode.types import DecodedRecord, LineBatch, RecordMeta
from service.schema import SEVERITY_NUMBERS, TIMESTAMP, extra_sources, table_schema

TIME_FIELDS = ("timestamp", "@timestamp", "time", "ts", "date")
SEVERITY_FIELDS = ("level", "severity", "log.level", "severity_text", "loglevel")
SERVICE_FIELDS = ("service", "service.name", "app", "application")
MESSAGE_FIELDS = ("message", "msg", "log", "body")
HOST_FIELDS = ("host", "hostname", "host.name")
TRACE_FIELDS = ("trace_id", "traceId", "trace.id")
SPAN_FIELDS = ("span_id", "spanId", "span.id")
UNKNOWN_SERVICE = "unknown"


@dataclass(frozen=True, slots=True)
class FieldMapping:
    """Which source fields feed which column (first present wins) and the event-time window."""

    time: tuple[str, ...] = TIME_FIELDS
    severity: tuple[str, ...] = SEVERITY_FIELDS
    service: tuple[str, ...] = SERVICE_FIELDS
    message: tuple[str, ...] = MESSAGE_FIELDS
    host: tuple[str, ...] = HOST_FIELDS
    trace_id: tuple[str, ...] = TRACE_FIELDS
    span_id: tuple[str, ...] = SPAN_FIELDS
    max_past_us: int = 7 * 86400 * 10**6
    max_future_us: int = 3600 * 10**6
    # Typed columns after the canonical ones (``schema.extra_fields``), each filled from the
    # first present of its name and aliases among the keys no canonical column took.
    extra_columns: tuple[pa.Field[Any], ...] = field(default=())

    def groups(self) -> tuple[tuple[str, ...], ...]:
        """The name groups in ``ColumnBuilder``'s pop order: time, severity, service, host,
        message, trace_id, span_id."""
        return (
            self.time,
            self.severity,
            self.service,
            self.host,
            self.message,
            self.trace_id,
            self.span_id,
        )


class BadLine(ValueError):
    """A decoder produced a line that is not a JSON object (the record is dead-lettered)."""


def _pop_first(obj: dict[str, Any], names: tuple[str, ...]) -> Any:
    for name in names:
        if name in obj:
            return obj.pop(name)
        if "." in name:  # ECS style nested key: {"log": {"level": ...}}
            head, _, tail = name.partition(".")
            inner = obj.get(head)
            if isinstance(inner, dict) and tail in inner:
                value = inner.pop(tail)
                if not inner:
                    del obj[head]
                return value
    return None


def parse_time_us(value: Any) -> int | None:
    """Event time in µs since the epoch from RFC 3339 or epoch s/ms/µs/ns; None if unparseable."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value.strip()
        try:
            return _epoch_to_us(float(text))
        except ValueError:
            pass
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            return None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        delta = parsed - datetime(1970, 1, 1, tzinfo=UTC)
        return (delta.days * 86400 + delta.seconds) * 10**6 + delta.microseconds
    if isinstance(value, int | float):
        return _epoch_to_us(float(value))
    return None


def _epoch_to_us(number: float) -> int | None:
    if math.isnan(number) or math.isinf(number) or number < 0:  # before 1970 is not a log time
        return None
    if number < 1e11:
        return round(number * 1e6)
    if number < 1e14:
        return round(number * 1e3)
    if number < 1e17:
        return int(number)
    return int(number // 1000)


def severity_of(value: Any) -> tuple[str | None, int | None]:
    """(severity_text, severity_number) per the OpenTelemetry mapping."""
    if value is None:
        return None, None
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 24:
        return None, value
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    return text, SEVERITY_NUMBERS.get(text.strip().lower())


def severity_number_override(value: Any) -> bool:
    """Whether a ``severity_number`` field replaces the mapped number: an int32, not a bool
    (anything else stays in ``attributes`` so one odd line never fails a batch)."""
    return type(value) is int and -(2**31) <= value < 2**31


# What a value that does not fit an extra column's type gives: null, and the key is kept.
NOFIT: Any = object()
_FLOAT32 = struct.Struct("<f")


def _fit_string(value: Any) -> Any:
    return value if value is None or type(value) is str else NOFIT


def _fit_bool(value: Any) -> Any:
    return value if value is None or type(value) is bool else NOFIT


def _fit_int(bits: int) -> Callable[[Any], Any]:
    low, high = -(2 ** (bits - 1)), 2 ** (bits - 1)

    def fit(value: Any) -> Any:
        if value is None or (type(value) is int and low <= value < high):
            return value
        return NOFIT

    return fit


def _fit_double(value: Any) -> Any:
    if value is None:
        return None
    if type(value) is not int and type(value) is not float:  # bool is not a number here
        return NOFIT
    try:
        number = float(value)
    except OverflowError:
        return NOFIT
    return number if math.isfinite(number) else NOFIT


def _fit_float(value: Any) -> Any:
    number = _fit_double(value)
    if number is None or number is NOFIT:
        return number
    try:  # rounded to float32 here, so Arrow stores exactly this value
        rounded: float = _FLOAT32.unpack(_FLOAT32.pack(number))[0]
    except OverflowError:
        return NOFIT
    return rounded


def _fit_timestamp(value: Any) -> Any:
    if value is None:
        return None
    us = parse_time_us(value)
    return us if us is not None and us < 2**63 else NOFIT


_FITS: dict[pa.DataType, Callable[[Any], Any]] = {
    pa.string(): _fit_string,
    pa.int32(): _fit_int(32),
    pa.int64(): _fit_int(64),
    pa.float32(): _fit_float,
    pa.float64(): _fit_double,
    pa.bool_(): _fit_bool,
    TIMESTAMP: _fit_timestamp,
}


def extra_fit(column: pa.Field[Any]) -> Callable[[Any], Any]:
    """For an extra column: value -> the column's value (None for null), or NOFIT when the
    value does not fit the type (a type conflict, an overflow, a bool for a number)."""
    return _FITS[column.type]


def take_extra(obj: dict[str, Any], sources: tuple[str, ...], fit: Callable[[Any], Any]) -> Any:
    """An extra column's value from the first present source key, removed when it fits;
    a value that does not fit stays in ``obj`` (so in ``attributes``) and gives None."""
    for name in sources:
        if name in obj:
            value = fit(obj[name])
            if value is NOFIT:
                return None
            del obj[name]
            return value
    return None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


class ColumnBuilder:
    """Accumulates rows column by column; ``table()`` returns canonical columns + ``service``."""

    def __init__(self, mapping: FieldMapping) -> None:
        self.mapping = mapping
        self.extras = [(extra_sources(f), extra_fit(f)) for f in mapping.extra_columns]
        schema = table_schema(mapping.extra_columns)
        self.cols: dict[str, list[Any]] = {name: [] for name in schema.names}
        self.cols["service"] = []

    def __len__(self) -> int:
        return len(self.cols["service"])

    def add_record(self, record: DecodedRecord) -> None:
        """Append every line of ``record``; raise BadLine (appending nothing) on a bad line."""
        rows: list[tuple[Any, ...]] = []
        sub = 0
        meta = record.meta
        for batch in record.batches:
            observed = batch.observed_us or meta.arrival_us
            lines = batch.payload.split(b"\n") if batch.count else []
            if len(lines) != batch.count:
                raise BadLine(f"batch declares {batch.count} lines but holds {len(lines)}")
            for line in lines:  # per-line loop: measured in benchmarks/writer.py
                rows.append(self._row(line, batch, meta, observed, sub))
                sub += 1
        for row in rows:
            for name, value in zip(self.cols, row, strict=True):
                self.cols[name].append(value)

    def _row(
        self, line: bytes, batch: LineBatch, meta: RecordMeta, observed: int, sub: int
    ) -> tuple[Any, ...]:
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise BadLine(f"line {sub} is not JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise BadLine(f"line {sub} is not a JSON object")
        m = self.mapping
        ts = self._event_time(obj, meta.arrival_us)
        severity = _pop_first(obj, m.severity)
        sev_text, sev_num = severity_of(severity)
        if severity_number_override(obj.get("severity_number")):
            sev_num = obj.pop("severity_number")
        service = _text(_pop_first(obj, m.service)) or batch.service or batch.log_group
        host = _text(_pop_first(obj, m.host))
        message = _text(_pop_first(obj, m.message))
        trace_id = _text(_pop_first(obj, m.trace_id))
        span_id = _text(_pop_first(obj, m.span_id))
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
            service or UNKNOWN_SERVICE,
        )

    def _event_time(self, obj: dict[str, Any], arrival_us: int) -> int:
        m = self.mapping
        for name in m.time:
            if name in obj:
                ts = parse_time_us(obj[name])
                if (
                    ts is not None
                    and arrival_us - m.max_past_us <= ts <= arrival_us + m.max_future_us
                ):
                    del obj[name]
                    return ts
                return arrival_us  # unparseable or outside the window: original kept
        return arrival_us

    def table(self) -> pa.Table:
        """The accumulated rows as Arrow (canonical schema + a ``service`` string column)."""
        schema = table_schema(self.mapping.extra_columns)
        schema = schema.append(pa.field("service", pa.string(), nullable=False))
        return pa.table(self.cols, schema=schema)


def build_table(
    records: Sequence[DecodedRecord], mapping: FieldMapping
) -> tuple[pa.Table, list[tuple[DecodedRecord, str]]]:
    """Rows of every good record, and (record, reason) for each record with a bad line.

    The columnar builder (``service.sink.columns``) gives exactly the rows ``ColumnBuilder``
    gives (tests/test_mapping*.py hold them to it); ``ColumnBuilder`` is the specification.
    """
    from service.sink.columns import build_columns  # noqa: PLC0415 - columns imports this module

    return build_columns(records, mapping)


def build_table_reference(
    records: Sequence[DecodedRecord], mapping: FieldMapping
) -> tuple[pa.Table, list[tuple[DecodedRecord, str]]]:
    """``build_table`` one line at a time: the readable specification of the mapping."""
    builder = ColumnBuilder(mapping)
    bad: list[tuple[DecodedRecord, str]] = []
    for record in records:
        try:
            builder.add_record(record)
        except BadLine as exc:
            bad.append((record, str(exc)))
    return builder.table(), bad
