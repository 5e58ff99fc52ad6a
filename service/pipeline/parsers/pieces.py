"""Each value of a string column cut at one byte: the first or last place it occurs, the
pieces taken from the column's own bytes (pure).

``split_pattern`` builds a list per value, piece by piece, and each piece is then taken
out of the lists again: ~900 instructions a value for an ALB ``ip:port`` or request line
(callgrind, benchmarks/flush_instructions.py). Here one pass finds every place the byte
occurs in the column and a binary search each value's; the pieces of all values, in
order, are then one string array over the column's own bytes (new offsets, no copy), and
one take copies out each piece wanted. tokens.py says what they must equal
(tests/pipeline/test_pieces.py holds them to ``split_pattern``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa


@dataclass(frozen=True)
class Spans:
    """A string column's values as byte ranges of its data: ``starts`` to ``stops``, and
    where ``byte`` occurs in the whole data (``places``, ascending)."""

    buffer: pa.Buffer | None
    starts: np.ndarray[Any, np.dtype[np.int64]]
    stops: np.ndarray[Any, np.dtype[np.int64]]
    valid: np.ndarray[Any, np.dtype[np.bool_]]
    places: np.ndarray[Any, np.dtype[np.int64]]

    @classmethod
    def of(cls, text: pa.Array[Any], byte: str) -> Spans:
        """``text``: a ``pa.string()`` array (any offset), ``byte``: one ASCII character."""
        n = len(text)
        _, offsets, data = text.buffers()
        assert offsets is not None, "a string array has offsets"
        ends = np.frombuffer(memoryview(offsets), np.int32, n + 1, text.offset * 4)
        raw = (
            np.frombuffer(memoryview(data), np.uint8) if data is not None else np.zeros(0, np.uint8)
        )
        valid = (
            text.is_valid().to_numpy(zero_copy_only=False) if text.null_count else np.ones(n, bool)
        )
        first, last = (int(ends[0]), int(ends[-1])) if n else (0, 0)
        places = np.flatnonzero(raw[first:last] == ord(byte)).astype(np.int64) + first
        return cls(data, ends[:-1].astype(np.int64), ends[1:].astype(np.int64), valid, places)

    def first_after(
        self, lo: np.ndarray[Any, Any]
    ) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, np.dtype[np.bool_]]]:
        """Per value, the first place at or after ``lo`` and before its stop, and whether
        there is one."""
        k = np.searchsorted(self.places, lo, side="left")
        return self._at(k, (k < len(self.places)), lambda at: at < self.stops)

    def last(self) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, np.dtype[np.bool_]]]:
        """Per value, the last place inside it, and whether there is one."""
        k = np.searchsorted(self.places, self.stops, side="left") - 1
        return self._at(k, k >= 0, lambda at: at >= self.starts)

    def _at(self, k: Any, inside: Any, holds: Any) -> tuple[Any, Any]:
        if not len(self.places):
            return np.zeros(len(k), np.int64), np.zeros(len(k), bool)
        at = self.places[np.clip(k, 0, len(self.places) - 1)]
        return at, inside & holds(at) & self.valid

    def cut(self, cuts: list[np.ndarray[Any, Any]]) -> Pieces:
        """The values cut at ``cuts`` (per value, ascending, each between its start and
        stop): piece ``j`` of a value runs from cut ``j - 1`` (its start for 0) to cut
        ``j`` (its stop for the last)."""
        k = len(cuts) + 1
        n = len(self.starts)
        bounds = np.empty((n, k), np.int64)
        bounds[:, 0] = self.starts
        for j, at in enumerate(cuts, start=1):
            bounds[:, j] = at
        # A value's stop is the next one's start: the pieces of every value, in order,
        # are one string array over the column's own bytes (no copy).
        last = self.stops[-1:] if n else np.zeros(1, np.int64)
        offsets = np.append(bounds.reshape(-1), last).astype(np.int32)
        data = self.buffer if self.buffer is not None else pa.py_buffer(b"")
        buffers = [None, pa.py_buffer(offsets.tobytes()), data]
        return Pieces(pa.Array.from_buffers(pa.string(), n * k, buffers), k, n)


@dataclass(frozen=True)
class Pieces:
    """Every value's ``k`` pieces, value after value, as one string array."""

    values: pa.Array[Any]
    k: int
    n: int

    def piece(self, j: int, present: np.ndarray[Any, np.dtype[np.bool_]]) -> pa.Array[Any]:
        """Each value's piece ``j`` where ``present``, else null (one copying take)."""
        index: Any = pa.array(np.arange(self.n, dtype=np.int64) * self.k + j, mask=~present)
        taken: pa.Array[Any] = self.values.take(index)
        return taken
