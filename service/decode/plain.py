"""JSON object, JSON array of objects, NDJSON and UTF-8 text records (pure).

Whole-buffer work where the bytes allow it: a single object is passed through as it
came (newlines inside it can only be whitespace, so they become spaces), NDJSON is
split once and checked by the C scanner (``service/_scan.c``), with orjson deciding the
lines it is unsure of. Each line is checked once: the writer relies on every line being
a JSON object.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from service.decode.types import Decoded, LineBatch
from service.errors import DecodeError
from service.scanner import check_lines

_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError


def decode_plain(data: bytes, *, source: str, fmt_suffix: str = "") -> Decoded:
    """JSON object, array of objects or NDJSON, else UTF-8 text (one message per record).

    Raises DecodeError when the bytes are none of these (not UTF-8).
    """
    decoded = decode_json(data, source=source, fmt_suffix=fmt_suffix)
    if decoded is not None:
        return decoded
    return decode_text(data, source=source, fmt_suffix=fmt_suffix)


def decode_json(data: bytes, *, source: str, fmt_suffix: str = "") -> Decoded | None:
    """JSON object, array of objects or NDJSON; None when ``data`` is not such JSON."""
    stripped = data.strip()
    if stripped[:1] not in (b"{", b"["):
        return None
    if b"\n" in stripped:  # NDJSON first: it is the common multi-line shape on Kinesis
        ndjson = ndjson_payload(stripped)
        if ndjson is not None:
            payload, count = ndjson
            return Decoded("ndjson" + fmt_suffix, (LineBatch(payload, count, source=source),))
    try:
        value = _loads(stripped)
    except _JSONDecodeError:
        return None
    return json_value_lines(value, stripped, source=source, fmt_suffix=fmt_suffix)


def json_value_lines(
    value: Any, raw: bytes, *, source: str, fmt_suffix: str = ""
) -> Decoded | None:
    """Lines of an already parsed JSON object or array of objects (``raw`` its stripped bytes)."""
    if type(value) is dict:
        # Raw newlines in valid JSON are whitespace between tokens, never inside strings.
        line = raw.replace(b"\n", b" ") if b"\n" in raw else raw
        return Decoded("json" + fmt_suffix, (LineBatch(line, 1, source=source),))
    if type(value) is list:
        if not value:
            return Decoded("json" + fmt_suffix, skipped="json array is empty")
        if not all(type(v) is dict for v in value):
            return None
        # Array elements are not line-delimited in the input: re-serialising is unavoidable.
        return Decoded(
            "json" + fmt_suffix,
            (LineBatch(object_lines(value), len(value), source=source),),
        )
    return None


# Elements serialised per join: each ``orjson.dumps`` result holds ~4 KB until freed
# (measured with tracemalloc: a 1 MiB array of 131k small objects peaked at 574 MB when all
# were held at once for one join, 5 MB in slices).
_DUMPS_PER_JOIN = 1024


def object_lines(objects: list[Any]) -> bytes:
    """``objects`` as NDJSON (no trailing newline), without holding every line at once."""
    step = _DUMPS_PER_JOIN
    return b"\n".join(
        b"\n".join(map(orjson.dumps, objects[i : i + step])) for i in range(0, len(objects), step)
    )


def ndjson_payload(data: bytes) -> tuple[bytes, int] | None:
    """``data``'s non-blank lines (stripped, unless the C scanner vouches for every line as
    it is) joined, and their count, when every one is a JSON object; None otherwise.

    Lines are split and checked a piece of ~64 KiB at a time and orjson's objects are never
    held together (issue 15: a list of every line cost ~140 B a line, +400 MB for 8 MiB of
    ``{}``)."""
    status, _ = check_lines(data, len(data))
    if status.count(0) == len(status):
        return data, len(status)
    joined: list[bytes] = []
    count = 0
    for piece in _line_pieces(data):
        lines = [s for s in (line.strip() for line in piece.split(b"\n")) if s]
        try:
            if not all(type(o) is dict for o in map(_loads, lines)):
                return None
        except _JSONDecodeError:
            return None
        if lines:
            joined.append(b"\n".join(lines))
            count += len(lines)
    return (b"\n".join(joined), count) if count else None


_PIECE = 64 * 1024


def _line_pieces(data: bytes) -> Iterator[bytes]:
    """``data`` cut after a newline every ~``_PIECE`` bytes (a longer line is one piece)."""
    start = 0
    while start < len(data):
        cut = data.find(b"\n", start + _PIECE)
        end = len(data) if cut < 0 else cut
        yield data[start:end]
        start = end + 1


def all_certain_objects(payload: bytes) -> bool:
    """Whether the C scanner vouches that every line of ``payload`` is a non-empty JSON
    object orjson reads (False only means: ask orjson)."""
    status, _ = check_lines(payload, len(payload))
    return status.count(0) == len(status)


def require_objects(payload: bytes, what: str) -> None:
    """Raise DecodeError unless every line of ``payload`` is a JSON object ("not JSON" wins
    over "not an object", whichever lines they are). The C scanner vouches for the lines
    orjson certainly reads as objects (≈ 0.3 µs a line against ≈ 1.3); orjson decides the
    rest."""
    require_checked_objects(payload, line_status(payload), what)


def line_status(payload: bytes) -> bytes:
    """``check_lines``' status of every line of ``payload`` (one byte a line: its length is
    the line count, counted in the same pass)."""
    status, _ = check_lines(payload, len(payload))
    return status


def require_checked_objects(payload: bytes, status: bytes, what: str) -> None:
    """``require_objects`` with ``line_status(payload)`` already taken."""
    if status.count(0) == len(status):
        return
    unsure = [line for line, s in zip(payload.split(b"\n"), status, strict=True) if s]
    try:
        objects = list(map(_loads, unsure))
    except _JSONDecodeError:
        raise DecodeError(f"{what} line is not JSON") from None
    if any(type(o) is not dict for o in objects):
        raise DecodeError(f"{what} line is not a JSON object")


def decode_text(data: bytes, *, source: str, fmt_suffix: str = "") -> Decoded:
    """The whole record as one ``{"message": ...}`` line; raise DecodeError when not UTF-8."""
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise DecodeError("record is neither a known format nor UTF-8 text") from None
    message = text.rstrip("\r\n")
    if not message.strip():
        return Decoded("text" + fmt_suffix, skipped="record is blank")
    return Decoded(
        "text" + fmt_suffix, (LineBatch(orjson.dumps({"message": message}), 1, source=source),)
    )
