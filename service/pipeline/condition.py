"""The condition language of pipelines (docs/pipelines.md), compiled to Arrow compute (pure).

A condition is parsed once, at load, into a tree of small nodes; evaluating it over a table
is a handful of vectorised ``pyarrow.compute`` calls, never Python per line. Regexes go
through Arrow's RE2 functions. A row whose condition is null (a missing column, a null
value) counts as false. Parsing raises ``ConditionError`` with a one-line reason; evaluation
never raises for any table (a comparison Arrow cannot type compares the values as text).

Grammar::

    condition  := or
    or         := and ("or" and)*
    and        := not ("and" not)*
    not        := "not" not | primary
    primary    := "(" condition ")" | "true" | "false" | comparison
    comparison := value ( ("==" | "!=" | "<" | "<=" | ">" | ">=") value
                        | "not"? "in" "[" literal ("," literal)* "]"
                        | "matches" string
                        | "is" "not"? "null" )
    value      := literal | path
    literal    := string | number | "true" | "false" | "null"
    path       := column name | "attributes." key ("." key)*
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from service.errors import TidewayError
from service.pipeline.jsonpath import values_at
from service.pipeline.literal import literal_search
from service.pipeline.parsers.base import one_chunk

MAX_LENGTH = 4096  # characters of one condition
MAX_DEPTH = 32  # nesting of parentheses and "not"
_TOKEN = re.compile(
    r"""\s*(?:
      (?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
    | (?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
    | (?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_-]+)*)
    | (?P<op>==|!=|<=|>=|<|>|\(|\)|\[|\]|,)
    )""",
    re.VERBOSE,
)
_KEYWORDS = frozenset(("and", "or", "not", "in", "matches", "is", "null", "true", "false"))
_COMPARE: dict[str, Callable[..., Any]] = {
    "==": pc.equal,
    "!=": pc.not_equal,
    "<": pc.less,
    "<=": pc.less_equal,
    ">": pc.greater,
    ">=": pc.greater_equal,
}
_NUMERIC_TEXT = r"^\s*-?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$"


class ConditionError(TidewayError):
    """A condition is not valid in the language; the message is one line."""


Literal = str | int | float | bool | None


@dataclass(frozen=True, slots=True)
class Condition:
    """A compiled condition: ``mask(table)`` is a boolean array, true where it holds."""

    text: str
    _node: Callable[[pa.Table], pa.Array[Any]]

    def mask(self, table: pa.Table) -> pa.BooleanArray:
        """True where the condition holds; null (missing column, null value) reads as false."""
        result: Any = self._node(table)
        if isinstance(result, pa.Scalar):
            result = pa.array([bool(result.is_valid and result.as_py())] * table.num_rows)
        filled: pa.BooleanArray = pc.fill_null(result, False)
        return filled

    def columns(self) -> frozenset[str]:
        """The column names the condition reads (``attributes`` for an attributes path)."""
        found = set()
        for kind, value in _tokens(self.text):
            if kind == "name" and value not in _KEYWORDS:
                found.add(value.split(".", 1)[0])
        return frozenset(found)


def compile_condition(text: str) -> Condition:
    """Parse ``text``; raise ConditionError (one line) for anything outside the grammar."""
    if not isinstance(text, str):
        raise ConditionError("a condition must be a string")
    if len(text) > MAX_LENGTH:
        raise ConditionError(f"condition longer than {MAX_LENGTH} characters")
    parser = _Parser(_tokens(text))
    node = parser.condition(0)
    extra = parser.peek()
    if extra is not None:
        raise ConditionError(f"unexpected {extra[1]!r} after the condition")
    return Condition(text, node)


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        found = _TOKEN.match(text, pos)
        if found is None or found.lastgroup is None:
            snippet = text[pos:].strip()[:20]
            raise ConditionError(f"cannot read the condition at {snippet!r}")
        tokens.append((found.lastgroup, found.group(found.lastgroup)))
        pos = found.end()
    return tokens


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens, self.pos = tokens, 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        token = self.peek()
        if token is None:
            raise ConditionError("the condition ends too early")
        self.pos += 1
        return token

    def accept(self, word: str) -> bool:
        token = self.peek()
        if token is not None and token[1] == word and token[0] in ("name", "op"):
            self.pos += 1
            return True
        return False

    def expect(self, word: str) -> None:
        if not self.accept(word):
            token = self.peek()
            got = "the end" if token is None else repr(token[1])
            raise ConditionError(f"expected {word!r}, found {got}")

    def condition(self, depth: int) -> Callable[[pa.Table], Any]:
        if depth > MAX_DEPTH:
            raise ConditionError(f"condition nested deeper than {MAX_DEPTH}")
        node = self.conjunction(depth)
        while self.accept("or"):
            node = _binary(pc.or_kleene, node, self.conjunction(depth))
        return node

    def conjunction(self, depth: int) -> Callable[[pa.Table], Any]:
        node = self.negation(depth)
        while self.accept("and"):
            node = _binary(pc.and_kleene, node, self.negation(depth))
        return node

    def negation(self, depth: int) -> Callable[[pa.Table], Any]:
        if self.accept("not"):
            if depth > MAX_DEPTH:
                raise ConditionError(f"condition nested deeper than {MAX_DEPTH}")
            inner = self.negation(depth + 1)
            return lambda table: pc.invert(inner(table))
        return self.primary(depth)

    def primary(self, depth: int) -> Callable[[pa.Table], Any]:
        if self.accept("("):
            node = self.condition(depth + 1)
            self.expect(")")
            return node
        token = self.peek()
        if token is not None and token[1] in ("true", "false"):
            after = self.tokens[self.pos + 1] if self.pos + 1 < len(self.tokens) else None
            if after is None or after[1] in ("and", "or", ")"):
                self.pos += 1
                value = pa.scalar(token[1] == "true")
                return lambda table: value
        return self.comparison()

    def comparison(self) -> Callable[[pa.Table], Any]:
        left = self.value()
        token = self.take()
        word = token[1]
        if token[0] == "op" and word in _COMPARE:
            return _compare(_COMPARE[word], left, self.value())
        if word == "in" or (word == "not" and self.accept("in")):
            return _membership(left, self.literal_list(), negate=word == "not")
        if word == "matches":
            kind, text = self.take()
            if kind != "string":
                raise ConditionError("'matches' takes a quoted regular expression")
            return _matches(left, _unquote(text))
        if word == "is":
            negate = self.accept("not")
            self.expect("null")
            test = pc.is_valid if negate else pc.is_null
            return lambda table: test(_operand(left, table))
        raise ConditionError(f"expected a comparison after a value, found {word!r}")

    def value(self) -> _Value:
        kind, text = self.take()
        if kind == "string":
            return _Value(literal=_unquote(text))
        if kind == "number":
            return _Value(literal=_number(text))
        if kind == "name" and text in ("true", "false", "null"):
            return _Value(literal=None if text == "null" else text == "true")
        if kind == "name" and text not in _KEYWORDS:
            return _Value(path=text)
        raise ConditionError(f"expected a column or a value, found {text!r}")

    def literal_list(self) -> list[Literal]:
        self.expect("[")
        values = [self.value()]
        while self.accept(","):
            values.append(self.value())
        self.expect("]")
        if any(v.path is not None for v in values):
            raise ConditionError("'in [...]' takes literal values only")
        return [v.literal for v in values]


@dataclass(frozen=True, slots=True)
class _Value:
    literal: Literal = None
    path: str | None = None


def _unquote(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text[1:-1], flags=re.DOTALL)


def _number(text: str) -> int | float:
    if re.fullmatch(r"-?\d+", text):
        value = int(text)
        if -(2**63) <= value < 2**63:
            return value
    number = float(text)
    if not math.isfinite(number):
        raise ConditionError(f"number {text} out of range")
    return number


def _binary(op: Callable[..., Any], a: Callable[..., Any], b: Callable[..., Any]) -> Any:
    return lambda table: op(a(table), b(table))


def _operand(value: _Value, table: pa.Table) -> Any:
    """A path's column (all null when the table has none) or a literal's scalar."""
    if value.path is None:
        literal: Any = value.literal
        return pa.scalar(literal)
    name, _, key = value.path.partition(".")
    if name not in table.column_names:
        return pa.nulls(table.num_rows, pa.string())
    column = one_chunk(table.column(name))
    if not key:
        return column
    if name != "attributes" or not pa.types.is_string(column.type):
        return pa.nulls(table.num_rows, pa.string())
    return _attribute(column, key)


def _attribute(attributes: Any, key: str) -> Any:
    """The value at ``key`` (``http.status``: a dot per level) in each row's attributes
    object: a string's text, a number's or bool's as written, an object's JSON; null where
    absent (service.pipeline.jsonpath)."""
    return values_at(attributes, key.split("."))


def _as_number(values: Any) -> Any:
    """Text that reads as a number -> float64; anything else null (never raises)."""
    numeric = pc.match_substring_regex(values, _NUMERIC_TEXT)
    cleaned = pc.if_else(numeric, pc.utf8_trim_whitespace(values), pa.scalar(None, pa.string()))
    return pc.cast(cleaned, pa.float64())


def _aligned(a: Any, b: Any) -> tuple[Any, Any]:
    """The two operands in types Arrow can compare: a literal takes the column's type when it
    converts; text against a number reads the text as a number; else both compare as text."""
    a_type, b_type = a.type, b.type
    if a_type == b_type or pa.types.is_null(a_type) or pa.types.is_null(b_type):
        return a, b
    numeric = (pa.types.is_integer, pa.types.is_floating)
    if any(f(a_type) for f in numeric) and any(f(b_type) for f in numeric):
        return a, b
    for column, literal, flip in ((a, b, False), (b, a, True)):
        if isinstance(literal, pa.Scalar) and not isinstance(column, pa.Scalar):
            if pa.types.is_string(column.type) and (
                pa.types.is_integer(literal.type) or pa.types.is_floating(literal.type)
            ):
                pair = (_as_number(column), literal)
            else:
                try:
                    pair = (column, literal.cast(column.type))
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
                    break
            return (pair[1], pair[0]) if flip else pair
    return _text(a), _text(b)


def _text(value: Any) -> Any:
    try:
        return value.cast(pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        if isinstance(value, pa.Array):
            return pa.nulls(len(value), pa.string())
        return pa.scalar(None, pa.string())


def _compare(op: Callable[..., Any], left: _Value, right: _Value) -> Callable[..., Any]:
    def node(table: pa.Table) -> Any:
        a, b = _aligned(_operand(left, table), _operand(right, table))
        try:
            return op(a, b)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            return op(_text(a), _text(b))

    return node


def _membership(left: _Value, values: list[Literal], *, negate: bool) -> Callable[..., Any]:
    present = [v for v in values if v is not None]
    has_null = len(present) < len(values)

    def node(table: pa.Table) -> Any:
        column = _operand(left, table)
        if isinstance(column, pa.Scalar):
            column = pa.array([column.as_py()] * table.num_rows)
        # A null value is unknown, as in a comparison: "not in" does not hold for it either.
        found = pc.if_else(
            pc.is_valid(column), _is_in(column, present), pa.scalar(None, pa.bool_())
        )
        if has_null:
            found = pc.or_kleene(found, pc.is_null(column))
        return pc.invert(found) if negate else found

    return node


def _is_in(column: Any, values: list[Any]) -> Any:
    if not values:
        return pc.and_kleene(pc.is_valid(column), pa.scalar(False))
    try:
        value_set = pa.array(values).cast(column.type)
        return pc.is_in(column, value_set=value_set)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        text = pa.array([str(v).lower() if isinstance(v, bool) else str(v) for v in values])
        return pc.is_in(_text(column), value_set=text)


def _matches(left: _Value, pattern: str) -> Callable[..., Any]:
    try:
        pc.match_substring_regex(pa.array([""]), pattern)  # RE2 checks it here, once
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConditionError(f"bad regular expression {pattern!r}: {reason}") from None

    search = literal_search(pattern)

    def node(table: pa.Table) -> Any:
        column = _operand(left, table)
        if isinstance(column, pa.Scalar):
            column = pa.array([column.as_py()] * table.num_rows)
        if search is not None:
            return search(_text(column))
        return pc.match_substring_regex(_text(column), pattern)

    return node
