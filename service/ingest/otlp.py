"""OTLP/HTTP logs: ExportLogsServiceRequest (protobuf or OTLP JSON) -> normalized lines (pure).

Each LogRecord becomes one JSON object: ``timestamp`` and ``observed_timestamp`` (ns since
the epoch), ``severity_text``, ``severity_number``, ``message`` (the body; a structured body
stays structured), ``trace_id``/``span_id`` (hex), ``scope``, the record's attributes
flattened into the object, and from the resource ``service`` (service.name), ``host``
(host.name) and every other resource attribute under ``resource``. A record that cannot be
mapped is counted in ``partial_success.rejected_log_records``.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

# No stubs ship for protobuf and pyproject.toml is not ours to extend; the surface is tiny.
from google.protobuf import json_format  # type: ignore[import-untyped,unused-ignore]
from google.protobuf.message import DecodeError  # type: ignore[import-untyped,unused-ignore]
from google.rpc import status_pb2  # type: ignore[import-untyped,unused-ignore]
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from service.errors import RequestError
from service.ingest.lineblock import BlockWriter, LineBlock
from service.ingest.lines import too_many_lines
from service.ingest.otlp_json import load_in_pieces

MAX_VALUE_DEPTH = 32
# OTLP JSON is decoded whole (orjson, then json_format into upb): measured ~440 bytes of RSS
# per JSON object at peak. Collector and SDK exporters send 512-8,192 records a request
# (a few objects each); past this many objects the answer is 413, which keeps a request
# within 2x its size + 64 MB. Protobuf, walked on the wire, has no such cap.
MAX_JSON_OBJECTS = 100_000
JSON_OBJECT_COST = 512
# Fields we set ourselves; an attribute with one of these names moves under "attributes".
RESERVED = frozenset(
    {
        "timestamp",
        "observed_timestamp",
        "severity_text",
        "severity_number",
        "message",
        "trace_id",
        "span_id",
        "scope",
        "service",
        "host",
        "resource",
        "attributes",
        "flags",
        "event_name",
    }
)
MAX_REPORTED = 5


class _TooDeep(ValueError):
    pass


@dataclass
class OtlpLines:
    """Normalized lines of one export request and what was rejected, with a reason."""

    lines: list[bytes] | LineBlock = field(default_factory=list)
    rejected: int = 0
    reasons: list[str] = field(default_factory=list)

    def reject(self, reason: str) -> None:
        self.rejected += 1
        if len(self.reasons) < MAX_REPORTED:
            self.reasons.append(reason)


def parse_protobuf(body: bytes, max_line: int, max_records: int = 1 << 62) -> OtlpLines:
    """Lines of a binary ExportLogsServiceRequest; RequestError(400) when it does not parse,
    RequestError(413) past ``max_records`` log records.

    The request is walked on the wire (ExportLogsServiceRequest.resource_logs = 1,
    ResourceLogs.resource = 1 / scope_logs = 2, ScopeLogs.scope = 1 / log_records = 2) and
    each LogRecord parsed alone, so a request of millions of tiny records never exists as
    one decoded message (a 1.5 KB gzip took serve to 917 MB that way).
    """
    out = OtlpLines()
    walk = _Walk(memoryview(body), max_records, max_line)
    try:
        for rl_start, rl_end in walk.children(0, len(body), 1):
            resource = Resource()
            for start, end in walk.children(rl_start, rl_end, 1, counted=False):
                resource.MergeFromString(bytes(walk.buf[start:end]))
            common = _common_or_reject(resource.attributes)
            for sl_start, sl_end in walk.children(rl_start, rl_end, 2):
                scope = InstrumentationScope()
                for start, end in walk.children(sl_start, sl_end, 1, counted=False):
                    scope.MergeFromString(bytes(walk.buf[start:end]))
                for start, end in walk.children(sl_start, sl_end, 2):
                    walk.take(out, walk.buf[start:end], common, scope.name)
    except (DecodeError, _Malformed, IndexError) as exc:
        raise RequestError(400, f"body is not an OTLP ExportLogsServiceRequest: {exc}") from None
    out.lines = walk.block()
    return out


class _Walk:
    """Reads the request on the wire, counting every message against the per-request cap
    (a million empty ResourceLogs cost a walk too) and keeping lines in one buffer."""

    def __init__(self, buf: memoryview, cap: int, max_line: int) -> None:
        self.buf = buf
        self.cap = cap
        self.max_line = max_line
        self.messages = 0
        self.writer = BlockWriter()

    def children(
        self, i: int, end: int, number: int, *, counted: bool = True
    ) -> Iterator[tuple[int, int]]:
        for n, start, stop in _fields(self.buf, i, end):
            if n != number:
                continue
            if counted:
                self.messages += 1
                if self.messages > self.cap:
                    raise too_many_lines(self.messages, self.cap, "OTLP messages")
            yield start, stop

    def take(
        self, out: OtlpLines, raw: memoryview, common: dict[str, Any] | None, scope: str
    ) -> None:
        try:
            rec = LogRecord.FromString(bytes(raw))
        except DecodeError as exc:  # also what upb raises past its nesting limit
            out.reject(f"log record does not parse: {exc}")
            return
        _take_record(out, self.writer, rec, common, scope, self.max_line)

    def block(self) -> LineBlock:
        return self.writer.block()


class _Malformed(ValueError):
    pass


def _varint(buf: memoryview, i: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[i]
        i += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, i
        shift += 7
        if shift > 63:
            raise _Malformed("varint too long")


def _fields(buf: memoryview, i: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(field number, start, end) of every length-delimited field in ``buf[i:end]``; other
    wire types are skipped, groups refused."""
    while i < end:
        key, i = _varint(buf, i)
        wire = key & 7
        if wire == 2:
            size, i = _varint(buf, i)
            if i + size > end:
                raise _Malformed("truncated field")
            yield key >> 3, i, i + size
            i += size
        elif wire == 0:
            _, i = _varint(buf, i)
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:
            raise _Malformed(f"wire type {wire} is not allowed here")
    if i != end:
        raise _Malformed("truncated field")


