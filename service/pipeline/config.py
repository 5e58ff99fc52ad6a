"""The pipeline document (TOML, docs/pipelines.md) -> validated, compiled ``Pipelines`` (pure).

``load_pipelines`` raises ``PipelineConfigError`` whose message is one line naming the
pipeline, the step and the field: ``pipeline 'waf', step 'parse', field 'regex': ...``.
The parser registry and the redactor are parameters; by default they come from
``service.pipeline.parsers`` and ``service.pipeline.redact``.
"""

from __future__ import annotations

import contextlib
import importlib
import re
import tomllib
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from service.errors import TidewayError
from service.pipeline import transform as tf
from service.pipeline.condition import ConditionError, compile_condition
from service.pipeline.engine import (
    DEFAULT_TABLE,
    FIXED_COLUMNS,
    LINEAGE_COLUMNS,
    TEXT_COLUMNS,
    VERSION_COLUMN,
    Parser,
    Pipeline,
    Pipelines,
    Redactor,
)
from service.pipeline.transform import PARSE_ERROR
from service.schema import COLUMN_NAMES, PARTITION_COLUMNS

NAME = r"^[a-z][a-z0-9_]{0,62}$"  # a pipeline, table or column name: safe in paths and SQL
_TRANSFORMS = ("rename", "drop", "set", "cast", "hash")
# Every flush's plan document pins the whole text in the lease item (DynamoDB items stop at
# 400 KB, two dedupe states take ~240 KB of it): the document stays far below that.
MAX_DOCUMENT_BYTES = 64 * 1024
_UNION_TAGS = frozenset(("str", "int", "float", "bool", "RegexModel"))


class PipelineConfigError(TidewayError):
    """The pipeline document is not valid; the message is one line naming where."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class TransformModel(_Model):
    rename: dict[str, str] | None = None
    drop: list[str] | None = None
    set: dict[str, str | int | float | bool] | None = None
    cast: dict[str, str] | None = None
    hash: list[str] | None = None
    key: str | None = Field(default=None, min_length=16)


class RegexModel(_Model):
    regex: str


class PipelineModel(_Model):
    name: str = Field(pattern=NAME)
    match: str | None = None
    parse: str | RegexModel | None = None
    transform: list[TransformModel] = []
    redact: list[str] = []
    drop: str | None = None
    sample: int = Field(default=1, ge=1, le=1_000_000)
    table: str = Field(default=DEFAULT_TABLE, pattern=NAME)
    columns: dict[str, str] = {}  # declared types: the same in every flush (declared.py)


class DocumentModel(_Model):
    pipeline: list[PipelineModel] = []

    @field_validator("pipeline")
    @classmethod
    def _unique(cls, pipelines: list[PipelineModel]) -> list[PipelineModel]:
        seen: set[str] = set()
        for p in pipelines:
            if p.name in seen:
                raise ValueError(f"pipeline name {p.name!r} used twice")
            seen.add(p.name)
        return pipelines


def load_pipelines(
    document: str,
    *,
    parsers: Mapping[str, Parser] | None = None,
    regex_parser: Any = None,
    redactor: Redactor | None = None,
    detectors: frozenset[str] | None = None,
) -> Pipelines:
    """Validate and compile ``document``; raise PipelineConfigError (one line)."""
    size = len(document.encode())
    if size > MAX_DOCUMENT_BYTES:
        raise PipelineConfigError(
            f"document, field 'size': {size} bytes, more than {MAX_DOCUMENT_BYTES} allowed"
        )
    try:
        raw = tomllib.loads(document)
    except tomllib.TOMLDecodeError as exc:
        raise PipelineConfigError(f"not TOML: {exc}") from None
    try:
        model = DocumentModel.model_validate(raw)
    except ValidationError as exc:
        raise PipelineConfigError(_describe(exc, raw)) from None
    needs_parsers = any(p.parse is not None for p in model.pipeline)
    needs_redact = any(p.redact for p in model.pipeline)
    if needs_parsers and (parsers is None or regex_parser is None):
        module = _module("service.pipeline.parsers")
        parsers = module.PARSERS if parsers is None else parsers
        regex_parser = module.regex_parser if regex_parser is None else regex_parser
    if needs_redact and (redactor is None or detectors is None):
        module = _module("service.pipeline.redact")
        redactor = module.redact if redactor is None else redactor
        detectors = module.DETECTORS if detectors is None else detectors
    compiled = tuple(
        _compile(p, parsers or {}, regex_parser, detectors or frozenset()) for p in model.pipeline
    )
    return Pipelines(document, compiled, redactor)


def _module(name: str) -> Any:
    """The default parsers or detectors, imported on first need (a document without parse or
    redact never loads them); a missing one is a configuration error, not a crash."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise PipelineConfigError(f"document: {name} unavailable: {exc}") from None


