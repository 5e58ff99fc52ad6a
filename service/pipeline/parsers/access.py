"""Access logs read by one RE2 pattern each: Apache/Nginx combined, ALB, S3 server access, syslog."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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
    struct_fields,
)

# pyarrow-stubs type no implicit scalar casts (array + int, str joined with an array): compute is untyped here.
pc: Any = compute
# A double-quoted field as Apache, ALB and S3 write it: backslash escapes inside.
Q = r'((?:[^"\\]|\\.)*)'
_REQUEST = r"^(?P<method>[A-Za-z]+) (?P<url>\S+)(?: (?P<protocol>[A-Z]+/[0-9.]+))?$"
_REST = r"(?: .*)?$"  # fields AWS appends in later versions are tolerated, not read


def _quoted(name: str) -> str:
    return f'"(?P<{name}>' + Q[1:]


@dataclass(frozen=True)
class WithRequest:
    """``fmt`` whose quoted ``request`` line also becomes ``{prefix}method``, ``…url``, ``…protocol``."""

    fmt: RegexFormat
    prefix: str

    def __call__(self, message: pa.Array[Any]) -> ParseResult:
        result = self.fmt(message)
        parts = struct_fields(pc.extract_regex(result.columns["request"], _REQUEST))
        columns = dict(result.columns)
        columns.update({f"{self.prefix}{name}": value for name, value in parts.items()})
        return ParseResult(columns, result.error)


COMBINED = WithRequest(
    RegexFormat(
        "combined access log",
        r"^(?P<client_ip>\S+) (?P<ident>\S+) (?P<user>\S+) \[(?P<time>[^\]]+)\] "
        + _quoted("request")
        + r'" (?P<status>\d{3}|-) (?P<bytes>\d+|-)'
        + r"(?: "
        + _quoted("referer")
        + r'" '
        + _quoted("user_agent")
        + r'")?\s*$',
        {"time": Kind.CLF_TIME, "status": Kind.INT, "bytes": Kind.INT},
    ),
    "",
)

ALB = WithRequest(
    RegexFormat(
        "ALB access log",
        r"^(?P<type>\S+) (?P<time>\S+) (?P<elb>\S+) "
        r"(?:(?P<client_ip>\S+):(?P<client_port>\d+)|-) (?:(?P<target_ip>\S+):(?P<target_port>\d+)|-) "
        r"(?P<request_processing_time>\S+) (?P<target_processing_time>\S+) (?P<response_processing_time>\S+) "
        r"(?P<elb_status_code>\d{3}|-) (?P<target_status_code>\d{3}|-) "
        r"(?P<received_bytes>\d+|-) (?P<sent_bytes>\d+|-) "
        + _quoted("request")
        + '" '
        + _quoted("user_agent")
        + r'" (?P<ssl_cipher>\S+) (?P<ssl_protocol>\S+)'
        r"(?: (?P<target_group_arn>\S+) "
        + _quoted("amzn_trace_id")
        + '" '
        + _quoted("domain_name")
        + '" '
        + _quoted("chosen_cert_arn")
        + r'" (?P<matched_rule_priority>\S+) (?P<request_creation_time>\S+) '
        + _quoted("actions_executed")
        + '" '
        + _quoted("redirect_url")
        + '" '
        + _quoted("error_reason")
        + '"(?: '
        + _quoted("target_port_list")
        + '" '
        + _quoted("target_status_code_list")
        + '"(?: '
        + _quoted("classification")
        + '" '
        + _quoted("classification_reason")
        + r'"(?: (?P<conn_trace_id>\S+))?)?)?)?'
        + _REST,
        {
            "time": Kind.ISO_TIME,
            "client_port": Kind.INT,
            "target_port": Kind.INT,
            "request_processing_time": Kind.FLOAT,
            "target_processing_time": Kind.FLOAT,
            "response_processing_time": Kind.FLOAT,
            "elb_status_code": Kind.INT,
            "target_status_code": Kind.INT,
            "received_bytes": Kind.INT,
            "sent_bytes": Kind.INT,
            "matched_rule_priority": Kind.INT,
            "request_creation_time": Kind.ISO_TIME,
        },
    ),
    "request_",
)

S3_ACCESS = WithRequest(
    RegexFormat(
        "S3 server access log",
        r"^(?P<bucket_owner>\S+) (?P<bucket>\S+) \[(?P<time>[^\]]+)\] (?P<remote_ip>\S+) "
        r"(?P<requester>\S+) (?P<request_id>\S+) (?P<operation>\S+) (?P<key>\S+) "
        + _quoted("request")
        + r'" (?P<http_status>\d{3}|-) (?P<error_code>\S+) (?P<bytes_sent>\d+|-) (?P<object_size>\d+|-) '
        r"(?P<total_time>\d+|-) (?P<turn_around_time>\d+|-) "
        + _quoted("referer")
        + '" '
        + _quoted("user_agent")
        + r'" (?P<version_id>\S+)'
        r"(?: (?P<host_id>\S+) (?P<signature_version>\S+) (?P<cipher_suite>\S+) "
        r"(?P<authentication_type>\S+) (?P<host_header>\S+) (?P<tls_version>\S+)"
        r"(?: (?P<access_point_arn>\S+)(?: (?P<acl_required>\S+)(?: (?P<source_region>\S+))?)?)?)?"
        + _REST,
        {
            "time": Kind.CLF_TIME,
            "http_status": Kind.INT,
            "bytes_sent": Kind.INT,
            "object_size": Kind.INT,
            "total_time": Kind.INT,
            "turn_around_time": Kind.INT,
        },
    ),
    "request_",
)

# RFC 5424 first; a line it does not match is tried as RFC 3164 (BSD), which has no year.
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


def syslog(message: pa.Array[Any]) -> ParseResult:
    """RFC 5424, else RFC 3164; ``time`` is null for RFC 3164 (its stamp has no year and no zone)."""
    message = as_string(message)
    modern = _RFC5424(message)
    bsd_match = pc.extract_regex(message, _RFC3164)
    bsd = struct_fields(bsd_match)
    from_bsd = pc.and_(pc.is_valid(bsd_match), pc.is_valid(modern.error))
    columns: dict[str, pa.Array[Any]] = {}
    for name in SYSLOG_COLUMNS:
        value = modern.columns.get(name)
        if name in bsd:
            text = null_tokens(bsd[name]) if name != "priority" else pc.cast(bsd[name], pa.int64())
            value = pc.if_else(from_bsd, text, value)
        if value is not None:
            columns[name] = value
    priority = columns["priority"]
    columns["facility"] = pc.divide(priority, 8)
    columns["severity"] = pc.subtract(priority, pc.multiply(columns["facility"], 8))
    columns = {name: columns[name] for name in SYSLOG_COLUMNS}
    error = pc.if_else(from_bsd, pa.scalar(None, pa.string()), modern.error)
    error = first_error(error, reason_where(pc.greater(priority, 191), "priority: above 191"))
    parsed = pc.is_null(error)
    columns = {
        name: pc.if_else(parsed, value, pa.scalar(None, value.type))
        for name, value in columns.items()
    }
    return ParseResult(columns, error)
