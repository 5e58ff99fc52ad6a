"""Parse a request body into normalized log lines (pure).

Every accepted line is one JSON object (bytes, no newline). Valid lines are kept exactly as
sent (no re-serialisation); text lines become ``{"message": ...}``. Invalid lines are
reported by 1-based line number with a precise reason; nothing is dropped silently.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from service.errors import RequestError
from service.ingest.lineblock import BlockWriter, LineBlock
from service.scanner import check_lines

MAX_REPORTED_ERRORS = 100
# Bodies are parsed in pieces of about this many bytes, so the Python objects of one piece
# (a bytes or str per line, a dict per JSON element) are all that exist at a time.
PIECE = 64 * 1024
# What one accepted line costs beyond its bytes while a request is held: its end offset in
# the LineBlock (8), text's {"message":""} wrapper (14) and slack for escapes.
LINE_OVERHEAD = 48


def too_many_lines(count: int, limit: int, what: str = "lines") -> RequestError:
    return RequestError(413, f"request holds more than {limit} {what}, over the per-request limit")


def pieces(body: bytes, size: int = PIECE) -> Iterator[bytes]:
    """``body`` cut at a newline every ``size`` bytes or so (the newline dropped): the same
    lines as ``body.split(b"\\n")``, a piece at a time."""
    start, n = 0, len(body)
    while True:
        cut = body.find(b"\n", start + size) if start + size < n else -1
        if cut < 0:
            yield body[start:]
            return
        yield body[start:cut]
        start = cut + 1


# count_byte compares this many bytes at a time (the temporary is one byte per byte).
_COUNT_PIECE = 1024 * 1024


def count_byte(body: bytes, marker: bytes) -> int:
    """How often the single byte ``marker`` occurs in ``body``. ``bytes.count`` walks one
    byte at a time (~0.5 ns a byte, measured: a quarter of the C scanner's whole cost at
    360-byte lines, paid once per count); numpy compares 1 MiB at a time, ~6x faster."""
    view = np.frombuffer(body, dtype=np.uint8)
    code = marker[0]
    return sum(
        int(np.count_nonzero(view[i : i + _COUNT_PIECE] == code))
        for i in range(0, len(view), _COUNT_PIECE)
    )


def count_lines(body: bytes, limit: int) -> int:
    """Lines of ``body`` (blank ones too); RequestError(413) over ``limit``."""
    count = count_byte(body, b"\n") + 1
    if count > limit:
        raise too_many_lines(count, limit)
    return count


@dataclass
class ParsedLines:
    lines: list[bytes] | LineBlock = field(default_factory=list)
    errors: list[dict[str, object]] = field(default_factory=list)
    rejected: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)

    def keep(self, line: bytes) -> None:
        if isinstance(self.lines, LineBlock):  # a block is only ever a whole, valid body
            raise TypeError("a LineBlock takes no more lines")
        self.lines.append(line)

    def reject(self, number: int, reason: str, kind: str) -> None:
        self.rejected += 1
        self.rejected_by_reason[kind] = self.rejected_by_reason.get(kind, 0) + 1
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append({"line": number, "reason": reason})

    def answer(self) -> dict[str, object]:
        """The response body of DESIGN §10."""
        return {"accepted": len(self.lines), "rejected": self.rejected, "errors": self.errors}


def _json_error(exc: orjson.JSONDecodeError) -> tuple[str, str]:
    text = str(exc)
    if "utf-8" in text.lower():
        return "invalid UTF-8", "invalid_utf8"
    if "recursion" in text.lower() or "depth limit" in text.lower():
        return "JSON nested too deeply", "too_deep"
    return f"invalid JSON: {text}", "invalid_json"


def parse_ndjson(body: bytes, max_line: int, max_lines: int = 1 << 62) -> ParsedLines:
    """One JSON object per line; blank lines are ignored; RequestError(413) past
    ``max_lines`` lines.

    The C scanner (service/_scan.c, ~0.3 µs a line against orjson's ~1.3) vouches for the
    lines orjson certainly reads as non-empty objects; the rest take orjson's per-line check,
    which names the reason of each refusal exactly as before.
    """
    if body.endswith(b"\n"):  # NDJSON's last newline ends a line, it does not start one
        body = body[:-1]
    count_lines(body, max_lines)
    status, ends = check_lines(body, max_line)
    out = ParsedLines()
    if status.count(0) == len(status):  # every line vouched for: the body is the block
        out.lines = LineBlock(body, memoryview(ends).cast("q"))
        return out
    writer = BlockWriter()
    number = 0
    for piece in pieces(body):
        kept: list[bytes] = []
        for line in piece.split(b"\n"):
            unsure = status[number]
            number += 1
            if not unsure:
                kept.append(line)
            elif stripped := line.strip():
                _, problem = load_object(stripped, max_line)
                if problem is None:
                    kept.append(stripped)
                else:
                    out.reject(number, *problem)
        writer.extend(kept)
    out.lines = writer.block()
    return out


def check_object(line: bytes, max_line: int) -> tuple[str, str] | None:
    """None when ``line`` is a non-empty JSON object within ``max_line``, else (reason, kind)."""
    return load_object(line, max_line)[1]


def load_object(line: bytes, max_line: int) -> tuple[dict[str, Any] | None, tuple[str, str] | None]:
    """(the object, None) when ``line`` is a non-empty JSON object within ``max_line``,
    else (None, (reason, kind))."""
    if len(line) > max_line:
        return None, (f"line of {len(line)} bytes exceeds the {max_line} byte limit", "too_long")
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return None, _json_error(exc)
    if not isinstance(value, dict):
        return None, (f"line is a JSON {type(value).__name__}, not an object", "not_object")
    if not value:
        return None, ("line is an empty JSON object", "empty")
    return value, None


def body_shape(body: bytes, max_line: int, declared_json: bool) -> str:
    """How to read a body whose label is ``application/json`` (``declared_json``) or absent
    or libcurl's default ``application/x-www-form-urlencoded``: "json" (one document: an
    array, or an object on one line or pretty-printed), "ndjson" (several lines, one JSON
    value a line: Fluent Bit < 3.0 ``json_lines``, syslog-ng ``http()``) or "text".

    Bounded work: at most ``max_line`` bytes are parsed to decide, so a 64 MiB body costs
    no more here than one line; the parser chosen then applies every limit as usual.
    """
    start = len(body) - len(body.lstrip())
    end = len(body.rstrip())
    first = body[start : start + 1]
    if first not in (b"{", b"["):
        return "json" if declared_json else "text"
    one_line = body.find(b"\n", start, end) < 0
    if declared_json and (first == b"[" or one_line):
        return "json"
    if end - start <= max_line:
        if _parses(body[start:end]):
            return "json"  # one document, perhaps pretty-printed
    elif first == b"[" and body[end - 1 : end] == b"]":
        return "json"  # an array too long to check here: its parser reads it a piece at a time
    if declared_json:
        return "ndjson"
    cut = body.find(b"\n", start, start + max_line + 1)
    return "ndjson" if cut > 0 and _parses(body[start:cut]) else "text"


def _parses(text: bytes) -> bool:
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return True


_OBJECT_END = re.compile(rb"\}\s*,")
_COMMA = re.compile(rb",")
_TRIES = 4


def parse_json(body: bytes, max_line: int, max_lines: int = 1 << 62) -> ParsedLines:
    """A JSON object (one line) or an array of objects (element i is line i); RequestError(413)
    past ``max_lines`` elements.

    An array is parsed a piece at a time: a piece ends at a comma that closes a top-level
    element, found by parsing ``[piece]`` (a cut inside a string or a nested value never
    parses, as JSON is read left to right), so only one piece's objects exist at a time.
    """
    out = ParsedLines()
    text = body if body[:1] == b"[" and body[-1:] == b"]" else body.strip()
    if not text.startswith(b"["):
        value, problem = load_object(text, max_line)
        if problem is None:
            out.lines = LineBlock.of([text if text.startswith(b"{") else orjson.dumps(value)])
        else:
            out.reject(1, *problem)
        return out
    writer = BlockWriter()
    number = 0
    try:
        for items in array_pieces(text):
            for item in items:
                number += 1
                if number > max_lines:
                    raise too_many_lines(number, max_lines, "elements")
                line = _element_line(out, number, item, max_line)
                if line is not None:
                    writer.add(line)
    except orjson.JSONDecodeError as exc:
        out = ParsedLines()  # the body is not JSON: nothing of it is taken
        out.reject(1, *_json_error(exc))
        return out
    out.lines = writer.block()
    return out


def _element_line(out: ParsedLines, number: int, item: object, max_line: int) -> bytes | None:
    if not isinstance(item, dict):
        out.reject(number, f"element is a JSON {type(item).__name__}, not an object", "not_object")
        return None
    if not item:
        out.reject(number, "element is an empty JSON object", "empty")
        return None
    line = orjson.dumps(item)
    if len(line) > max_line:
        out.reject(
            number, f"element of {len(line)} bytes exceeds the {max_line} byte limit", "too_long"
        )
        return None
    return line


def array_pieces(text: bytes) -> Iterator[list[Any]]:
    """The elements of the JSON array ``text``, a piece at a time; JSONDecodeError if it is
    not one. Failed cuts are bounded: a few tries, then a window four times wider. Offsets
    into ``text``, never a copy of it (it may be 64 MiB)."""
    if not text.endswith(b"]"):
        orjson.loads(text)  # raises with orjson's own reason
    pos, end = 1, len(text) - 1
    while pos < end:
        window = PIECE
        items: list[Any] | None = None
        while items is None:
            if pos + window >= end:
                cut = end
                items = _piece(text, pos, end, pos > 1)
                break
            for cut in _cuts(text, pos + window, end):
                try:
                    items = _piece(text, pos, cut, pos > 1)
                    break
                except orjson.JSONDecodeError:
                    continue
            window *= 4
        yield items
        pos = cut + 1


def _piece(text: bytes, start: int, end: int, after_comma: bool) -> list[Any]:
    piece = text[start:end]
    if after_comma and not piece.strip():  # "[x, ]" or "[x,,y]": a comma with no element
        raise orjson.JSONDecodeError("expected a value after ','", "", start)
    items = orjson.loads(b"[" + piece + b"]")
    assert isinstance(items, list)
    return items


def _cuts(text: bytes, start: int, end: int) -> list[int]:
    """Up to a few commas after ``start`` that may close a top-level element."""
    if start >= end:
        return []
    for pattern in (_OBJECT_END, _COMMA):
        found = [
            m.end() - 1
            for _, m in zip(range(_TRIES), pattern.finditer(text, start, end), strict=False)
        ]
        if found:
            return found
    return []


def parse_text(
    body: bytes, max_line: int, max_lines: int = 1 << 62, fields: Mapping[str, str] | None = None
) -> ParsedLines:
    """One message per line (with ``fields`` beside it); blank lines are ignored; bytes must
    be UTF-8; RequestError(413) past ``max_lines`` lines (blank ones count: they cost a scan
    too)."""
    extra = dict(fields or {})
    count_lines(body, max_lines)
    out = ParsedLines()
    writer = BlockWriter()
    number = 0
    for piece in pieces(body):
        for raw in piece.split(b"\n"):
            number += 1
            line = raw.rstrip(b"\r")
            if not line.strip():
                continue
            if len(line) > max_line:
                out.reject(
                    number,
                    f"line of {len(line)} bytes exceeds the {max_line} byte limit",
                    "too_long",
                )
                continue
            try:
                text = line.decode()
            except UnicodeDecodeError:
                out.reject(number, "invalid UTF-8", "invalid_utf8")
                continue
            writer.add(orjson.dumps({"message": text, **extra}))
    out.lines = writer.block()
    return out