def _compile(
    p: PipelineModel, parsers: Mapping[str, Parser], regex_parser: Any, detectors: frozenset[str]
) -> Pipeline:
    def fail(step: str, field: str, reason: str) -> PipelineConfigError:
        return PipelineConfigError(f"pipeline {p.name!r}, step {step!r}, field {field!r}: {reason}")

    def condition(step: str, text: str | None) -> Any:
        if text is None:
            return None
        try:
            return compile_condition(text)
        except ConditionError as exc:
            raise fail(step, step, str(exc)) from None

    parse: Parser | None = None
    if isinstance(p.parse, str):
        if p.parse not in parsers:
            known = ", ".join(sorted(parsers)) or "none installed"
            raise fail("parse", "parse", f"unknown parser {p.parse!r} (known: {known})")
        parse = parsers[p.parse]
    elif isinstance(p.parse, RegexModel):
        parse = _regex(p.parse.regex, regex_parser, lambda r: fail("parse", "regex", r))
    unknown = sorted(set(p.redact) - detectors)
    if unknown:
        known = ", ".join(sorted(detectors)) or "none installed"
        raise fail("redact", "redact", f"unknown detector {unknown[0]!r} (known: {known})")
    steps = tuple(_step(i, t, fail) for i, t in enumerate(p.transform, 1))
    return Pipeline(
        name=p.name,
        table=p.table,
        match=condition("match", p.match),
        parse=parse,
        steps=steps,
        redact=tuple(p.redact),
        drop=condition("drop", p.drop),
        sample=p.sample,
        columns=_declared(p.columns, fail),
    )


def _declared(columns: dict[str, str], fail: Any) -> tuple[tuple[str, str], ...]:
    """The ``columns`` table checked: snake_case names that are not the fixed ones, known types."""
    for name, type_name in columns.items():
        if not re.match(NAME, name):
            raise fail("columns", name, "column names are lowercase snake_case")
        if name in COLUMN_NAMES or name in FIXED_COLUMNS or name in PARTITION_COLUMNS:
            raise fail("columns", name, f"column {name!r} has its own type (DESIGN §4)")
        if name in (VERSION_COLUMN, PARSE_ERROR):
            raise fail("columns", name, f"column {name!r} is written by the pipeline")
        if type_name not in tf.CAST_TYPES:
            known = ", ".join(tf.CAST_TYPES)
            raise fail("columns", name, f"unknown type {type_name!r} (known: {known})")
    return tuple(columns.items())


def _regex(pattern: str, regex_parser: Any, fail: Any) -> Parser:
    if not re.search(r"\(\?P<[A-Za-z_]\w*>", pattern):
        raise fail("the pattern has no named group (?P<name>...)")
    try:
        pc.extract_regex(pa.array([""], pa.string()), pattern)  # RE2 checks it here, once
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise fail(f"not a valid RE2 pattern: {str(exc).splitlines()[0]}") from None
    try:
        parser: Parser = regex_parser(pattern)
    except ValueError as exc:  # the parser's own checks (service.pipeline.parsers)
        raise fail(str(exc).splitlines()[0] if str(exc) else "not a usable pattern") from None
    return parser


