"""The value at a key path (``http.status``) inside each row's JSON object, column-wise (pure).

The ``attributes`` column is compact JSON text (``orjson.dumps``, as the mapping writes it).
Arrow has no JSON path kernel and its JSON reader fails a whole block when one field's type
changes between rows, so the structure is read with numpy over the column's one buffer:
the positions of the real (unescaped) quotes, the brackets outside strings and their depth.
A key of the path matches where its quoted name and ``:`` sit directly in the object the
previous key's value opened. Work and memory are in proportion to the column's bytes and
its structural characters; no Python runs per row.

The value's text: a string's content (as written, escapes kept), a number or a boolean as
written, an object or an array as its JSON text; null where the path is absent, leads
through a non-object, or ends at ``null``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
from pyarrow import compute

# pyarrow-stubs type no implicit scalar casts: compute is untyped here.
pc: Any = compute

_QUOTE, _BACKSLASH = ord('"'), ord("\\")
_OPEN = (ord("{"), ord("["))
_CLOSE = (ord("}"), ord("]"))
_ENDS = (ord(","), ord("}"), ord("]"))
_NULL = b"null"
# The class of each structural byte (looked up at those positions only).
_IS_QUOTE, _IS_OPEN, _IS_CLOSE, _IS_END = 1, 2, 4, 8
_KIND = np.zeros(256, dtype=np.uint8)
_KIND[_QUOTE] = _IS_QUOTE
_KIND[list(_OPEN)] = _IS_OPEN
_KIND[list(_CLOSE)] = _IS_CLOSE
_KIND[list(_ENDS)] |= _IS_END

Positions = np.ndarray[Any, np.dtype[np.int64]]


def values_at(column: pa.Array[Any], path: Sequence[str]) -> pa.Array[Any]:
    """Each row's value at ``path`` (keys, outermost first) as text; null where there is none."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    n = len(column)
    if n == 0 or not path or column.null_count == n:
        return pa.nulls(n, pa.string())
    # Only rows whose text holds the last key at all can have the path: one substring scan
    # (memchr-fast) spares the structure pass the others (most rows, for a rare key).
    holding = pc.fill_null(pc.match_substring(column, _needle(path[-1]).decode()), False)
    count = pc.sum(holding).as_py() or 0
    if count == 0:
        return pa.nulls(n, pa.string())
    if count < n:
        found = _values(pc.filter(column, holding), path)
        return pc.replace_with_mask(pa.nulls(n, pa.string()), holding, found)  # type: ignore[no-any-return]
    return _values(column, path)


def _needle(key: str) -> bytes:
    return orjson.dumps(key) + b":"


def _values(column: pa.Array[Any], path: Sequence[str]) -> pa.Array[Any]:
    n = len(column)
    offsets = _offsets(column)
    base = int(offsets[0])
    raw: Any = column.buffers()[2]
    data = (
        np.frombuffer(raw, dtype=np.uint8)[base : int(offsets[-1])]
        if raw
        else np.zeros(0, np.uint8)
    )
    doc = _Structure(data)
    starts = offsets[:-1] - base
    texts = starts[offsets[1:] > offsets[:-1]]  # a null or empty row has no bytes
    found = texts[_member(texts, doc.opens_at(1))]
    for depth, key in enumerate(path, start=1):
        found = doc.members(found, depth, _needle(key))
        if depth < len(path):
            found = found[data[found] == ord("{")] if len(found) else found
    rows = np.searchsorted(starts, found, side="right") - 1
    rows, first = np.unique(rows, return_index=True)  # a repeated key: its first occurrence
    begin, end = doc.value_spans(found[first])
    return _gather(data, n, rows, begin, end)


def _offsets(column: pa.Array[Any]) -> np.ndarray[Any, Any]:
    width = np.int64 if pa.types.is_large_string(column.type) else np.int32
    buffer: Any = column.buffers()[1]
    all_offsets: np.ndarray[Any, Any] = np.frombuffer(buffer, dtype=width)
    return all_offsets[column.offset : column.offset + len(column) + 1].astype(np.int64)


