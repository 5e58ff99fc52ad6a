"""Redaction in ``serve``, before Kinesis (``TIDEWAY_INGEST_REDACT``): for data that must never
be stored, each accepted line goes through the pipelines' detectors (service.pipeline.redact,
the one implementation) before it is packed (pure).

Lines stay a ``LineBlock`` (issue 15: memory in proportion to bytes). The block's buffer is
read as one Arrow string column without a copy (a value per line, its newline included) and
the detectors run over the raw JSON text, column-wise. Only two kinds of line then go
through Python, one JSON object each: a line the detectors changed whose result may no
longer be JSON (a card number written as a JSON number), and a line holding an escape
(``\\n``, ``\\u0040``, ``\\/``) behind which a value can hide from the raw text. There every
string value (and every number, as text) goes through the detectors decoded, and the line
is written again. Everything else is untouched: a block with nothing to redact is returned
as it came, without a copy.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
from pyarrow import compute

from service.errors import SettingsError
from service.ingest.lineblock import LineBlock
from service.pipeline.redact import DETECTORS, redact

# pyarrow-stubs type no implicit scalar casts: compute is untyped here, as in the pipelines.
pc: Any = compute
SETTING = "TIDEWAY_INGEST_REDACT"
# JSON escapes behind which a value can hide from the raw text: a letter's (a word boundary
# is lost before "\n4111…") and, always read decoded, a code point's or a slash's
# ("alice\u0040example.com").
_LETTER_ESCAPE = r"\\[nrtbf]"
_HIDING_ESCAPE = r"\\[u/]"


def ingest_detectors(names: str) -> tuple[str, ...]:
    """The detectors of ``TIDEWAY_INGEST_REDACT`` (comma-separated; empty: none), in the
    order given; SettingsError (one line naming the setting) for an unknown one."""
    chosen = tuple(dict.fromkeys(n.strip() for n in names.split(",") if n.strip()))
    for name in chosen:
        if name not in DETECTORS:
            known = ", ".join(sorted(DETECTORS))
            raise SettingsError(
                f"setting {SETTING} is invalid: unknown detector {name!r} (known: {known})"
            )
    return chosen


def redact_lines(lines: Sequence[bytes], detectors: Sequence[str]) -> Sequence[bytes]:
    """``lines`` (JSON objects) with every detected value replaced by ``[REDACTED:<name>]``;
    ``lines`` itself when nothing was found. Every line stays one valid JSON object."""
    if not detectors or not len(lines):
        return lines
    block = LineBlock.of(lines)
    values = _as_column(block)
    raw = redact(values, detectors)
    slow = _differs(raw, values) | _matches(values, _HIDING_ESCAPE)
    slow |= _found_behind_letter_escapes(values, detectors)
    if not slow.any():
        return lines
    rows = pa.array(np.flatnonzero(slow))
    # Python per line, on the lines found above only (most lines hold neither): one JSON
    # object each, its string values redacted in one column.
    redone = _decoded(
        pc.take(values, rows).to_pylist(),
        pc.take(raw, rows).to_pylist(),
        detectors,
        last=rows[-1].as_py() == len(block) - 1,
    )
    out = pc.replace_with_mask(raw, pa.array(slow), pa.array(redone, values.type))
    return _as_block(out)


def _matches(values: pa.Array[Any], pattern: str) -> np.ndarray[Any, np.dtype[np.bool_]]:
    found = pc.fill_null(pc.match_substring_regex(values, pattern), False)
    return found.to_numpy(zero_copy_only=False)  # type: ignore[no-any-return]


def _differs(a: pa.Array[Any], b: pa.Array[Any]) -> np.ndarray[Any, np.dtype[np.bool_]]:
    return pc.fill_null(pc.not_equal(a, b), False).to_numpy(zero_copy_only=False)  # type: ignore[no-any-return]


def _found_behind_letter_escapes(
    values: pa.Array[Any], detectors: Sequence[str]
) -> np.ndarray[Any, np.dtype[np.bool_]]:
    """The lines where the detectors find something once each letter escape reads as a
    space (a stack trace's "\\n" is common; what a detector sees after a real newline, it
    sees after a space too), run over the lines holding such an escape only."""
    escaped = _matches(values, _LETTER_ESCAPE)
    found = np.zeros(len(values), dtype=bool)
    if escaped.any():
        rows = pc.filter(values, pa.array(escaped))
        spaced = pc.replace_substring_regex(rows, _LETTER_ESCAPE, " ")
        found[escaped] = _differs(redact(spaced, detectors), spaced)
    return found


def _as_column(block: LineBlock) -> pa.Array[Any]:
    """The block's lines as strings over its own buffer: line i is ``data[start_i:start_i+1]``
    with its newline (the last has none), so the values lie end to end and need no copy."""
    ends = np.asarray(block.ends, dtype=np.int64)
    large = len(block.data) >= 2**31  # past int32 offsets (a body over 2 GiB)
    offsets: Any = np.empty(len(ends) + 1, dtype=np.int64 if large else np.int32)
    offsets[0] = 0
    offsets[1:] = ends + 1
    offsets[-1] = len(block.data)
    kind = pa.large_string() if large else pa.string()
    return pa.Array.from_buffers(
        kind, len(ends), [None, pa.py_buffer(offsets), pa.py_buffer(block.data)]
    )


def _as_block(values: Any) -> LineBlock:
    """The column (values end to end, each but the last with its newline) as a LineBlock."""
    n = len(values)
    width = np.int64 if pa.types.is_large_string(values.type) else np.int32
    offsets = np.frombuffer(values.buffers()[1], dtype=width)[values.offset : values.offset + n + 1]
    start, stop = int(offsets[0]), int(offsets[-1])
    data = bytes(memoryview(values.buffers()[2])[start:stop])
    ends = offsets[1:].astype(np.int64) - start - 1
    ends[-1] += 1
    return LineBlock(data, array("q", ends.tobytes()))


def _decoded(
    originals: list[str], raws: list[str], detectors: Sequence[str], *, last: bool
) -> list[str]:
    """Each line read as JSON (the raw pass's result where that still is JSON, else the line
    as sent), every string and number in it redacted decoded, written again with its newline
    (``last``: the final one of these is the block's last line, which has none)."""
    loaded = [_loaded(raw, original) for raw, original in zip(raws, originals, strict=True)]
    objects = [obj for obj, _ in loaded]
    # The raw pass's text is kept as it is where it is still JSON and nothing more is found.
    kept = [
        raw if ok and raw != original else original
        for (_, ok), raw, original in zip(loaded, raws, originals, strict=True)
    ]
    touched = [
        (not ok) and raw != original
        for (_, ok), raw, original in zip(loaded, raws, originals, strict=True)
    ]
    leaves: list[tuple[int, Any, Any, str]] = []
    for i, obj in enumerate(objects):
        _collect(i, obj, leaves)
    if leaves:
        texts = pa.array([text for _, _, _, text in leaves], pa.string())
        for (i, holder, key, text), new in zip(
            leaves, redact(texts, detectors).to_pylist(), strict=True
        ):
            if new != text:
                holder[key] = new
                touched[i] = True
    # A line with an escape and nothing found stays as it was sent, byte for byte.
    out = [
        orjson.dumps(obj).decode() + "\n" if was_touched else text
        for obj, was_touched, text in zip(objects, touched, kept, strict=True)
    ]
    if last and touched[-1]:
        out[-1] = out[-1][:-1]
    return out


def _loaded(raw: str, original: str) -> tuple[Any, bool]:
    """The line's object, and whether it is the raw pass's (still JSON)."""
    try:
        return orjson.loads(raw), True
    except orjson.JSONDecodeError:  # the raw pass wrote a label where a number was
        return orjson.loads(original), False


def _collect(line: int, root: Any, leaves: list[tuple[int, Any, Any, str]]) -> None:
    """(line, container, key, text) of every string and number inside ``root``, without recursion
    (JSON may nest deeper than Python's stack)."""
    stack = [root]
    while stack:
        node = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in items:
            if isinstance(value, str):
                leaves.append((line, node, key, value))
            elif isinstance(value, dict | list):
                stack.append(value)
            elif isinstance(value, int | float) and not isinstance(value, bool):
                leaves.append((line, node, key, orjson.dumps(value).decode()))