def _step(index: int, t: TransformModel, fail: Any) -> tf.Step:
    given = [k for k in _TRANSFORMS if getattr(t, k) is not None]
    step = f"transform[{index}]"
    if len(given) != 1:
        raise fail(step, "/".join(_TRANSFORMS), f"give exactly one of them (found {len(given)})")
    kind = given[0]
    step = f"transform[{index}] ({kind})"
    if kind != "hash" and t.key is not None:
        raise fail(step, "key", "only hash takes a key")

    def names(values: Sequence[str], *, writes: bool, canonical_ok: bool = False) -> None:
        for name in values:
            if not re.match(NAME, name):
                raise fail(step, name, "column names are lowercase snake_case")
            fixed = name in FIXED_COLUMNS or name in PARTITION_COLUMNS or name == VERSION_COLUMN
            if fixed or (name in COLUMN_NAMES and not (canonical_ok and name in TEXT_COLUMNS)):
                raise fail(step, name, f"column {name!r} cannot be changed by {kind}")
            if writes and name in LINEAGE_COLUMNS:
                raise fail(step, name, "lineage columns cannot be written")

    if kind == "rename":
        assert t.rename is not None
        names(list(t.rename), writes=False)
        names(list(t.rename.values()), writes=True)
        return tf.Step(kind, tf.rename(t.rename))
    if kind == "drop":
        assert t.drop is not None
        names(t.drop, writes=False)
        return tf.Step(kind, tf.drop(tuple(t.drop)))
    if kind == "set":
        assert t.set is not None
        names(list(t.set), writes=True, canonical_ok=True)
        return tf.Step(kind, tf.assign(t.set, TEXT_COLUMNS))
    if kind == "cast":
        assert t.cast is not None
        names(list(t.cast), writes=True)
        for name, type_name in t.cast.items():
            if type_name not in tf.CAST_TYPES:
                known = ", ".join(tf.CAST_TYPES)
                raise fail(step, name, f"unknown type {type_name!r} (known: {known})")
        return tf.Step(kind, tf.cast(t.cast))
    assert t.hash is not None
    names(t.hash, writes=True, canonical_ok=True)
    if t.key is None:
        raise fail(step, "key", "hash needs a key (at least 16 characters)")
    return tf.Step(kind, tf.hash_columns(tuple(t.hash), t.key.encode()))


def _describe(exc: ValidationError, raw: Any) -> str:
    """The first validation error as one line: pipeline, step and field."""
    errors = exc.errors()
    # A value of the wrong kind for a union (``parse``) fails every branch: report the
    # branch of the value's own kind (a table's key, not "should be a string").
    error = next(
        (e for e in errors if not (e["type"].endswith("_type") and len(errors) > 1)), errors[0]
    )
    loc = [x for x in error["loc"] if x not in _UNION_TAGS]
    message = error["msg"]
    if error["type"] == "extra_forbidden":
        message = "unknown key"
    if len(loc) < 2 or loc[0] != "pipeline" or not isinstance(loc[1], int):
        where = ".".join(str(x) for x in loc) or "document"
        return f"document, field {where!r}: {message}"
    index = loc[1]
    name = f"#{index + 1}"
    with contextlib.suppress(KeyError, IndexError, TypeError):
        name = repr(raw["pipeline"][index]["name"])
    rest = loc[2:]
    step = str(rest[0]) if rest else "pipeline"
    if step == "transform" and len(rest) > 1 and isinstance(rest[1], int):
        step = f"transform[{rest[1] + 1}]"
        rest = rest[1:]
    fields = [str(x) for x in rest[1:] if not isinstance(x, int)]
    field = ".".join(fields) if fields else step
    return f"pipeline {name}, step {step!r}, field {field!r}: {message}"