def _common_or_reject(attributes: Any) -> dict[str, Any] | None:
    try:
        return _resource_fields(attributes)
    except _TooDeep:
        return None


def _take_record(  # noqa: PLR0917
    out: OtlpLines,
    writer: BlockWriter,
    rec: LogRecord,
    common: dict[str, Any] | None,
    scope: str,
    max_line: int,
) -> None:
    if common is None:
        out.reject("resource attribute nested too deeply")
        return
    line = _line(out, rec, common, scope, max_line)
    if line is not None:
        writer.add(line)


def json_objects(body: bytes) -> int:
    """Objects of an OTLP JSON body at most (its "{" count); RequestError(413) past the cap."""
    count = body.count(b"{")
    if count > MAX_JSON_OBJECTS:
        raise too_many_lines(count, MAX_JSON_OBJECTS, "JSON objects in an OTLP JSON request")
    return count


def parse_json(body: bytes, max_line: int) -> OtlpLines:
    """Lines of an OTLP JSON request (lowerCamelCase or snake_case keys, hex trace ids);
    RequestError(413) past MAX_JSON_OBJECTS objects."""
    json_objects(body)
    try:
        doc = load_in_pieces(body)
    except orjson.JSONDecodeError as exc:
        raise RequestError(400, f"body is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise RequestError(400, "body is not an OTLP ExportLogsServiceRequest object")
    try:
        _hex_ids_to_base64(doc)
        request = json_format.ParseDict(doc, ExportLogsServiceRequest(), ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError, AttributeError) as exc:
        raise RequestError(400, f"body is not an OTLP ExportLogsServiceRequest: {exc}") from None
    except RecursionError:
        raise RequestError(400, "body is nested too deeply") from None
    return normalize(request, max_line)


def _hex_ids_to_base64(doc: dict[str, Any]) -> None:
    """OTLP JSON carries trace and span ids as hex, unlike proto3 JSON's base64 bytes."""
    for rl in _list(doc, "resourceLogs", "resource_logs"):
        for sl in _list(rl, "scopeLogs", "scope_logs"):
            for rec in _list(sl, "logRecords", "log_records"):
                if not isinstance(rec, dict):
                    continue
                for key in ("traceId", "trace_id", "spanId", "span_id"):
                    value = rec.get(key)
                    if isinstance(value, str):
                        try:
                            raw = bytes.fromhex(value)
                        except ValueError:
                            raw = b"\x00"  # wrong length: the record is rejected below
                        rec[key] = base64.b64encode(raw).decode()


def _list(obj: Any, camel: str, snake: str) -> list[Any]:
    if not isinstance(obj, dict):
        return []
    value = obj.get(camel, obj.get(snake))
    return value if isinstance(value, list) else []


def normalize(request: ExportLogsServiceRequest, max_line: int) -> OtlpLines:
    """One JSON line per LogRecord (per-record loop; measured in benchmarks/ingest.py)."""
    out = OtlpLines()
    writer = BlockWriter()
    for rl in request.resource_logs:
        common = _common_or_reject(rl.resource.attributes)
        for sl in rl.scope_logs:
            for rec in sl.log_records:
                _take_record(out, writer, rec, common, sl.scope.name, max_line)
    out.lines = writer.block()
    return out


def _line(
    out: OtlpLines, rec: LogRecord, common: dict[str, Any], scope: str, max_line: int
) -> bytes | None:
    try:
        line = orjson.dumps(_record(rec, common, scope))
    except _TooDeep:
        out.reject(f"attribute or body nested deeper than {MAX_VALUE_DEPTH}")
        return None
    except ValueError as exc:
        out.reject(str(exc))
        return None
    if len(line) > max_line:
        out.reject(f"log record of {len(line)} bytes exceeds the {max_line} byte limit")
        return None
    return line


def _resource_fields(attributes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    other: dict[str, Any] = {}
    for kv in attributes:
        value = any_value(kv.value)
        if kv.key == "service.name":
            fields["service"] = value
        elif kv.key == "host.name":
            fields["host"] = value
        else:
            other[kv.key] = value
    if other:
        fields["resource"] = other
    return fields


def _record(rec: LogRecord, common: dict[str, Any], scope: str) -> dict[str, Any]:
    if len(rec.trace_id) not in (0, 16):
        raise ValueError(f"trace_id must be 16 bytes, got {len(rec.trace_id)}")
    if len(rec.span_id) not in (0, 8):
        raise ValueError(f"span_id must be 8 bytes, got {len(rec.span_id)}")
    obj: dict[str, Any] = {}
    collided: dict[str, Any] = {}
    for kv in rec.attributes:
        target = collided if kv.key in RESERVED else obj
        target[kv.key] = any_value(kv.value)
    if collided:
        obj["attributes"] = collided
    obj.update(common)
    when = rec.time_unix_nano or rec.observed_time_unix_nano
    if when:
        obj["timestamp"] = when
    if rec.observed_time_unix_nano:
        obj["observed_timestamp"] = rec.observed_time_unix_nano
    if rec.severity_text:
        obj["severity_text"] = rec.severity_text
    if rec.severity_number:
        obj["severity_number"] = int(rec.severity_number)
    if rec.HasField("body"):
        obj["message"] = any_value(rec.body)
    if rec.trace_id:
        obj["trace_id"] = rec.trace_id.hex()
    if rec.span_id:
        obj["span_id"] = rec.span_id.hex()
    if rec.flags:
        obj["flags"] = rec.flags
    if rec.event_name:
        obj["event_name"] = rec.event_name
    if scope:
        obj["scope"] = scope
    if "message" not in obj and not rec.attributes and not rec.event_name:
        raise ValueError("log record has neither body nor attributes")
    return obj


def any_value(value: AnyValue, depth: int = 0) -> Any:
    """An OTLP AnyValue as JSON-ready Python; bytes as base64; _TooDeep past the limit."""
    if depth > MAX_VALUE_DEPTH:
        raise _TooDeep
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "int_value":
        return value.int_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "double_value":
        return value.double_value
    if kind == "array_value":
        return [any_value(v, depth + 1) for v in value.array_value.values]
    if kind == "kvlist_value":
        return _kvlist(value.kvlist_value.values, depth + 1)
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    return None


def _kvlist(values: list[KeyValue] | Any, depth: int) -> dict[str, Any]:
    return {kv.key: any_value(kv.value, depth) for kv in values}


def export_response(parsed: OtlpLines, as_json: bool) -> bytes:
    """ExportLogsServiceResponse, with partial_success when some records were rejected."""
    response = ExportLogsServiceResponse()
    if parsed.rejected:
        response.partial_success.rejected_log_records = parsed.rejected
        response.partial_success.error_message = "; ".join(parsed.reasons)
    return _serialize(response, as_json)


def status_body(code: int, message: str, as_json: bool) -> bytes:
    """A google.rpc.Status, the body OTLP/HTTP prescribes for 4xx and 5xx answers."""
    return _serialize(status_pb2.Status(code=code, message=message), as_json)


def _serialize(message: Any, as_json: bool) -> bytes:
    if as_json:
        return orjson.dumps(json_format.MessageToDict(message))
    return bytes(message.SerializeToString())
