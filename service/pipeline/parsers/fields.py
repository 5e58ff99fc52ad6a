"""Delimited formats (CloudFront standard logs, VPC Flow Logs) and key=value, split column-wise."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from pyarrow import compute

from .base import (
    Kind,
    ParseResult,
    array_of,
    as_string,
    first_error,
    null_message_error,
    null_tokens,
    reason_where,
    settled,
    snake_case,
    type_columns,
    typed,
)
from .cut import cut

# pyarrow-stubs type no implicit scalar casts (array + int, str joined with an array): compute is untyped here.
pc: Any = compute


@dataclass(frozen=True)
class Delimited:
    """Lines of ``len(fields)`` values split on ``separator``; ``#`` lines are file headers, not records."""

    name: str
    separator: str
    fields: tuple[tuple[str, Kind], ...]
    min_fields: int

    def __call__(self, message: pa.Array[Any]) -> ParseResult:
        message = as_string(message)
        parts = cut(message, self.separator)
        count = pc.list_value_length(parts)
        header = pc.starts_with(message, "#")
        in_range = pc.and_(
            pc.greater_equal(count, self.min_fields), pc.less_equal(count, len(self.fields))
        )
        ok = pc.fill_null(pc.and_(in_range, pc.invert(header)), False)
        # Field i of a line is values[start + i]: one take per column, no per-line lists.
        # "-" and "" are made null once, on all values, not once per column.
        line_start = pc.if_else(ok, parts.offsets[:-1], pa.scalar(None, pa.int32()))
        values = null_tokens(parts.values)
        raw: dict[str, pa.Array[Any]] = {}
        for i, (name, _) in enumerate(self.fields):
            start = (
                line_start
                if i < self.min_fields
                else pc.if_else(pc.greater(count, i), line_start, None)
            )
            raw[name] = pc.take(values, pc.add(start, i))
        columns, field_error = type_columns(raw, dict(self.fields), ok, cleaned=True)
        wrong_count = pc.binary_join_element_wise(
            f"expected {self._expected()} fields separated by {self.separator!r}, found ",
            pc.cast(count, pa.string()),
            "",
        )
        error = first_error(
            null_message_error(message),
            reason_where(header, f"a {self.name} header line, not a record"),
            pc.if_else(ok, pa.scalar(None, pa.string()), wrong_count),
            field_error,
        )
        return settled(columns, error, ok)

    def _expected(self) -> str:
        n = len(self.fields)
        return str(n) if self.min_fields == n else f"{self.min_fields} to {n}"


# CloudFront standard (access) logs, 33 tab-separated fields in this order; date and time become `time`.
_CLOUDFRONT_FIELDS: tuple[tuple[str, Kind], ...] = (
    ("date", Kind.STRING),
    ("time_of_day", Kind.STRING),
    ("x_edge_location", Kind.STRING),
    ("sc_bytes", Kind.INT),
    ("c_ip", Kind.STRING),
    ("cs_method", Kind.STRING),
    ("cs_host", Kind.STRING),
    ("cs_uri_stem", Kind.STRING),
    ("sc_status", Kind.INT),
    ("cs_referer", Kind.STRING),
    ("cs_user_agent", Kind.STRING),
    ("cs_uri_query", Kind.STRING),
    ("cs_cookie", Kind.STRING),
    ("x_edge_result_type", Kind.STRING),
    ("x_edge_request_id", Kind.STRING),
    ("x_host_header", Kind.STRING),
    ("cs_protocol", Kind.STRING),
    ("cs_bytes", Kind.INT),
    ("time_taken", Kind.FLOAT),
    ("x_forwarded_for", Kind.STRING),
    ("ssl_protocol", Kind.STRING),
    ("ssl_cipher", Kind.STRING),
    ("x_edge_response_result_type", Kind.STRING),
    ("cs_protocol_version", Kind.STRING),
    ("fle_status", Kind.STRING),
    ("fle_encrypted_fields", Kind.STRING),
    ("c_port", Kind.INT),
    ("time_to_first_byte", Kind.FLOAT),
    ("x_edge_detailed_result_type", Kind.STRING),
    ("sc_content_type", Kind.STRING),
    ("sc_content_len", Kind.INT),
    ("sc_range_start", Kind.INT),
    ("sc_range_end", Kind.INT),
)
_CLOUDFRONT = Delimited("CloudFront", "\t", _CLOUDFRONT_FIELDS, min_fields=24)


def cloudfront(message: pa.Array[Any]) -> ParseResult:
    """CloudFront standard logs (legacy, tab-separated); older 24-field lines leave the newer columns null."""
    result = _CLOUDFRONT(message)
    columns = dict(result.columns)
    date, time_of_day = columns.pop("date"), columns.pop("time_of_day")
    when, bad = _joined_time(date, time_of_day)
    if bad is None:  # the other columns are settled already; a null date or time is null here too
        return ParseResult({"time": when, **columns}, result.error)
    error = first_error(
        result.error,
        reason_where(pc.and_(pc.is_null(result.error), bad), "time: not a valid date and time"),
    )
    return settled({"time": when, **columns}, error)


def _joined_time(
    date: pa.Array[Any], time_of_day: pa.Array[Any]
) -> tuple[pa.Array[Any], pa.Array[Any] | None]:
    return typed(pc.binary_join_element_wise(date, time_of_day, "T"), Kind.ISO_TIME)


