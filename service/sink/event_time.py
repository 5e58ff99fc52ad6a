"""Event times in bulk: ``rules.parse_time_us`` over a column of raw values (pure).

Zoned RFC 3339 strings go through Arrow's cast and epoch numbers through numpy; only the
values neither reads exactly like ``parse_time_us`` (naive or odd strings, nanosecond
epochs, non-numbers) are parsed one by one. ``tests/test_mapping.py`` holds every format to
the specification.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from itertools import compress, repeat
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from service.sink.rules import MICROS_BELOW, epochs_to_us, parse_time_us

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)
_fromiso = datetime.fromisoformat


# RFC 3339 with a zone, as Arrow's cast and ``datetime.fromisoformat`` both read it (year 0
# and fractions past µs excluded); Arrow refuses impossible dates, then the chunk's strings
# take the per-value path.
_ZONED = (
    r"^(?:\d{3}[1-9]|\d{2}[1-9]0|\d[1-9]00|[1-9]000)-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?"
    r"(?:Z|[+-](?:[01]\d|2[0-3]):[0-5]\d)$"
)
_UTC_US = pa.timestamp("us", tz="UTC")


def times_us(values: list[Any]) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """``parse_time_us`` of each value as (µs, parsed?) arrays, by type in bulk: zoned
    RFC 3339 strings through Arrow, epoch numbers through numpy, the rest one by one."""
    n = len(values)
    out = np.zeros(n, dtype=np.int64)
    ok = np.zeros(n, dtype=bool)
    types = list(map(type, values))
    is_str = np.fromiter(map(operator.is_, types, repeat(str)), dtype=bool, count=n)
    rest = ~is_str
    if is_str.any():
        where = np.flatnonzero(is_str)
        text = pa.array(list(compress(values, is_str.tolist())), pa.string())
        out[where], ok[where] = string_times_us(text)
    for cls in (int, float):
        is_num = np.fromiter(map(operator.is_, types, repeat(cls)), dtype=bool, count=n)
        if is_num.any():
            number = np.asarray(list(compress(values, is_num.tolist())), dtype=np.float64)
            small = number < MICROS_BELOW  # larger: nanoseconds, kept on the exact per-value path
            where = np.flatnonzero(is_num)
            out[where[small]] = epochs_to_us(number[small])
            ok[where[small]] = number[small] >= 0
            rest[where[small]] = False
    _one_by_one(values, np.flatnonzero(rest).tolist(), out, ok)
    return out, ok


def string_times_us(
    text: pa.Array[Any],
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """``parse_time_us`` of each string of ``text`` (no nulls) as (µs, parsed?) arrays."""
    n = len(text)
    out = np.zeros(n, dtype=np.int64)
    ok = np.zeros(n, dtype=bool)
    zoned = pc.match_substring_regex(text, _ZONED).to_numpy(zero_copy_only=False)
    rest = ~zoned
    try:
        cast = pc.cast(text.filter(zoned), _UTC_US).cast(pa.int64())
        out[zoned] = cast.to_numpy(zero_copy_only=False)
        ok[zoned] = True
    except pa.ArrowInvalid:  # an impossible date: every string takes the slow path
        rest[:] = True
    where = np.flatnonzero(rest)
    if len(where):
        got_out, got_ok = np.zeros(len(where), np.int64), np.zeros(len(where), bool)
        _one_by_one(text.take(where).to_pylist(), range(len(where)), got_out, got_ok)
        out[where], ok[where] = got_out, got_ok
    return out, ok


def number_times_us(
    text: pa.Array[Any],
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """``parse_time_us`` of JSON number literals (``text``, no nulls) as (µs, parsed?)."""
    number = pc.cast(text, pa.float64()).to_numpy(zero_copy_only=False)
    out = np.zeros(len(number), dtype=np.int64)
    small = number < MICROS_BELOW
    out[small] = epochs_to_us(number[small])
    ok = small & (number >= 0)
    large = np.flatnonzero(~small)
    if len(large):  # nanoseconds: exact, from the literal itself
        values = [orjson.loads(str(v)) for v in text.take(large).to_pylist()]
        got_out, got_ok = np.zeros(len(large), np.int64), np.zeros(len(large), bool)
        _one_by_one(values, range(len(large)), got_out, got_ok)
        out[large], ok[large] = got_out, got_ok
    return out, ok


def _one_by_one(
    values: Sequence[Any],
    indices: Iterable[int],
    out: np.ndarray[Any, Any],
    ok: np.ndarray[Any, Any],
) -> None:
    for i in indices:
        got = _time_us(values[i])
        if got is not None and -(2**63) <= got < 2**63:
            out[i] = got
            ok[i] = True
        # else: unparseable, or far outside any window


def _time_us(value: Any) -> int | None:
    if value is None:
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
