"""What every parser returns, and the vectorised pieces they share: regex extraction, typing, errors.

Regexes run in RE2 (Arrow's ``extract_regex``): no lookarounds and no backreferences, so every
pattern here consumes its delimiters instead of asserting them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache
from typing import Any

import numpy as np
import pyarrow as pa
from pyarrow import compute

TIMESTAMP = pa.timestamp("us", tz="UTC")

# pyarrow-stubs type no implicit scalar casts (array + int, str joined with an array): compute is untyped here.
pc: Any = compute


@dataclass(frozen=True)
class ParseResult:
    """Typed columns, each as long as the input, and ``error``: the reason, null where the line parsed."""

    columns: dict[str, pa.Array[Any]]
    error: pa.Array[Any]


Parser = Callable[["pa.Array[Any]"], ParseResult]


class Kind(Enum):
    """The Arrow type a captured text becomes; ``-`` and the empty text are null for every kind."""

    STRING = "string"
    INT = "int"
    FLOAT = "float"
    ISO_TIME = "iso_time"  # 2018-07-02T22:23:00.186641Z, or with an offset
    CLF_TIME = "clf_time"  # 10/Oct/2000:13:55:36 -0700 (Apache, S3)
    EPOCH_SECONDS = "epoch_seconds"
    EPOCH_MILLIS = "epoch_millis"


_VALID = {
    Kind.INT: r"^[+-]?\d{1,18}$",
    Kind.FLOAT: r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$",
    Kind.ISO_TIME: r"^\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d(:?\d\d)?)?$",
    Kind.EPOCH_SECONDS: r"^\d{1,11}$",
    Kind.EPOCH_MILLIS: r"^\d{1,14}$",
}
_NULL_TOKENS = pa.array(["-", ""])

_SNAKE_1 = re.compile(r"(.)([A-Z][a-z]+)")
_SNAKE_2 = re.compile(r"([a-z0-9])([A-Z])")


def array_of(value: Any) -> pa.Array[Any]:
    """A compute result as the array it is (compute is untyped here, see above)."""
    return value  # type: ignore[no-any-return]


def one_chunk(column: pa.ChunkedArray[Any] | pa.Array[Any]) -> pa.Array[Any]:
    """The column as one array: its only chunk as it is. ``combine_chunks`` copies a column
    of one chunk too (the columns a pipelined flush of 100,000 lines reads whole, to match,
    parse and redact them, are ~30 MB); a table's filtered or mapped columns have one."""
    if isinstance(column, pa.ChunkedArray):
        return array_of(column.chunk(0) if column.num_chunks == 1 else column.combine_chunks())
    return column


@lru_cache(maxsize=4096)  # JSON and kv keys are data: bounded
def snake_case(name: str) -> str:
    """``userIdentity`` -> ``user_identity``, ``cs(Host)`` -> ``cs_host``, ``pkt-srcaddr`` -> ``pkt_srcaddr``."""
    name = _SNAKE_2.sub(r"\1_\2", _SNAKE_1.sub(r"\1_\2", name))
    return re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")


def null_tokens(text: pa.Array[Any]) -> pa.Array[Any]:
    """Text with ``-`` and the empty string made null (the logs' way of saying "not applicable")."""
    if not pa.types.is_string(text.type):
        absent = pc.is_in(text, _NULL_TOKENS)
        return array_of(pc.if_else(absent, pa.nulls(len(text), pa.string()), text))
    # Read from the offsets and the first byte of each value (a token is 0 or 1 byte long),
    # not by Arrow's is_in, which hashes every value against the two tokens: the parsers
    # call this on every field of every line. The answer is a new validity bitmap over the
    # same offsets and bytes: the values are not copied.
    n = len(text)
    validity, offsets, data = text.buffers()
    assert offsets is not None, "a string array has offsets"
    ends = np.frombuffer(memoryview(offsets), np.int32, n + 1, text.offset * 4)
    lengths = np.diff(ends)
    absent = lengths == 0
    if data is not None and len(data):
        first = np.frombuffer(memoryview(data), np.uint8)[np.minimum(ends[:-1], len(data) - 1)]
        absent |= (lengths == 1) & (first == ord("-"))
    keep = ~absent
    if validity is not None and text.null_count:
        bits = np.frombuffer(memoryview(validity), np.uint8)
        keep &= np.unpackbits(bits, count=text.offset + n, bitorder="little")[text.offset :] == 1
    bitmap = pa.py_buffer(np.packbits(keep, bitorder="little").tobytes())
    buffers = [bitmap, offsets.slice(text.offset * 4), data]
    return pa.Array.from_buffers(pa.string(), n, buffers, n - int(np.count_nonzero(keep)))


