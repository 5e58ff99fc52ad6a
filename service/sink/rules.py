"""The mapping rules (DESIGN §4), in one place for every path that applies them (pure).

The reference path (``mapping.ColumnBuilder``), the columnar path (``columns``) and the
native path (``native`` and ``service/_scan.c``) all read from here: the named field groups
in pop order, the severity lookup, epoch and time parsing, the event-time window, the
default service, the line-count check, the extra typed columns and the output schema. A
fast path never re-types a constant of this module by position (STYLE rule 16).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from service.decode.types import DecodedRecord, LineBatch
from service.schema import SEVERITY_NUMBERS, TIMESTAMP, table_schema

# The mapped groups, in the order their keys are popped from a line: a key taken by one
# group is gone for the next. ``FieldMapping`` has one field per name; the C scanner exports
# the same names (``_scan.GROUPS``), checked when the native path is imported.
TIME, SEVERITY, SERVICE, HOST, MESSAGE, TRACE_ID, SPAN_ID = GROUPS = (
    "time",
    "severity",
    "service",
    "host",
    "message",
    "trace_id",
    "span_id",
)
# An int32 under this key overrides the severity number; read right after the severity pop.
SEVERITY_NUMBER = "severity_number"
# What each line has a key chosen for, in pop order (the columnar path's key plans).
PLAN_SLOTS: tuple[str, ...] = (TIME, SEVERITY, SEVERITY_NUMBER, *GROUPS[2:])
# The JSON text of every key no column took.
ATTRIBUTES = "attributes"
UNKNOWN_SERVICE = "unknown"

TIME_FIELDS = ("timestamp", "@timestamp", "time", "ts", "date")
SEVERITY_FIELDS = ("level", "severity", "log.level", "severity_text", "loglevel")
# "x.name" before "x": ECS (Filebeat, Elastic Agent) sends host and service as objects
# ({"host": {"name": ...}}); a dotted name matches only inside an object, so a string
# "host" or "service" is still taken as it is (and stays on the native path).
SERVICE_FIELDS = ("service.name", "service", "app", "application")
MESSAGE_FIELDS = ("message", "msg", "log", "body")
HOST_FIELDS = ("host.name", "host", "hostname")
TRACE_FIELDS = ("trace_id", "traceId", "trace.id")
SPAN_FIELDS = ("span_id", "spanId", "span.id")


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

    def names(self, group: str) -> tuple[str, ...]:
        """The source names of one of ``GROUPS``."""
        names: tuple[str, ...] = getattr(self, group)
        return names

    def groups(self) -> tuple[tuple[str, ...], ...]:
        """The name groups in ``GROUPS`` (pop) order."""
        return tuple(self.names(g) for g in GROUPS)

    def in_window(self, ts: Any, arrival_us: Any) -> Any:
        """Whether an event time is inside the window around arrival: ints or numpy arrays."""
        return (ts >= arrival_us - self.max_past_us) & (ts <= arrival_us + self.max_future_us)


if set(GROUPS) - {f.name for f in fields(FieldMapping)}:  # pragma: no cover - a typo here
    raise ImportError("FieldMapping needs a field for every name of GROUPS")


# ---- lines ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Unmapped:
    """What a flush could not map, reported by itself so the rest lands: one line (``line``
    is its position in the record, the ``kinesis_sub_sequence`` it would have had; ``data``
    its bytes), or a whole record whose batches do not hold the lines they declare
    (``line`` None; ``data`` the record's raw bytes)."""

    record: DecodedRecord
    line: int | None
    reason: str
    data: bytes


# orjson reads objects nested up to 1024 deep but writes only up to 254: a line whose
# mapped values or attributes it cannot write back is unmapped by itself with this reason.
UNWRITABLE = "nested too deeply to write back as JSON"


def parse_line(line: bytes) -> tuple[dict[str, Any] | None, str]:
    """The line as a JSON object, or (None, why it is not one)."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return None, f"not JSON: {exc}"
    if not isinstance(obj, dict):
        return None, "not a JSON object"
    return obj, ""


def record_raw(record: DecodedRecord) -> bytes:
    """The record as read, for a dead letter (DESIGN §10: replayable); the decoded payload
    only when the caller kept no raw bytes (pure uses of the sink)."""
    return record.raw or b"\n".join(b.payload for b in record.batches)


def line_count_fault(batch: LineBatch) -> str | None:
    """Why a batch's payload does not hold the lines it declares, or None when it does."""
    held = batch.payload.count(b"\n") + 1 if batch.count else 0
    if held == batch.count:
        return None
    return f"batch declares {batch.count} lines but holds {held}"


def default_service(batch: LineBatch) -> str:
    """The service of a line that names none (or an empty one): the batch's service, else
    its log group, else ``UNKNOWN_SERVICE``."""
    return batch.service or batch.log_group or UNKNOWN_SERVICE


def output_schema(extra: tuple[pa.Field[Any], ...]) -> pa.Schema:
    """What every path builds: the file schema, then the ``service`` the partitions read."""
    return table_schema(extra).append(pa.field("service", pa.string(), nullable=False))


def pop_first(obj: dict[str, Any], names: tuple[str, ...]) -> Any:
    """The value of the first present name, removed from ``obj`` (None if none is). A dotted
    name also matches inside a nested object (ECS style ``{"log": {"level": ...}}``)."""
    for name in names:
        if name in obj:
            return obj.pop(name)
        if "." in name:
            head, _, tail = name.partition(".")
            inner = obj.get(head)
            if isinstance(inner, dict) and tail in inner:
                value = inner.pop(tail)
                if not inner:
                    del obj[head]
                return value
    return None


def text_of(value: Any) -> str | None:
    """A column's text: a string as it is, anything else as its JSON."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


# ---- time ----------------------------------------------------------------------------

# An epoch number below SECONDS_BELOW counts seconds, below MILLIS_BELOW milliseconds, below
# MICROS_BELOW microseconds, and nanoseconds above.
SECONDS_BELOW = 1e11
MILLIS_BELOW = 1e14
MICROS_BELOW = 1e17


def epoch_to_us(number: float) -> int | None:
    """µs since the epoch of an epoch number in s, ms, µs or ns; None before 1970 or not finite."""
    if math.isnan(number) or math.isinf(number) or number < 0:  # before 1970 is not a log time
        return None
    if number < MICROS_BELOW:
        return int(epochs_to_us(number))
    return int(number // 1000)


def epochs_to_us(number: Any) -> Any:
    """``epoch_to_us`` of a float or numpy array of finite numbers below ``MICROS_BELOW``
    (negatives give 0 here: callers mark them unparsed)."""
    number = np.maximum(number, 0.0)  # negatives never overflow the products
    us = np.where(
        number < SECONDS_BELOW,
        np.rint(number * 1e6),
        np.where(number < MILLIS_BELOW, np.rint(number * 1e3), np.trunc(number)),
    )
    return us.astype(np.int64)


def parse_time_us(value: Any) -> int | None:
    """Event time in µs since the epoch from RFC 3339 or epoch s/ms/µs/ns; None if unparseable."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value.strip()
        if text.isascii() and text.isdigit():
            return parse_time_us(int(text))
        try:
            return epoch_to_us(float(text))
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
    if isinstance(value, int) and value >= MICROS_BELOW:
        # Nanoseconds in exact integer arithmetic: a float near 1.7e18 is 256 ns coarse, so
        # OTLP's timeUnixNano would often land 1 µs early.
        return value // 1000
    if isinstance(value, int | float):
        return epoch_to_us(float(value))
    return None


def take_event_time(obj: dict[str, Any], arrival_us: int, mapping: FieldMapping) -> int:
    """The line's event time from the first present time name, removed from ``obj`` only
    when it parsed inside the window; otherwise the arrival time (the original stays)."""
    for name in mapping.time:
        if name in obj:
            ts = parse_time_us(obj[name])
            if ts is not None and mapping.in_window(ts, arrival_us):
                del obj[name]
                return ts
            return arrival_us
    return arrival_us


# ---- severity ------------------------------------------------------------------------


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


# ---- extra typed columns -------------------------------------------------------------

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


# What a line's batch says of all its lines (source, default service, CloudWatch group and
# stream, receive time, trace context): a dead-lettered line keeps it in its entry's
# ``batch``, so a redrive lands the columns the line would have had the first time.
BATCH_FIELDS = ("source", "service", "log_group", "log_stream", "observed_us", "traceparent")


def line_batch(u: Unmapped) -> LineBatch | None:
    """The batch that holds the unmapped line ``u`` (None for a whole record)."""
    if u.line is None:
        return None
    line = u.line
    for batch in u.record.batches:
        if line < batch.count:
            return batch
        line -= batch.count
    return None


def batch_metadata(batch: LineBatch) -> dict[str, Any]:
    """The BATCH_FIELDS of ``batch`` that are set (what a dead-lettered line keeps)."""
    return {n: getattr(batch, n) for n in BATCH_FIELDS if getattr(batch, n)}
