"""A hostile Avro datum is refused with a precise reason before fastavro reads it (pure).

fastavro trusts what the bytes declare (issue 15, measured with 1.13): a recursive schema
nested 1,000,000 deep in a 1 MB datum overflows the C stack (the worker dies with SIGSEGV),
and a varint past 64 bits wraps silently (``-2**63`` lands as the value). ``check_datum``
walks the schema over the bytes without building any value: every length, count and index
is checked against what is left of the record, varints against 10 bytes and 64 bits (int
against 32 bits), nesting against MAX_DEPTH. The walk is a per-field Python loop, so
``needs_check`` runs it only where fastavro alone is unsafe: a recursive schema, or bytes
that hold a 9-byte run of continuation bits (the only way to write a varint past 64 bits).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from service.errors import DecodeError

# Nested records, arrays, maps and unions a datum may hold; orjson refuses to write more
# than 255 levels, and honest documents stay far below.
MAX_DEPTH = 128
_LONG_RUN = re.compile(rb"[\x80-\xff]{9}")
_FIXED_SIZE = {"float": 4, "double": 8}


def needs_check(data: bytes, recursive: bool) -> bool:
    """Whether fastavro alone may crash or read a wrong value on ``data``."""
    return recursive or _LONG_RUN.search(data) is not None


def is_recursive(schema: Any) -> bool:
    """Whether a named type of ``schema`` (fastavro-parsed) refers to itself."""
    named = named_types(schema)

    def refs(node: Any, seen: set[str]) -> bool:
        if isinstance(node, str):
            if node in seen:
                return True
            return node in named and refs(named[node], seen | {node})
        if isinstance(node, list):
            return any(refs(b, seen) for b in node)
        if not isinstance(node, dict):
            return False
        name = node.get("name")
        inner = seen | {name} if isinstance(name, str) and "fields" in node else seen
        children = [f["type"] for f in node.get("fields", ())]
        children += [node[k] for k in ("items", "values") if k in node]
        return any(refs(c, inner) for c in children)

    return refs(schema, set())


def named_types(schema: Any) -> dict[str, Any]:
    """Every named type (record, error, enum, fixed) of a parsed schema, by full name."""
    out: dict[str, Any] = {}
    for node in schema_nodes(schema):
        name = node.get("name")
        if isinstance(name, str) and node.get("type") in ("record", "error", "enum", "fixed"):
            out[name] = node
    return out


def schema_nodes(schema: Any, seen: set[int] | None = None) -> Iterator[dict[str, Any]]:
    """Every type object (dict) of a parsed schema, each once."""
    seen = set() if seen is None else seen
    if isinstance(schema, list):
        for branch in schema:
            yield from schema_nodes(branch, seen)
    elif isinstance(schema, dict) and id(schema) not in seen:
        seen.add(id(schema))
        yield schema
        for field in schema.get("fields", ()):
            yield from schema_nodes(field["type"], seen)
        for key in ("items", "values"):
            if key in schema:
                yield from schema_nodes(schema[key], seen)


class Checked:
    """A parsed schema with what the walk needs, computed once (at load, or on first use)."""

    __slots__ = ("named", "recursive", "schema")

    def __init__(self, schema: Any) -> None:
        self.schema = schema
        self.named = named_types(schema)
        self.recursive = is_recursive(schema)


class _Walk:
    """One datum's bytes, read against the schema: offsets only, no values kept."""

    def __init__(self, data: bytes, pos: int, named: dict[str, Any]) -> None:
        self.data = data
        self.pos = pos
        self.named = named

    def fail(self, what: str) -> DecodeError:
        return DecodeError(f"{what} at byte {self.pos}")

    def varint(self, bits: int, what: str) -> int:
        """A zig-zag varint of at most ``bits`` bits."""
        data, pos, shift, raw = self.data, self.pos, 0, 0
        while True:
            if pos >= len(data):
                raise self.fail(f"{what} cut short")
            byte = data[pos]
            pos += 1
            raw |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
            shift += 7
            if shift >= 70:
                raise self.fail(f"{what} varint over 10 bytes")
        if raw >> bits:
            raise self.fail(f"{what} varint over {bits} bits")
        self.pos = pos
        return (raw >> 1) ^ -(raw & 1)

    def skip(self, size: int, what: str) -> None:
        if size < 0:
            raise self.fail(f"{what} length {size}")
        if size > len(self.data) - self.pos:
            raise self.fail(f"{what} length {size} past the end")
        self.pos += size

    def count(self, what: str) -> int:
        """The next block's item count (0: the end), its byte size skipped over."""
        n = self.varint(64, f"{what} block count")
        if n < 0:  # -n items, preceded by the block's size in bytes
            n = -n
            size = self.varint(64, f"{what} block size")
            if not 0 <= size <= len(self.data) - self.pos:
                raise self.fail(f"{what} block size {size} past the end")
        if n > len(self.data) - self.pos:  # every item takes a byte at least
            raise self.fail(f"{what} count {n} past the end")
        return n

    def datum(self, schema: Any, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise self.fail(f"nested deeper than {MAX_DEPTH}")
        if isinstance(schema, str):
            schema = self.named.get(schema, schema)
        if isinstance(schema, list):
            index = self.varint(64, "union index")
            if not 0 <= index < len(schema):
                raise self.fail(f"union index {index} of {len(schema)}")
            self.datum(schema[index], depth + 1)
            return
        kind = schema if isinstance(schema, str) else schema["type"]
        if isinstance(kind, (dict, list)):
            self.datum(kind, depth)
        elif kind in ("record", "error"):
            for field in schema["fields"]:
                self.datum(field["type"], depth + 1)
        elif kind == "array":
            while n := self.count("array"):
                for _ in range(n):
                    self.datum(schema["items"], depth + 1)
        elif kind == "map":
            while n := self.count("map"):
                for _ in range(n):
                    self.skip(self.varint(64, "map key length"), "map key")
                    self.datum(schema["values"], depth + 1)
        else:
            self.primitive(kind, schema)

    def primitive(self, kind: str, schema: Any) -> None:
        if kind in ("string", "bytes"):
            self.skip(self.varint(64, f"{kind} length"), kind)
        elif kind == "long":
            self.varint(64, "long")
        elif kind == "int":
            self.varint(32, "int")
        elif kind == "boolean":
            self.skip(1, kind)
        elif kind in _FIXED_SIZE:
            self.skip(_FIXED_SIZE[kind], kind)
        elif kind == "fixed":
            self.skip(int(schema["size"]), "fixed")
        elif kind == "enum":
            index = self.varint(32, "enum index")
            if not 0 <= index < len(schema["symbols"]):
                raise self.fail(f"enum index {index} of {len(schema['symbols'])}")
        elif kind != "null":
            raise self.fail(f"schema type {kind!r} unknown")


def check_datum(data: bytes, offset: int, checked: Checked) -> None:
    """Raise DecodeError (reason: what and where) unless the bytes from ``offset`` are one
    datum of ``schema`` filling ``data`` exactly, with every length, count, index and varint
    within bounds and nesting within MAX_DEPTH. Reads offsets only: no allocation."""
    walk = _Walk(data, offset, checked.named)
    try:
        walk.datum(checked.schema, 0)
    except RecursionError:  # a deep schema itself (MAX_DEPTH frames are far below the limit)
        raise walk.fail("nested too deeply") from None
    if walk.pos != len(data):
        raise walk.fail(f"datum ends {len(data) - walk.pos} bytes before the record")