def _iso_time(text: pa.Array[Any], tolerant: bool) -> pa.Array[Any]:
    # A bare local time (no zone) is read as UTC, as the AWS formats that omit it mean.
    # Arrow casts a text to a zoned timestamp only when it ends in a zone, one of the forms
    # the pattern below finds (Z, +hh, +hhmm, +hh:mm): when every text casts as it is,
    # none needs the Z and that is the answer, without the pattern and the join (two
    # thirds of an ALB time column's cost).
    try:
        return array_of(pc.cast(text, TIMESTAMP))
    except pa.ArrowInvalid:
        pass
    zoned = pc.if_else(
        pc.match_substring_regex(text, r"(Z|[+-]\d\d:?\d\d|[+-]\d\d)$"),
        text,
        pc.binary_join_element_wise(text, "Z", ""),
    )
    try:
        return array_of(pc.cast(zoned, TIMESTAMP))
    except pa.ArrowInvalid:  # a well-shaped but impossible date (month 13): find it line by line
        if not tolerant:
            raise
        out: list[object] = []
        for value in zoned.to_pylist():
            try:
                out.append(pc.cast(pa.scalar(value, pa.string()), TIMESTAMP).as_py())
            except pa.ArrowInvalid:
                out.append(None)
        return pa.array(out, TIMESTAMP)


def typed(
    text: pa.Array[Any], kind: Kind, cleaned: bool = False
) -> tuple[pa.Array[Any], pa.Array[Any] | None]:
    """The text as ``kind``, and a mask of the values present but not readable as ``kind`` (None: none).

    ``cleaned``: the caller already made ``-`` and the empty string null.
    """
    if not cleaned:
        text = null_tokens(text)
    if kind is Kind.STRING:
        return text, None
    if kind is Kind.CLF_TIME:
        value = pc.cast(
            pc.strptime(text, "%d/%b/%Y:%H:%M:%S %z", "us", error_is_null=True), TIMESTAMP
        )
        return value, pc.and_(pc.is_valid(text), pc.is_null(value))
    try:  # the common case: every value present reads as ``kind``; one cast, no regex
        return _convert(text, kind, tolerant=False), None
    except (pa.ArrowInvalid, OverflowError):
        pass
    valid = pc.match_substring_regex(text, _VALID[kind])
    value = _convert(pc.if_else(valid, text, pa.nulls(len(text), pa.string())), kind, tolerant=True)
    return value, pc.and_(pc.is_valid(text), pc.is_null(value))


def _convert(clean: pa.Array[Any], kind: Kind, tolerant: bool) -> pa.Array[Any]:
    if kind is Kind.INT:
        return array_of(pc.cast(clean, pa.int64()))
    if kind is Kind.FLOAT:
        return array_of(pc.cast(clean, pa.float64()))
    if kind is Kind.ISO_TIME:
        return _iso_time(clean, tolerant)
    scale = 1_000_000 if kind is Kind.EPOCH_SECONDS else 1_000
    return array_of(pc.cast(pc.multiply(pc.cast(clean, pa.int64()), scale), TIMESTAMP))


