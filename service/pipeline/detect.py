"""Redaction's native half (``service/_detect.c``, with ``_chains.c``, ``_redact.c``, ``_cards.c``):
which values the e-mail, card and IPv4 detectors may find something in, and those values
rewritten; none of it without the extension.

A detector leaves a value it finds nothing in as it is, so a test that flags every value a
detector's pattern matches (and maybe a few more) may choose the values the detector runs on,
and the bytes out are the same: ``flagged`` is such a test, one walk over a column's bytes
for the three detectors, several times faster than RE2's search for their union.
``redacted`` rewrites the values it flags by each pattern's global replace read off the
pattern's structure (and the card rule, ``redact._cards_in``), without RE2's captures, the
copies of the values between detectors, or a Python call a detector. Without the extension
(``TIDEWAY_NO_EXTENSIONS=1``) ``native`` names no detector and redaction runs on RE2 and
Arrow alone, its specification. tests/pipeline/test_detect.py holds ``flagged`` to the
patterns, ``redacted`` to them and to ``_cards_in``, and redaction with and without the
extension to each other.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import numpy as np
import pyarrow as pa

from service.scanner import DETECT

# The detectors the C pass knows, and their bits in its flags.
NATIVE: dict[str, int] = (
    {}
    if DETECT is None
    else {"email": DETECT.EMAIL, "credit_card": DETECT.CREDIT_CARD, "ipv4": DETECT.IPV4}
)
# The column types it reads (int32 or int64 offsets), and the largest column it takes (the
# output of ``redacted``, under three times the input, must keep int32 offsets).
_OFFSETS_WIDE = {pa.string(): False, pa.large_string(): True}
_LARGEST_COLUMN = 1 << 29


def native(detectors: Collection[str], values: pa.Array[Any]) -> frozenset[str]:
    """Those of ``detectors`` the extension serves for ``values`` (none without it, or for
    a column of another type than string and large_string, or past 1 GiB)."""
    if values.type not in _OFFSETS_WIDE or values.nbytes > _LARGEST_COLUMN:
        return frozenset()
    return frozenset(name for name in detectors if name in NATIVE)


def _buffers(values: pa.Array[Any]) -> tuple[Any, Any, int, int, bool]:
    """The arguments ``_detect``'s functions read a column by."""
    _, offsets, data = values.buffers()
    wide = _OFFSETS_WIDE[values.type]
    return offsets, b"" if data is None else data, values.offset, len(values), wide


def flagged(values: pa.Array[Any], detectors: Collection[str]) -> np.ndarray[Any, Any]:
    """Which of ``values`` (nulls: none) the patterns of ``detectors`` (all ``native``) may
    match: every value one of them matches is flagged, and few others are."""
    assert DETECT is not None and native(detectors, values) == set(detectors), detectors
    n = len(values)
    if values.null_count == n:  # also the empty column
        return np.zeros(n, dtype=bool)
    wanted = 0
    for name in detectors:
        wanted |= NATIVE[name]
    found: np.ndarray[Any, Any] = np.frombuffer(
        DETECT.candidates(*_buffers(values), wanted), dtype=np.uint8
    ).astype(bool)
    if values.null_count:
        found &= values.is_valid().to_numpy(zero_copy_only=False)
    return found


def redacted(values: pa.Array[Any], detectors: Collection[str]) -> pa.Array[Any] | None:
    """``values`` through ``detectors`` (all ``native``) in redaction's fixed order, as their
    patterns (and ``redact._cards_in``) would leave them: one walk finds the values that may
    hold something (``flagged``'s test) and rewrites them. ``values`` themselves where
    nothing changed; None where a value to rewrite for ``ipv4`` is not valid UTF-8 (RE2
    reads an address's neighbours as characters: such a column is left to RE2)."""
    assert DETECT is not None and native(detectors, values) == set(detectors), detectors
    if values.null_count == len(values):
        return values
    wanted = 0
    for name in detectors:
        wanted |= NATIVE[name]
    done = DETECT.redacted(*_buffers(values), wanted)
    if done is None:
        return None
    new_offsets, text, changed = done
    if not changed:
        return values
    validity = None if values.null_count == 0 else values.is_valid().buffers()[1]
    buffers = [validity, pa.py_buffer(new_offsets), pa.py_buffer(text)]
    return pa.Array.from_buffers(values.type, len(values), buffers, values.null_count)
