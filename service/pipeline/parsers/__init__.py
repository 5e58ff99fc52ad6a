"""Parsers: the ``message`` column in, typed columns and a per-line ``error`` out (DESIGN §12).

Every parser is pure and total: a line it cannot read never raises and never disappears; its
columns are null and ``error`` holds the reason (null where the line parsed).
"""

from __future__ import annotations

import re
from typing import Any

import pyarrow as pa
from pyarrow import compute

from .access import ALB, COMBINED, S3_ACCESS, syslog
from .base import Kind, Parser, ParseResult, RegexFormat
from .documents import AWS_WAF, CLOUDTRAIL, json_object
from .fields import cloudfront, kv, vpc_flow, vpc_flow_parser

# pyarrow-stubs type no implicit scalar casts (array + int, str joined with an array): compute is untyped here.
pc: Any = compute
__all__ = ["PARSERS", "ParseResult", "Parser", "regex_parser", "vpc_flow_parser"]

PARSERS: dict[str, Parser] = {
    "json": json_object,
    "kv": kv,
    "syslog": syslog,
    "apache": COMBINED,
    "nginx": COMBINED,
    "alb": ALB,
    "cloudfront": cloudfront,
    "vpc_flow": vpc_flow,
    "s3_access": S3_ACCESS,
    "cloudtrail": CLOUDTRAIL,
    "aws_waf": AWS_WAF,
}

_GROUP = re.compile(r"\(\?P?<([^>=!]*)>")
_COLUMN = re.compile(r"[a-z_][a-z0-9_]*")


def regex_parser(pattern: str) -> Parser:
    """A parser whose named groups (``(?P<name>…)``) become string columns; unnamed groups are ignored.

    The pattern is RE2 (no lookarounds, no backreferences). Raises ValueError naming the problem:
    a pattern RE2 cannot compile, no named group, or a group name that is not a snake_case column.
    """
    try:
        pc.extract_regex(pa.array([], pa.string()), pattern)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        hint = " (write (?:…) for a group that is not a column)" if "unnamed" in str(exc) else ""
        raise ValueError(f"regex {pattern!r}: {exc}{hint}") from None
    names = _GROUP.findall(pattern)
    if not names:
        raise ValueError(f"regex {pattern!r}: no named group (?P<name>…)")
    for name in names:
        if not _COLUMN.fullmatch(name):
            raise ValueError(
                f"regex {pattern!r}: group name {name!r} is not a snake_case column name"
            )
    return RegexFormat(
        "regex", pattern, {name: Kind.STRING for name in names}, "does not match the regex"
    )