def settled(
    columns: dict[str, pa.Array[Any]], error: pa.Array[Any], read: pa.Array[Any] | None = None
) -> ParseResult:
    """The result, with every column null on the lines whose ``error`` is set: a line parses whole or not at all.

    ``read``: the lines the caller took values from (its columns are already null elsewhere), so
    only an error on one of those costs a pass over the columns.
    """
    failed = pc.is_valid(error)
    if read is not None:
        failed = pc.and_(failed, read)
    if not pc.any(failed).as_py():
        return ParseResult(columns, error)
    nulled = {
        name: pc.if_else(failed, pa.scalar(None, value.type), value)
        for name, value in columns.items()
    }
    return ParseResult(nulled, error)


def first_error(*candidates: pa.Array[Any]) -> pa.Array[Any]:
    """Per line, the first non-null reason among ``candidates`` (earlier ones win)."""
    if len(candidates) == 1:
        return array_of(pc.cast(candidates[0], pa.string()))
    return array_of(pc.coalesce(*candidates))


def reason_where(mask: pa.Array[Any], reason: str) -> pa.Array[Any]:
    """``reason`` where ``mask`` holds, null elsewhere (and where ``mask`` is null)."""
    return array_of(
        pc.if_else(pc.fill_null(mask, False), pa.scalar(reason), pa.scalar(None, pa.string()))
    )


def null_message_error(message: pa.Array[Any]) -> pa.Array[Any]:
    return reason_where(pc.is_null(message), "message is null")


def type_columns(
    raw: Mapping[str, pa.Array[Any]],
    kinds: Mapping[str, Kind],
    ok: pa.Array[Any],
    cleaned: bool = False,
) -> tuple[dict[str, pa.Array[Any]], pa.Array[Any]]:
    """Type each captured column; lines not ``ok`` get nulls; a field present but unreadable is an error."""
    columns: dict[str, pa.Array[Any]] = {}
    errors: list[pa.Array[Any]] = []
    for name, text in raw.items():
        kind = kinds.get(name, Kind.STRING)
        value, bad = typed(text, kind, cleaned)
        columns[name] = value
        if bad is not None:
            errors.append(reason_where(pc.and_(ok, bad), f"{name}: not a valid {kind.value}"))
    error = first_error(*errors) if errors else pa.nulls(len(ok), pa.string())
    return columns, error


def struct_fields(matched: pa.StructArray) -> dict[str, pa.Array[Any]]:
    """The struct's children with the struct's own nulls applied (``flatten`` propagates them)."""
    return {matched.type.field(i).name: child for i, child in enumerate(matched.flatten())}


@dataclass(frozen=True)
class RegexFormat:
    """A line format read by one RE2 pattern with named groups; groups not in ``kinds`` stay strings."""

    name: str
    pattern: str
    kinds: Mapping[str, Kind]
    mismatch: str = (
        ""  # the reason for a line the pattern does not match; default "not a {name} line"
    )

    def __call__(self, message: pa.Array[Any]) -> ParseResult:
        message = as_string(message)
        matched = pc.extract_regex(message, self.pattern)
        ok = pc.is_valid(matched)
        columns, field_error = type_columns(struct_fields(matched), self.kinds, ok)
        error = first_error(
            null_message_error(message),
            reason_where(pc.invert(ok), self.mismatch or f"not a {self.name} line"),
            field_error,
        )
        return settled(columns, error, ok)


def as_string(message: pa.Array[Any]) -> pa.Array[Any]:
    """The message column as ``pa.string()`` (one chunk); anything but text is a TypeError."""
    message = one_chunk(message)
    if pa.types.is_large_string(message.type) or pa.types.is_string_view(message.type):
        return array_of(pc.cast(message, pa.string()))
    if not pa.types.is_string(message.type):
        raise TypeError(f"parsers read a string column, got {message.type}")
    return message
