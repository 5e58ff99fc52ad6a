"""Each value of a string column cut at one byte: the first or last place it occurs, the
pieces gathered by numpy from the column's own bytes (pure).

``split_pattern`` builds a list per value, piece by piece, and each piece is then taken
out of the lists again: ~900 instructions a value for an ALB ``ip:port`` or request line
(callgrind, benchmarks/flush_instructions.py). Here one pass finds every place the byte
occurs in the column, a binary search each value's, and one gather copies the pieces: the
same strings, a tenth of the work. tokens.py says what they must equal
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

    data: np.ndarray[Any, np.dtype[np.uint8]]
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
        return cls(raw, ends[:-1].astype(np.int64), ends[1:].astype(np.int64), valid, places)

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

    def piece(self, lo: Any, hi: Any, present: Any) -> pa.Array[Any]:
        """The bytes ``lo`` to ``hi`` of each value where ``present``, else null."""
        lengths = np.where(present, hi - lo, 0)
        offsets = np.zeros(len(lengths) + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        total = int(offsets[-1])
        index = np.repeat(lo - offsets[:-1], lengths) + np.arange(total, dtype=np.int64)
        data = self.data[index].tobytes()
        nulls = len(lengths) - int(np.count_nonzero(present))
        validity = (
            None if not nulls else pa.py_buffer(np.packbits(present, bitorder="little").tobytes())
        )
        buffers = [validity, pa.py_buffer(offsets.astype(np.int32).tobytes()), pa.py_buffer(data)]
        return pa.Array.from_buffers(pa.string(), len(lengths), buffers, nulls)
