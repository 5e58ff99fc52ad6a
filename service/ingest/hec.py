"""Splunk HTTP Event Collector: request bodies -> normalized lines, and HEC's answers (pure).

``/services/collector/event`` takes concatenated JSON event objects (not an array), each with
``event`` (a string or an object), and optionally ``time`` (epoch seconds, with a fraction),
``host``, ``source``, ``sourcetype``, ``index`` and ``fields`` (indexed fields). An event
becomes one line: a string event is the ``message``; an object event keeps its keys; ``time``
becomes ``timestamp``; ``host`` stays ``host``; ``source``, ``sourcetype``, ``index`` and the
``fields`` are kept beside them (``fields`` never overwrite the event's own keys).
``/services/collector/raw`` takes lines of text, one message a line, with the same metadata
from the query string.

Unlike Splunk, which indexes the events before a malformed one and refuses the rest, a
request with any malformed event is refused whole (400, code 6 and ``invalid-event-number``):
nothing of it is stored, so a sender that retries after fixing it sends no duplicates.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from service.errors import RequestError
from service.ingest.lineblock import BlockWriter, LineBlock
from service.ingest.lines import parse_text, too_many_lines

PREFIX = "/services/collector"
# (HTTP status, HEC code, HEC text) as Splunk answers them.
SUCCESS = {"text": "Success", "code": 0}
HEALTHY = {"text": "HEC is healthy", "code": 17}
UNHEALTHY = {"text": "HEC is unhealthy, queues are full", "code": 18}
TOKEN_REQUIRED = (401, {"text": "Token is required", "code": 2})
INVALID_TOKEN = (403, {"text": "Invalid token", "code": 4})
NO_DATA = 5
INVALID_FORMAT = 6
EVENT_REQUIRED = 12
EVENT_BLANK = 13
SERVER_BUSY = 9
INTERNAL = 8
# Keys of an event object that are metadata, not the event's own fields.
META = ("host", "source", "sourcetype", "index")
_decoder = json.JSONDecoder()


class HecError(RequestError):
    """A refused request, with HEC's code and the 0-based number of the event at fault."""

    def __init__(self, code: int, text: str, event_number: int | None = None) -> None:
        super().__init__(400, text)
        self.code = code
        self.event_number = event_number


@dataclass
class HecLines:
    lines: LineBlock = field(default_factory=lambda: LineBlock(b"", []))


def error_body(status: int, reason: str, *, key_presented: bool) -> tuple[int, dict[str, Any]]:
    """(status, body) of a refusal in HEC's dialect; a 401 says only whether a token came."""
    if status == 401:
        return INVALID_TOKEN if key_presented else TOKEN_REQUIRED
    if status in (429, 503):
        return 503, {"text": f"Server is busy: {reason}", "code": SERVER_BUSY}
    if status >= 500:
        return status, {"text": f"Internal server error: {reason}", "code": INTERNAL}
    return status, {"text": reason, "code": INVALID_FORMAT}


def hec_error_body(exc: HecError) -> dict[str, Any]:
    body: dict[str, Any] = {"text": exc.reason, "code": exc.code}
    if exc.event_number is not None:
        body["invalid-event-number"] = exc.event_number
    return body


def query_meta(query: Mapping[str, str]) -> dict[str, str]:
    """The metadata a raw request (or an event without its own) takes from the query string."""
    return {k: query[k] for k in META if query.get(k)}


def parse_events(
    body: bytes, max_line: int, max_events: int, defaults: Mapping[str, str]
) -> HecLines:
    """Lines of concatenated HEC event objects; HecError for the first malformed event,
    RequestError(413) past ``max_events`` events or for a line over ``max_line``.

    Events are cut at each ``}`` followed by ``{`` (whitespace between allowed) and read by
    orjson; when a cut falls inside a string, the body is read again by json's raw_decode,
    the only stdlib decoder that stops at the end of a value (~4x slower). Both are a
    per-event Python loop, the price of HEC's framing (measured in docs/http-api.md).
    """
    writer = BlockWriter()
    try:
        number = _write_events(writer, _framed(body), max_line, max_events, defaults)
    except _Unframed:
        writer = BlockWriter()
        number = _write_events(writer, _decoded(body), max_line, max_events, defaults)
    if not number:
        raise HecError(NO_DATA, "No data")
    return HecLines(writer.block())


class _Unframed(ValueError):
    """A cut between events fell inside a value: read the body the slow way."""


_BETWEEN = re.compile(rb"\}\s*\{")


