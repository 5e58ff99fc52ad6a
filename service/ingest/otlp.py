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
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from service.errors import RequestError

MAX_VALUE_DEPTH = 32
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

    lines: list[bytes] = field(default_factory=list)
    rejected: int = 0
    reasons: list[str] = field(default_factory=list)

    def reject(self, reason: str) -> None:
        self.rejected += 1
        if len(self.reasons) < MAX_REPORTED:
            self.reasons.append(reason)


def parse_protobuf(body: bytes, max_line: int) -> OtlpLines:
    """Lines of a binary ExportLogsServiceRequest; RequestError(400) when it does not parse."""
    request = ExportLogsServiceRequest()
    try:
        request.ParseFromString(body)
    except DecodeError as exc:  # also what upb raises past its nesting limit
        raise RequestError(400, f"body is not an OTLP ExportLogsServiceRequest: {exc}") from None
    return normalize(request, max_line)


def parse_json(body: bytes, max_line: int) -> OtlpLines:
    """Lines of an OTLP JSON request (lowerCamelCase or snake_case keys, hex trace ids)."""
    try:
        doc = orjson.loads(body)
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
    for rl in request.resource_logs:
        try:
            common = _resource_fields(rl.resource.attributes)
        except _TooDeep:
            for sl in rl.scope_logs:
                for _ in sl.log_records:
                    out.reject("resource attribute nested too deeply")
            continue
        for sl in rl.scope_logs:
            scope = sl.scope.name
            for rec in sl.log_records:
                try:
                    line = orjson.dumps(_record(rec, common, scope))
                except _TooDeep:
                    out.reject(f"attribute or body nested deeper than {MAX_VALUE_DEPTH}")
                    continue
                except ValueError as exc:
                    out.reject(str(exc))
                    continue
                if len(line) > max_line:
                    out.reject(f"log record of {len(line)} bytes exceeds the {max_line} byte limit")
                    continue
                out.lines.append(line)
    return out


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
