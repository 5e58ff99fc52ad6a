"""An OTLP JSON body parsed without holding the GIL for long (pure): the document's
skeleton in one call, every ``logRecords`` array in pieces of 64 KiB (issue 15: one call
over a 5 MB body held the GIL for 151 ms and /healthz waited 251 ms)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import orjson

from service.ingest.lines import array_pieces

# A JSON string, or one bracket; what the walk in ``_record_spans`` looks at.
_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]')
# Tokens (strings and brackets) walked at most: ~1.5 s of CPU; the largest body within
# MAX_JSON_OBJECTS (24,000 records, ~390,000 tokens) is well below, a body of bare strings
# or "[" past it is parsed whole (orjson refuses depth past 1,024 at once).
MAX_WALK_TOKENS = 1_000_000
_RECORDS_KEYS = (b'"logRecords"', b'"log_records"')
_COLON_BRACKET = re.compile(rb"\s*:\s*\[")


def load_in_pieces(body: bytes) -> Any:
    """``orjson.loads(body)``, but every ``logRecords`` array is parsed a piece of 64 KiB at
    a time: one call over a 5 MB body held the GIL for 151 ms (issue 15: /healthz at 251 ms).
    The rest of the document (its skeleton) is small. JSONDecodeError as orjson's."""
    tokens = body.count(b'"') // 2 + body.count(b"[") + body.count(b"{")
    if tokens > MAX_WALK_TOKENS:  # the walk costs ~1.5 us a token: not for any body
        return orjson.loads(body)
    spans = _record_spans(body)
    if not spans:
        return orjson.loads(body)
    skeleton, last = [], 0
    for start, end in spans:
        skeleton.append(body[last : start + 1])
        last = end
    skeleton.append(body[last:])
    doc = orjson.loads(b"".join(skeleton))
    arrays = [
        [item for piece in array_pieces(body[start : end + 1]) for item in piece]
        for start, end in spans
    ]
    try:
        slots = list(_record_slots(doc))
    except RecursionError:  # a skeleton nested ~1,000 deep: parsed whole, as before
        return orjson.loads(body)
    if len(slots) != len(arrays):  # duplicate keys: orjson kept the last; parse it whole
        return orjson.loads(body)
    for (holder, key), items in zip(slots, arrays, strict=True):
        holder[key] = items
    return doc


def _record_spans(body: bytes) -> list[tuple[int, int]]:
    """Offsets of the ``[`` and ``]`` of every outermost ``logRecords`` array, in document
    order (a per-token loop: it yields the GIL every few hundred tokens)."""
    spans: list[tuple[int, int]] = []
    depth, opened, start, pending = 0, -1, 0, False
    for match in _TOKEN.finditer(body):
        token = match.group()
        if token[:1] == b'"':
            pending = (
                opened < 0
                and token in _RECORDS_KEYS
                and bool(_COLON_BRACKET.match(body, match.end()))
            )
            continue
        if token in (b"[", b"{"):
            if pending and token == b"[":
                opened, start = depth, match.start()
            depth += 1
        else:
            depth -= 1
            if depth == opened and token == b"]":
                spans.append((start, match.start()))
                opened = -1
        pending = False
    return spans


def _record_slots(value: Any) -> Iterator[tuple[dict[str, Any], str]]:
    """Every ``(object, key)`` holding an (emptied) ``logRecords`` list, in document order."""
    if isinstance(value, dict):
        for key, child in value.items():
            if key in ("logRecords", "log_records") and isinstance(child, list) and not child:
                yield value, key
            else:
                yield from _record_slots(child)
    elif isinstance(value, list):
        for child in value:
            yield from _record_slots(child)