class _Structure:
    """Where the strings, brackets and depths of a run of JSON texts are."""

    def __init__(self, data: np.ndarray[Any, np.dtype[np.uint8]]) -> None:
        self.data = data
        wanted = data == _QUOTE  # compares run in SIMD: 3x a lookup per byte (_KIND[data])
        for byte in _OPEN + _CLOSE + _ENDS[:1]:
            wanted |= data == byte
        marked = np.flatnonzero(wanted)
        del wanted
        kind = _KIND[data[marked]]
        quotes = marked[kind == _IS_QUOTE]
        self.quotes = quotes[_unescaped(data, quotes)]
        self.ends = marked[(kind & _IS_END) != 0]
        bracket = (kind & (_IS_OPEN | _IS_CLOSE)) != 0
        brackets, kind = marked[bracket], kind[bracket]
        outside = np.searchsorted(self.quotes, brackets) % 2 == 0  # even quotes before it
        brackets, kind = brackets[outside], kind[outside]
        opening = (kind & _IS_OPEN) != 0
        self.depth = np.cumsum(np.where(opening, 1, -1), dtype=np.int64)  # after each bracket
        self.open_pos, self.open_depth = brackets[opening], self.depth[opening]
        self.close_pos, self.close_depth = brackets[~opening], self.depth[~opening]
        self.brackets = brackets

    def opens_at(self, depth: int) -> Positions:
        out: Positions = self.open_pos[self.open_depth == depth]
        return out

    def depth_before(self, positions: Positions) -> Positions:
        k = np.searchsorted(self.brackets, positions)
        out: Positions = np.where(k > 0, self.depth[np.maximum(k - 1, 0)], 0).astype(np.int64)
        return out

    def members(self, objects: Positions, depth: int, needle: bytes) -> Positions:
        """Where the value of key ``needle`` (``"key":``) starts in each object opened at
        ``objects`` (positions of ``{`` at ``depth``)."""
        if not len(objects):
            return objects
        keys = self._occurrences(needle)
        keys = keys[self.depth_before(keys) == depth]
        opens = self.opens_at(depth)
        enclosing = opens[np.maximum(np.searchsorted(opens, keys) - 1, 0)] if len(opens) else keys
        keys = keys[_member(enclosing, objects)]
        previous = self.data[np.maximum(keys - 1, 0)]
        keys = keys[(previous == ord("{")) | (previous == ord(","))]
        out: Positions = keys + len(needle)
        return out

    def _occurrences(self, needle: bytes) -> Positions:
        """Real quotes followed by the rest of ``needle`` (narrowed byte by byte)."""
        found = self.quotes[0::2]  # every text's quotes pair up: these open a string
        for i, byte in enumerate(needle[1:], start=1):
            found = found[found + i < len(self.data)]
            found = found[self.data[found + i] == byte]
        out: Positions = found
        return out

    def value_spans(self, starts: Positions) -> tuple[Positions, Positions]:
        """(begin, end) of the text each value starting at ``starts`` is read as; an empty
        span (begin == end) for ``null``."""
        begin, end = starts.copy(), starts.copy()
        if not len(starts):
            return begin, end
        first = self.data[starts]
        string = first == _QUOTE
        closing = self.quotes[
            np.minimum(np.searchsorted(self.quotes, starts + 1), len(self.quotes) - 1)
        ]
        begin[string], end[string] = starts[string] + 1, closing[string]
        nested = (_KIND[first] & _IS_OPEN) != 0
        if nested.any():
            depth = self.depth_before(starts[nested]) + 1
            end[nested] = self._matching_close(starts[nested], depth) + 1
        scalar = ~string & ~nested
        if scalar.any():
            after = np.searchsorted(self.ends, starts[scalar])
            end[scalar] = self.ends[np.minimum(after, len(self.ends) - 1)]
            is_null = (end[scalar] - starts[scalar] == len(_NULL)) & (first[scalar] == ord("n"))
            picked = np.flatnonzero(scalar)[is_null]
            end[picked] = begin[picked]
        return begin, end

    def _matching_close(self, opens: Positions, depth: Positions) -> Positions:
        out = np.empty_like(opens)
        for d in np.unique(depth):  # a few distinct depths
            at = depth == d
            closes = self.close_pos[self.close_depth == d - 1]
            out[at] = closes[np.searchsorted(closes, opens[at])]
        return out


def _member(values: Positions, ascending: Positions) -> np.ndarray[Any, np.dtype[np.bool_]]:
    """Which ``values`` are in ``ascending`` (sorted positions): a binary search each."""
    if not len(ascending):
        return np.zeros(len(values), dtype=bool)
    at = np.minimum(np.searchsorted(ascending, values), len(ascending) - 1)
    found: np.ndarray[Any, np.dtype[np.bool_]] = ascending[at] == values
    return found


def _unescaped(data: np.ndarray[Any, Any], quotes: Positions) -> np.ndarray[Any, Any]:
    """Which quotes are real: preceded by an even run of backslashes (runs are short)."""
    run = np.zeros(len(quotes), dtype=np.int64)
    at = quotes - 1
    active = (at >= 0) & (data[np.maximum(at, 0)] == _BACKSLASH)
    while active.any():
        run += active
        at = at - 1
        active &= (at >= 0) & (data[np.maximum(at, 0)] == _BACKSLASH)
    real: np.ndarray[Any, Any] = run % 2 == 0
    return real


def _gather(
    data: np.ndarray[Any, Any], n: int, rows: Positions, begin: Positions, end: Positions
) -> pa.Array[Any]:
    """A string column of ``n`` rows: ``data[begin:end]`` at ``rows``, null elsewhere and
    where the span is empty and marks a JSON null."""
    lengths = np.zeros(n, dtype=np.int64)
    valid = np.zeros(n, dtype=bool)
    present = end > begin
    empty_string = (end == begin) & (begin > 0) & (data[np.maximum(begin - 1, 0)] == _QUOTE)
    keep = present | empty_string
    lengths[rows[keep]] = (end - begin)[keep]
    valid[rows[keep]] = True
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    picked_begin, picked_len = begin[keep], (end - begin)[keep]
    total = int(picked_len.sum())
    index = np.repeat(picked_begin - np.cumsum(picked_len) + picked_len, picked_len) + np.arange(
        total
    )
    text = data[index].tobytes()
    validity = np.packbits(valid, bitorder="little").tobytes()
    buffers: list[pa.Buffer | None] = [
        pa.py_buffer(validity),
        pa.py_buffer(offsets.tobytes()),
        pa.py_buffer(text),
    ]
    return pa.Array.from_buffers(pa.large_string(), n, buffers).cast(pa.string())
