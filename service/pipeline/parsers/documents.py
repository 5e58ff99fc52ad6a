"""JSON lines: any object (``json``), and the fixed schemas of CloudTrail and AWS WAF records.

orjson decodes one line per Python call: pyarrow's JSON reader is column-wise but fails a whole block
on one bad line and infers types per block (a string that looks like a date becomes a timestamp in
one batch and not in the next), so a batch's schema would depend on its neighbours. Measured in
benchmarks/parsers.py.
"""

from __future__ import annotations

import functools
import gc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any, ParamSpec, TypeVar

import orjson
import pyarrow as pa
from pyarrow import compute

from .base import (
    TIMESTAMP,
    Kind,
    ParseResult,
    array_of,
    as_string,
    first_error,
    reason_where,
    settled,
    snake_case,
    typed,
)

# pyarrow-stubs type no implicit scalar casts (array + int, str joined with an array): compute is untyped here.
pc: Any = compute


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _without_cyclic_gc(parse: Callable[_P, _R]) -> Callable[_P, _R]:
    """``parse`` with Python's cyclic collector paused (and restored as it was): decoded
    records hold no cycles, yet each collection their allocations trigger walks all of them
    (a third of the AWS WAF parse, a quarter of CloudTrail's; benchmarks/parsers.py)."""

    @functools.wraps(parse)
    def run(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        enabled = gc.isenabled()
        gc.disable()
        try:
            return parse(*args, **kwargs)
        finally:
            if enabled:
                gc.enable()

    return run


def _decode(lines: list[str | None]) -> tuple[list[Any], list[str | None]]:
    """Each line's JSON object (None where it is not one) and the reason it is not.

    A block of lines that are all objects (the common case) is decoded by one ``map``, no
    Python step a line; a block with a null, a bad line or another value is decoded
    again line by line for the reasons, so such a line costs its block twice, never the
    flush."""
    objects: list[Any] = []
    errors: list[str | None] = []
    for start in range(0, len(lines), _BLOCK):
        block = lines[start : start + _BLOCK]
        try:
            decoded = list(map(_loads, block))  # TypeError on a null line
        except (orjson.JSONDecodeError, TypeError):
            decoded = []
        if decoded and set(map(type, decoded)) == {dict}:
            objects += decoded
            errors += [None] * len(block)
        else:
            _decode_lines(block, objects, errors)
    return objects, errors


_BLOCK = 4096
_loads: Callable[[Any], Any] = orjson.loads


def _decode_lines(lines: list[str | None], objects: list[Any], errors: list[str | None]) -> None:
    for line in lines:
        if line is None:
            objects.append(None)
            errors.append("message is null")
            continue
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            objects.append(None)
            errors.append(f"invalid JSON: {exc}")
            continue
        if isinstance(value, dict):
            objects.append(value)
            errors.append(None)
        else:
            objects.append(None)
            errors.append(f"not a JSON object: a {type(value).__name__}")


# What orjson decodes a JSON number or boolean to: no commas in their JSON text.
_SCALARS = frozenset((int, float, bool))
_TEXT = frozenset((str, type(None)))
_NULL = pa.scalar(None, pa.string())


def _json_text(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def _column(values: list[Any]) -> pa.Array[Any]:
    """Text, whatever a batch holds: a string as it is, anything else as its JSON text. A
    column's type never depends on the other lines of a flush (Athena reads every file of
    a table with one schema); a pipeline's ``columns`` declares the types it wants.

    A column of numbers and booleans (and nulls), the usual other kind, is written by one
    ``orjson.dumps`` of the list, cut at its commas by Arrow: orjson's own text for each
    value (``str`` and ``repr`` differ from it), no Python call a value (they were two
    thirds of such a column's time). ``null`` is the text of None only, as long as there
    are as many of them (orjson writes an infinite float as ``null`` too)."""
    kinds = set(map(type, values))
    if kinds <= _TEXT:
        return pa.array(values, pa.string())
    if kinds - _TEXT <= _SCALARS and str not in kinds:
        listed = orjson.dumps(values)[1:-1].decode()  # [1,null,2.5]: no spaces
        texts = array_of(pc.split_pattern(pa.array([listed], pa.string()), ",").values)
        if type(None) not in kinds:
            return texts
        nulls = values.count(None)
        null = pc.equal(texts, "null")
        if pc.sum(null).as_py() == nulls:
            return array_of(pc.if_else(null, _NULL, texts))
    return pa.array(
        [None if v is None else v if type(v) is str else _json_text(v) for v in values],
        pa.string(),
    )


@_without_cyclic_gc
def json_object(message: pa.Array[Any]) -> ParseResult:
    """Top-level keys of a JSON object as string columns (snake_case, sorted); anything but a
    string as its JSON text."""
    message = as_string(message)
    objects, errors = _decode(message.to_pylist())
    every = None not in objects  # every line an object
    # Every key once, by C's iteration (set.union reads each dict's keys): no Python step
    # a key of a line. Their order does not matter: columns and spellings are sorted.
    present = objects if every else [obj for obj in objects if obj is not None]
    names = {key: snake_case(key) or "_" for key in set().union(*present)}
    columns: dict[str, pa.Array[Any]] = {}
    for column in sorted(set(names.values())):
        # A line with two spellings of one name takes the one first in code-point order:
        # never the first seen in the flush, so a line's columns depend on it alone.
        keys = sorted(key for key, name in names.items() if name == column)
        if len(keys) == 1 and every:  # the common case: one dict lookup a line, in C
            values = list(map(dict.get, objects, repeat(keys[0])))
        elif len(keys) == 1:
            key = keys[0]
            values = [None if obj is None else obj.get(key) for obj in objects]
        else:
            values = [
                None if obj is None else next((obj[k] for k in keys if k in obj), None)
                for obj in objects
            ]
        columns[column] = _column(values)
    return ParseResult(columns, pa.array(errors, pa.string()))


@dataclass(frozen=True)
class Field:
    """A column read at ``path`` inside the record, as ``kind``: str, int, float, bool, json, iso_time, epoch_millis."""

    column: str
    path: tuple[str, ...]
    kind: str = "str"


def _at(obj: Any, path: Sequence[str]) -> Any:
    """The value at ``path`` inside ``obj``; None when any step is missing or not an object."""
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _column_at(objects: list[Any], path: Sequence[str]) -> list[Any]:
    """``_at`` over every record; the one- and two-key paths of the AWS formats without a call per value."""
    if len(path) == 1:
        key = path[0]
        return [None if obj is None else obj.get(key) for obj in objects]
    if len(path) == 2:
        outer, inner = path
        parents = [None if obj is None else obj.get(outer) for obj in objects]
        return [parent.get(inner) if type(parent) is dict else None for parent in parents]
    return [_at(obj, path) for obj in objects]


def _coerced(raw: list[Any], kind: str) -> tuple[list[Any], list[int]]:
    """The values as ``kind`` and the rows whose value was present but of another type.

    Strings, the common case, are checked in one pass; other kinds go value by value.
    """
    if kind in ("str", "iso_time") and all(v is None or type(v) is str for v in raw):
        return raw, []
    if kind == "json":
        return [None if v is None else _json_text(v) for v in raw], []
    out: list[Any] = []
    wrong: list[int] = []
    for row, value in enumerate(raw):
        coerced, bad = _coerce(value, kind)
        out.append(coerced)
        if bad:
            wrong.append(row)
    return out, wrong


_ARROW = {
    "str": pa.string(),
    "int": pa.int64(),
    "float": pa.float64(),
    "bool": pa.bool_(),
    "json": pa.string(),
}


def _coerce(value: Any, kind: str) -> tuple[Any, bool]:
    """The value as ``kind`` and whether it was present but of another type."""
    if value is None:
        return None, False
    if kind in ("str", "iso_time"):
        return (value, False) if isinstance(value, str) else (None, True)
    if kind == "json":
        return _json_text(value), False
    if kind == "bool":
        return (value, False) if isinstance(value, bool) else (None, True)
    if kind in ("int", "epoch_millis"):
        if isinstance(value, str) and value.lstrip("-").isdigit() and len(value) < 19:
            return int(value), False  # WAF writes some counters as strings
        ok = isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63
        return (value, False) if ok else (None, True)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    return (float(value), False) if ok else (None, True)


@dataclass(frozen=True)
class Record:
    """A JSON record with a fixed schema: ``fields`` always, ``required`` paths or the line is not one."""

    name: str
    fields: tuple[Field, ...]
    required: tuple[str, ...]
    derived: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    derived_columns: tuple[str, ...] = ()

    @_without_cyclic_gc
    def __call__(self, message: pa.Array[Any]) -> ParseResult:
        message = as_string(message)
        objects, errors = _decode(message.to_pylist())
        for row, obj in enumerate(objects):
            missing = next(
                (key for key in self.required if obj is not None and key not in obj), None
            )
            if missing is not None:
                errors[row] = f"not a {self.name} record: no {missing}"
                objects[row] = None
        # Column by column: one comprehension per field over all records, not a call per value.
        values: dict[str, list[Any]] = {}
        for f in self.fields:
            column, wrong = _coerced(_column_at(objects, f.path), f.kind)
            values[f.column] = column
            for row in wrong:
                errors[row] = errors[row] or f"{f.column}: not a {f.kind}"
        derived = [self.derived(obj) if obj is not None and self.derived else {} for obj in objects]
        columns = {f.column: self._typed(f, values[f.column]) for f in self.fields}
        columns.update(
            {c: pa.array([d.get(c) for d in derived], pa.string()) for c in self.derived_columns}
        )
        error: pa.Array[Any] = pa.array(errors, pa.string())
        for f in self.fields:
            if f.kind == "iso_time":
                bad = typed(pa.array(values[f.column], pa.string()), Kind.ISO_TIME)[1]
                if bad is not None:
                    error = first_error(
                        error, reason_where(bad, f"{f.column}: not a valid iso_time")
                    )
        return settled(columns, error)

    @staticmethod
    def _typed(f: Field, values: list[Any]) -> pa.Array[Any]:
        if f.kind == "iso_time":
            return typed(pa.array(values, pa.string()), Kind.ISO_TIME)[0]
        if f.kind == "epoch_millis":
            return array_of(pc.cast(pc.multiply(pa.array(values, pa.int64()), 1000), TIMESTAMP))
        return pa.array(values, _ARROW[f.kind])


def _fields(*specs: tuple[str, str, str]) -> tuple[Field, ...]:
    return tuple(Field(column, tuple(path.split(".")), kind) for column, path, kind in specs)


# CloudTrail records as CloudWatch Logs delivers them: one record per log event.
CLOUDTRAIL = Record(
    "CloudTrail",
    _fields(
        ("event_time", "eventTime", "iso_time"),
        ("event_version", "eventVersion", "str"),
        ("event_source", "eventSource", "str"),
        ("event_name", "eventName", "str"),
        ("event_type", "eventType", "str"),
        ("event_category", "eventCategory", "str"),
        ("aws_region", "awsRegion", "str"),
        ("source_ip_address", "sourceIPAddress", "str"),
        ("user_agent", "userAgent", "str"),
        ("user_identity_type", "userIdentity.type", "str"),
        ("user_identity_arn", "userIdentity.arn", "str"),
        ("user_identity_account_id", "userIdentity.accountId", "str"),
        ("user_identity_principal_id", "userIdentity.principalId", "str"),
        ("user_identity_user_name", "userIdentity.userName", "str"),
        ("user_identity_access_key_id", "userIdentity.accessKeyId", "str"),
        ("user_identity_invoked_by", "userIdentity.invokedBy", "str"),
        ("error_code", "errorCode", "str"),
        ("error_message", "errorMessage", "str"),
        ("request_id", "requestID", "str"),
        ("event_id", "eventID", "str"),
        ("read_only", "readOnly", "bool"),
        ("management_event", "managementEvent", "bool"),
        ("recipient_account_id", "recipientAccountId", "str"),
        ("request_parameters", "requestParameters", "json"),
        ("response_elements", "responseElements", "json"),
        ("resources", "resources", "json"),
        ("tls_details", "tlsDetails", "json"),
    ),
    required=("eventVersion", "eventTime", "eventSource", "eventName"),
)


_WAF_HEADER_COLUMNS = {"host": "http_host", "user-agent": "user_agent"}


def _waf_headers(record: dict[str, Any]) -> dict[str, Any]:
    """``host`` and ``user_agent`` from the request headers (names are case-insensitive in HTTP)."""
    found: dict[str, Any] = {}
    headers = _at(record, ("httpRequest", "headers"))
    if type(headers) is not list:
        return found
    for header in headers:
        if type(header) is not dict:
            continue
        name, value = header.get("name"), header.get("value")
        if type(name) is not str or type(value) is not str:
            continue
        column = _WAF_HEADER_COLUMNS.get(name.lower())
        if column and column not in found:
            found[column] = value
    return found


AWS_WAF = Record(
    "AWS WAF",
    _fields(
        ("time", "timestamp", "epoch_millis"),
        ("format_version", "formatVersion", "int"),
        ("webacl_id", "webaclId", "str"),
        ("action", "action", "str"),
        ("terminating_rule_id", "terminatingRuleId", "str"),
        ("terminating_rule_type", "terminatingRuleType", "str"),
        ("http_source_name", "httpSourceName", "str"),
        ("http_source_id", "httpSourceId", "str"),
        ("client_ip", "httpRequest.clientIp", "str"),
        ("country", "httpRequest.country", "str"),
        ("uri", "httpRequest.uri", "str"),
        ("args", "httpRequest.args", "str"),
        ("http_version", "httpRequest.httpVersion", "str"),
        ("http_method", "httpRequest.httpMethod", "str"),
        ("request_id", "httpRequest.requestId", "str"),
        ("headers", "httpRequest.headers", "json"),
        ("response_code_sent", "responseCodeSent", "int"),
        ("labels", "labels", "json"),
        ("terminating_rule_match_details", "terminatingRuleMatchDetails", "json"),
        ("rule_group_list", "ruleGroupList", "json"),
        ("rate_based_rule_list", "rateBasedRuleList", "json"),
        ("non_terminating_matching_rules", "nonTerminatingMatchingRules", "json"),
        ("ja3_fingerprint", "ja3Fingerprint", "str"),
    ),
    required=("timestamp", "action", "httpRequest"),
    derived=_waf_headers,
    derived_columns=("http_host", "user_agent"),
)
