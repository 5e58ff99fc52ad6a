"""Access logs by layout (tokens.py): Apache/Nginx combined, ALB, S3 server access; syslog by RE2 pattern."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import pyarrow as pa
from pyarrow import compute

from .base import (
    Kind,
    ParseResult,
    RegexFormat,
    as_string,
    first_error,
    null_tokens,
    reason_where,
    settled,
    struct_fields,
    typed,
)
from .bsd_time import bsd_times
from .tokens import Field, Layout, split_host_port, split_request

# pyarrow-stubs type no implicit scalar casts (array + int, str joined with an array): compute is untyped here.
pc: Any = compute


def _layout(name: str, required: int, *fields: Field | str) -> Layout:
    return Layout(name, tuple(Field(f) if isinstance(f, str) else f for f in fields), required)


def _q(name: str) -> Field:
    return Field(name, quoted=True)


_CLF_TIME = Field("time", Kind.CLF_TIME, words=2, strip="[]")  # [10/Oct/2000:13:55:36 -0700]


@dataclass(frozen=True)
class AccessLog:
    """A layout whose ``request`` is also split into method, URL and protocol (``request_prefix``
    before each) and whose ``addresses`` (``ip:port`` fields) become ``{name}_ip`` and ``{name}_port``."""

    layout: Layout
    request_prefix: str = ""
    addresses: tuple[str, ...] = ()

    def __call__(self, message: pa.Array[Any]) -> ParseResult:
        result = self.layout(message)
        columns: dict[str, pa.Array[Any]] = {}
        errors = [result.error]
        for name, value in result.columns.items():
            if name not in self.addresses:
                columns[name] = value
                continue
            ip, port_text = split_host_port(value)
            port, bad = typed(port_text, Kind.INT)
            columns[f"{name}_ip"], columns[f"{name}_port"] = ip, port
            if bad is not None:
                errors.append(reason_where(bad, f"{name}_port: not a valid int"))
        columns.update(split_request(result.columns["request"], self.request_prefix))
        if len(errors) == 1:  # the layout settled its lines; the splits of a null are null
            return ParseResult(columns, result.error)
        return settled(columns, first_error(*errors))


COMBINED = AccessLog(
    _layout(
        "combined access log",
        7,
        "client_ip",
        "ident",
        "user",
        _CLF_TIME,
        _q("request"),
        Field("status", Kind.INT),
        Field("bytes", Kind.INT),
        _q("referer"),
        _q("user_agent"),
    )
)

ALB = AccessLog(
    _layout(
        "ALB access log",
        16,
        "type",
        Field("time", Kind.ISO_TIME),
        "elb",
        "client",
        "target",
        Field("request_processing_time", Kind.FLOAT),
        Field("target_processing_time", Kind.FLOAT),
        Field("response_processing_time", Kind.FLOAT),
        Field("elb_status_code", Kind.INT),
        Field("target_status_code", Kind.INT),
        Field("received_bytes", Kind.INT),
        Field("sent_bytes", Kind.INT),
        _q("request"),
        _q("user_agent"),
        "ssl_cipher",
        "ssl_protocol",
        "target_group_arn",
        _q("amzn_trace_id"),
        _q("domain_name"),
        _q("chosen_cert_arn"),
        Field("matched_rule_priority", Kind.INT),
        Field("request_creation_time", Kind.ISO_TIME),
        _q("actions_executed"),
        _q("redirect_url"),
        _q("error_reason"),
        _q("target_port_list"),
        _q("target_status_code_list"),
        _q("classification"),
        _q("classification_reason"),
        "conn_trace_id",
    ),
    request_prefix="request_",
    addresses=("client", "target"),
)

S3_ACCESS = AccessLog(
    _layout(
        "S3 server access log",
        18,
        "bucket_owner",
        "bucket",
        _CLF_TIME,
        "remote_ip",
        "requester",
        "request_id",
        "operation",
        "key",
        _q("request"),
        Field("http_status", Kind.INT),
        "error_code",
        Field("bytes_sent", Kind.INT),
        Field("object_size", Kind.INT),
        Field("total_time", Kind.INT),
        Field("turn_around_time", Kind.INT),
        _q("referer"),
        _q("user_agent"),
        "version_id",
        "host_id",
        "signature_version",
        "cipher_suite",
        "authentication_type",
        "host_header",
        "tls_version",
        "access_point_arn",
        "acl_required",
        "source_region",
    ),
    request_prefix="request_",
)

# RFC 5424 first; a line it does not match is tried as RFC 3164 (BSD), which has no year
# (it is taken from the arrival time: bsd_time.py).
_RFC5424 = RegexFormat(
    "syslog",
    r"(?s)^<(?P<priority>\d{1,3})>(?P<version>\d{1,2}) (?P<time>\S+) (?P<hostname>\S+) "
    r"(?P<app_name>\S+) (?P<proc_id>\S+) (?P<msg_id>\S+) "
    r"(?P<structured_data>-|(?:\[(?:[^\]\\]|\\.)*\])+)(?: (?P<msg>.*))?$",
    {"priority": Kind.INT, "version": Kind.INT, "time": Kind.ISO_TIME},
)
_RFC3164 = (
    r"(?s)^<(?P<priority>\d{1,3})>(?P<bsd_time>[A-Z][a-z]{2} [ 0-9]\d \d\d:\d\d:\d\d) (?P<hostname>\S+) "
    r"(?:(?P<app_name>[^:\[\s]+)(?:\[(?P<proc_id>[^\]\s]*)\])?: )?(?P<msg>.*)$"
)
SYSLOG_COLUMNS = (
    "priority",
    "facility",
    "severity",
    "version",
    "time",
    "hostname",
    "app_name",
    "proc_id",
    "msg_id",
    "structured_data",
    "msg",
)


@dataclass(frozen=True)
class Syslog:
    """RFC 5424, else RFC 3164. An RFC 3164 stamp has no year and no zone: with the lines'
    ``arrival`` times (the engine passes them to a parser that ``reads_arrival``) its
    ``time`` is the stamp in UTC, in the year closest to the arrival (bsd_time.py);
    without them, null."""

    reads_arrival: ClassVar[bool] = True

    def __call__(self, message: pa.Array[Any], arrival: pa.Array[Any] | None = None) -> ParseResult:
        message = as_string(message)
        modern = _RFC5424(message)
        bsd_match = pc.extract_regex(message, _RFC3164)
        bsd = struct_fields(bsd_match)
        from_bsd = pc.and_(pc.is_valid(bsd_match), pc.is_valid(modern.error))
        columns: dict[str, pa.Array[Any]] = {}
        for name in SYSLOG_COLUMNS:
            value = modern.columns.get(name)
            if name in bsd:
                text = (
                    null_tokens(bsd[name]) if name != "priority" else pc.cast(bsd[name], pa.int64())
                )
                value = pc.if_else(from_bsd, text, value)
            if value is not None:
                columns[name] = value
        if arrival is not None:
            bsd_time = bsd_times(bsd["bsd_time"], arrival)
            columns["time"] = pc.if_else(from_bsd, bsd_time, columns["time"])
        priority = columns["priority"]
        columns["facility"] = pc.divide(priority, 8)
        columns["severity"] = pc.subtract(priority, pc.multiply(columns["facility"], 8))
        columns = {name: columns[name] for name in SYSLOG_COLUMNS}
        error = pc.if_else(from_bsd, pa.scalar(None, pa.string()), modern.error)
        error = first_error(error, reason_where(pc.greater(priority, 191), "priority: above 191"))
        return settled(columns, error)


syslog = Syslog()