# Every VPC Flow Logs field (versions 2 to 8) and its type; the default format is the first 14.
VPC_FLOW_FIELDS: dict[str, Kind] = {
    "version": Kind.INT,
    "account-id": Kind.STRING,
    "interface-id": Kind.STRING,
    "srcaddr": Kind.STRING,
    "dstaddr": Kind.STRING,
    "srcport": Kind.INT,
    "dstport": Kind.INT,
    "protocol": Kind.INT,
    "packets": Kind.INT,
    "bytes": Kind.INT,
    "start": Kind.EPOCH_SECONDS,
    "end": Kind.EPOCH_SECONDS,
    "action": Kind.STRING,
    "log-status": Kind.STRING,
    "vpc-id": Kind.STRING,
    "subnet-id": Kind.STRING,
    "instance-id": Kind.STRING,
    "tcp-flags": Kind.INT,
    "type": Kind.STRING,
    "pkt-srcaddr": Kind.STRING,
    "pkt-dstaddr": Kind.STRING,
    "region": Kind.STRING,
    "az-id": Kind.STRING,
    "sublocation-type": Kind.STRING,
    "sublocation-id": Kind.STRING,
    "pkt-src-aws-service": Kind.STRING,
    "pkt-dst-aws-service": Kind.STRING,
    "flow-direction": Kind.STRING,
    "traffic-path": Kind.INT,
    "ecs-cluster-arn": Kind.STRING,
    "ecs-cluster-name": Kind.STRING,
    "ecs-container-instance-arn": Kind.STRING,
    "ecs-container-instance-id": Kind.STRING,
    "ecs-container-id": Kind.STRING,
    "ecs-second-container-id": Kind.STRING,
    "ecs-service-name": Kind.STRING,
    "ecs-task-definition-arn": Kind.STRING,
    "ecs-task-arn": Kind.STRING,
    "ecs-task-id": Kind.STRING,
    "reject-reason": Kind.STRING,
    "resource-id": Kind.STRING,
    "encryption-status": Kind.INT,
}
VPC_FLOW_DEFAULT: tuple[str, ...] = tuple(VPC_FLOW_FIELDS)[:14]


def vpc_flow_parser(fields: Sequence[str]) -> Delimited:
    """A parser for a custom VPC Flow Logs format: field names in order, as ``srcaddr`` or ``${srcaddr}``.

    Raises ValueError naming an unknown or repeated field (a typo would otherwise shift every column).
    """
    names = [re.sub(r"^\$\{(.*)\}$", r"\1", field.strip()) for field in fields]
    if not names:
        raise ValueError("vpc_flow: the field list is empty")
    unknown = [name for name in names if name not in VPC_FLOW_FIELDS]
    if unknown:
        raise ValueError(
            f"vpc_flow: unknown field {unknown[0]!r} (known: {', '.join(VPC_FLOW_FIELDS)})"
        )
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"vpc_flow: field {repeated[0]!r} listed twice")
    typed_fields = tuple((snake_case(name), VPC_FLOW_FIELDS[name]) for name in names)
    return Delimited("VPC Flow Logs", " ", typed_fields, min_fields=len(typed_fields))


vpc_flow = vpc_flow_parser(VPC_FLOW_DEFAULT)

# key=value pairs, values bare or double-quoted with backslash escapes; the text before a key is skipped.
_PAIR = (
    r'(?s)^.*?(?:^|[\s,;])(?P<key>[A-Za-z_][A-Za-z0-9_.\-]*)=(?P<value>"(?:[^"\\]|\\.)*"|[^\s,;"]*)'
)
MAX_PAIRS = 64


def kv(message: pa.Array[Any]) -> ParseResult:
    """``key=value`` pairs as string columns (snake_case keys, sorted; the first of a repeated key wins).

    One vectorised pass per pair position (up to MAX_PAIRS), not one Python call per line.
    """
    message = as_string(message)
    rest = message
    keys: list[pa.Array[Any]] = []
    values: list[pa.Array[Any]] = []
    for _ in range(MAX_PAIRS):
        pair = pc.extract_regex(rest, _PAIR)
        if pair.null_count == len(pair):
            break
        key, value = pair.flatten()
        keys.append(key)
        values.append(_unquote(value))
        rest = pc.replace_substring_regex(rest, _PAIR, "", max_replacements=1)
    spellings: dict[str, set[str]] = {}
    for key in keys:
        for name in pc.unique(key.drop_null()).to_pylist():
            spellings.setdefault(snake_case(name) or "_", set()).add(name)
    columns: dict[str, pa.Array[Any]] = {}
    for column in sorted(spellings):
        wanted = pa.array(sorted(spellings[column]), pa.string())
        matches = [
            pc.if_else(pc.is_in(k, wanted), v, pa.scalar(None, pa.string()))
            for k, v in zip(keys, values, strict=True)
        ]
        columns[column] = pc.coalesce(*matches) if len(matches) > 1 else matches[0]
    none = pc.is_null(keys[0]) if keys else pa.repeat(True, len(message))
    error = first_error(null_message_error(message), reason_where(none, "no key=value pair"))
    return ParseResult(columns, error)


def _unquote(value: pa.Array[Any]) -> pa.Array[Any]:
    quoted = pc.match_substring_regex(value, r'^".*"$')
    inner = pc.replace_substring_regex(
        pc.replace_substring_regex(value, r'^"(.*)"$', r"\1"), r"\\(.)", r"\1"
    )
    return array_of(pc.if_else(quoted, inner, value))
