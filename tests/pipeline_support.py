"""Stand-ins of the shape of ``service.pipeline.parsers`` and ``service.pipeline.redact``
(a real, tiny JSON parser and an e-mail redactor), and table builders for pipeline tests."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from service.pipeline.config import load_pipelines
from service.pipeline.engine import Pipelines
from service.schema import TIMESTAMP

# Two pipelines and the default table: the document the flush and consumer tests run.
ROUTES = """
[[pipeline]]
name = "errors"
match = 'severity_number >= 17 or attributes.status >= 500'
table = "errors"

[[pipeline.transform]]
set = { team = "core" }

[[pipeline]]
name = "api"
match = 'service == "api"'
drop = 'message matches "^health"'
table = "api"

[[pipeline.transform]]
hash = ["host"]
key = "0123456789abcdef"
"""
EMAIL = r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"


@dataclass(frozen=True)
class ParseResult:
    columns: dict[str, pa.Array[Any]]
    error: pa.Array[Any]


def json_parser(messages: pa.Array[Any]) -> ParseResult:
    """Top-level keys of a JSON object as columns (text or int64); otherwise the reason."""
    rows: list[dict[str, Any] | None] = []
    errors: list[str | None] = []
    for text in messages.to_pylist():
        try:
            value = orjson.loads(text or "")
        except orjson.JSONDecodeError:
            value = None
        ok = isinstance(value, dict)
        rows.append(value if ok else None)
        errors.append(None if ok else "json: not a JSON object")
    names = sorted({k for r in rows if r for k in r})
    columns = {}
    for name in names:
        values = [None if r is None else r.get(name) for r in rows]
        ints = all(v is None or (isinstance(v, int) and not isinstance(v, bool)) for v in values)
        columns[name] = (
            pa.array(values, pa.int64())
            if ints
            else pa.array([None if v is None else str(v) for v in values], pa.string())
        )
    return ParseResult(columns, pa.array(errors, pa.string()))


def regex_parser(pattern: str) -> Any:
    def parse(messages: pa.Array[Any]) -> ParseResult:
        parts = pc.extract_regex(messages, pattern)
        columns = {f.name: pc.struct_field(parts, f.name) for f in parts.type}
        error = pc.if_else(pc.is_valid(parts), pa.scalar(None, pa.string()), "regex: no match")
        return ParseResult(columns, error)

    return parse


def redact(values: pa.Array[Any], detectors: Sequence[str]) -> pa.Array[Any]:
    out: Any = values
    if "email" in detectors:
        out = pc.replace_substring_regex(out, EMAIL, "[REDACTED:email]")
    return out  # type: ignore[no-any-return]


PARSERS: Mapping[str, Any] = {"json": json_parser}
DETECTORS = frozenset({"email"})


def load(document: str) -> Pipelines:
    """``load_pipelines`` with the stand-ins."""
    return load_pipelines(
        document,
        parsers=PARSERS,
        regex_parser=regex_parser,
        redactor=redact,
        detectors=DETECTORS,
    )


def flush_table(rows: list[dict[str, Any]]) -> pa.Table:
    """A table shaped like the one pipelines see: §4 columns (lineage included) + service."""
    n = len(rows)
    base: dict[str, Any] = {
        "timestamp": [1_790_000_000_000_000 + i for i in range(n)],
        "observed_timestamp": [1_790_000_000_000_000] * n,
        "severity_text": None,
        "severity_number": None,
        "host": None,
        "message": None,
        "trace_id": None,
        "span_id": None,
        "attributes": None,
        "source": None,
        "log_group": None,
        "log_stream": None,
        "kinesis_shard_id": "shardId-000",
        "kinesis_sequence_number": None,
        "kinesis_sub_sequence": None,
        "service": "api",
    }
    types = {
        "timestamp": TIMESTAMP,
        "observed_timestamp": TIMESTAMP,
        "severity_number": pa.int32(),
        "kinesis_sub_sequence": pa.int32(),
    }
    columns = {}
    for name, default in base.items():
        values = default if isinstance(default, list) else [r.get(name, default) for r in rows]
        if name == "kinesis_sequence_number":
            values = [r.get(name, str(49_000_000 + i)) for i, r in enumerate(rows)]
        if name == "kinesis_sub_sequence":
            values = [r.get(name, 0) for r in rows]
        columns[name] = pa.array(values, types.get(name, pa.string()))
    return pa.table(columns)