def _framed(body: bytes) -> Iterator[object]:
    start = 0
    for cut in _BETWEEN.finditer(body):
        end = cut.start() + 1
        try:
            yield orjson.loads(body[start:end])
        except orjson.JSONDecodeError:
            raise _Unframed from None
        start = cut.end() - 1
    if not body[start:].isspace() and start < len(body):
        try:
            yield orjson.loads(body[start:])
        except orjson.JSONDecodeError:
            raise _Unframed from None


def _decoded(body: bytes) -> Iterator[object]:
    try:
        text = body.decode()
    except UnicodeDecodeError:
        raise HecError(INVALID_FORMAT, "Invalid data format: body is not UTF-8", 0) from None
    i, n, number = 0, len(text), 0
    while True:
        while i < n and text[i].isspace():
            i += 1
        if i >= n:
            return
        try:
            value, i = _decoder.raw_decode(text, i)
        except (json.JSONDecodeError, RecursionError):
            raise HecError(INVALID_FORMAT, "Invalid data format", number) from None
        yield value
        number += 1


def _write_events(
    writer: BlockWriter,
    values: Iterator[object],
    max_line: int,
    max_events: int,
    defaults: Mapping[str, str],
) -> int:
    number = 0
    for value in values:
        if number >= max_events:
            raise too_many_lines(number + 1, max_events, "events")
        line = orjson.dumps(event_line(value, number, defaults))
        if len(line) > max_line:
            raise RequestError(
                413, f"event {number} of {len(line)} bytes exceeds the {max_line} byte limit"
            )
        writer.add(line)
        number += 1
    return number


def event_line(value: object, number: int, defaults: Mapping[str, str]) -> dict[str, Any]:
    """The normalized line of one event object; HecError when it is not a valid event."""
    if not isinstance(value, dict):
        raise HecError(INVALID_FORMAT, "Invalid data format", number)
    if "event" not in value:
        raise HecError(EVENT_REQUIRED, "Event field is required", number)
    event = value["event"]
    if event is None or event in ("", {}):
        raise HecError(EVENT_BLANK, "Event field cannot be blank", number)
    line: dict[str, Any] = dict(event) if isinstance(event, dict) else {"message": event}
    if "time" in value:
        line.setdefault("timestamp", _epoch(value["time"], number))
    for key in META:
        if isinstance(value.get(key), str) and value[key]:
            line.setdefault(key, value[key])
        elif key in defaults:
            line.setdefault(key, defaults[key])
    fields = value.get("fields")
    if fields is not None and not isinstance(fields, dict):
        raise HecError(INVALID_FORMAT, "Invalid data format: fields must be an object", number)
    for key, item in (fields or {}).items():
        line.setdefault(key, item)
    return line


def _epoch(value: object, number: int) -> float | int:
    """HEC's ``time``: epoch seconds, a number or a numeric string."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise HecError(INVALID_FORMAT, "Invalid data format: time must be epoch seconds", number)


def parse_raw(body: bytes, max_line: int, max_lines: int, meta: Mapping[str, str]) -> HecLines:
    """One message a line (``lines.parse_text``), each with the request's ``meta``; blank lines
    are skipped. A line that is not UTF-8 refuses the request (HecError, code 6), as does no
    line at all (code 5); RequestError(413) over a limit."""
    parsed = parse_text(body, max_line, max_lines, meta)
    if parsed.errors:
        first = parsed.errors[0]
        if parsed.rejected_by_reason.get("too_long"):
            raise RequestError(413, f"a line exceeds the {max_line} byte limit")
        number = int(str(first["line"])) - 1
        raise HecError(INVALID_FORMAT, f"Invalid data format: {first['reason']}", number)
    if not parsed.lines:
        raise HecError(NO_DATA, "No data")
    return HecLines(LineBlock.of(parsed.lines) if isinstance(parsed.lines, list) else parsed.lines)


def ack_answer(body: bytes) -> dict[str, Any]:
    """The answer to /services/collector/ack: every id asked about is acknowledged, since a
    200 to the events was only sent once they were durable."""
    try:
        asked = orjson.loads(body).get("acks", [])
        ids = [int(a) for a in asked]
    except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
        raise HecError(INVALID_FORMAT, 'Invalid data format: expected {"acks": [ids]}') from None
    return {"acks": {str(a): True for a in ids}}


def channel(headers: Mapping[str, str], query: Mapping[str, str]) -> str:
    """The request's data channel (``X-Splunk-Request-Channel`` or ``?channel=``), or ''."""
    return headers.get("X-Splunk-Request-Channel", "") or query.get("channel", "")
