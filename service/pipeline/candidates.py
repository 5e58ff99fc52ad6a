"""Which values of a column a pattern matches, searched by RE2 over blocks of values first
(service/pipeline/redact.py: custom patterns, and the detectors service/pipeline/detect.py
does not choose the values of).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
from pyarrow import compute

# pyarrow-stubs type no implicit scalar casts: compute is untyped here.
pc: Any = compute


def matches(values: pa.Array[Any], pattern: str) -> np.ndarray[Any, np.dtype[np.bool_]]:
    """Which of ``values`` RE2 finds ``pattern`` in (nulls: none), one search a value."""
    found = pc.fill_null(pc.match_substring_regex(values, pattern), False)
    return found.to_numpy(zero_copy_only=False)  # type: ignore[no-any-return]


# Columns up to this size are searched in blocks first (offsets of the joined text are int32).
_WHOLE_COLUMN_BYTES = 1 << 30
# Values joined into one text per block: RE2's fixed cost a call (~0.1 us) is paid once a
# block, and a match found early in a block ends its search.
_BLOCK_ROWS = 128


def hits(values: pa.Array[Any], pattern: str) -> np.ndarray[Any, np.dtype[np.bool_]]:
    """Which of ``values`` ``pattern`` matches (nulls: none), as one RE2 search a value
    would say, searching the values of a block of rows joined by NUL first and one by one
    only in the blocks that match (RE2's fixed cost a call is most of the time on short
    values, and most columns hold nothing to redact, or hold it in a few rows).

    A block that holds no match holds no value that matches: a value's match is a match of
    the joined text, as each detector's anchors (``^``, ``$``, ``\\b``) sit beside a character
    class that takes the NUL (tests/pipeline/test_redact.py holds every detector to it at a
    value's edges).
    """
    n = len(values)
    if values.null_count == n:  # also the empty column
        return np.zeros(n, dtype=bool)
    candidates = np.ones(n, dtype=bool)
    if values.nbytes <= _WHOLE_COLUMN_BYTES:
        text = values if values.null_count == 0 else pc.fill_null(values, "")
        bounds = np.append(np.arange(0, n, _BLOCK_ROWS, dtype=np.int32), np.int32(n))
        blocks = pa.ListArray.from_arrays(pa.array(bounds, pa.int32()), text)
        matched = matches(pc.binary_join(blocks, "\x00"), pattern)
        if not matched.any():
            return np.zeros(n, dtype=bool)
        candidates = np.repeat(matched, np.diff(bounds))
    if candidates.all():
        return matches(values, pattern)
    found = np.zeros(n, dtype=bool)
    found[candidates] = matches(pc.filter(values, pa.array(candidates)), pattern)
    return found


def any_of(patterns: Sequence[str]) -> str:
    """One RE2 pattern matching where any of ``patterns`` does."""
    return "|".join(f"(?:{p})" for p in patterns)  # (?:) scopes each pattern's (?i) flags
