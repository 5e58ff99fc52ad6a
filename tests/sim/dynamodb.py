"""An in-process DynamoDB table model with condition and update expressions evaluated.

Covers the expression grammar a lease table needs: comparisons (= <> < <= > >=), AND, OR,
NOT, parentheses, BETWEEN, IN, attribute_exists, attribute_not_exists, begins_with, size;
SET with + and -, if_not_exists and list_append; REMOVE; ADD on numbers and sets; top-level
attributes and dotted map paths. Anything else raises NotImplementedError (fail loudly: the
model must be extended, never silently wrong).
"""

from __future__ import annotations

import copy
import hashlib
import re
from decimal import Decimal
from typing import Any

from tests.sim.faults import client_error
from tests.sim.net import Endpoint, Network

Item = dict[str, Any]
_TOKEN = re.compile(
    r"\s*(?:(?P<num>\d+)|(?P<op><>|<=|>=|[=<>(),+\-\[\]\.])|(?P<name>[#:]?[A-Za-z_][A-Za-z0-9_]*))"
)
_KEYWORDS = {"AND", "OR", "NOT", "BETWEEN", "IN", "SET", "REMOVE", "ADD", "DELETE"}


def _copy(item: Item | None) -> Item | None:
    """A copy of an item deep enough that no caller can change the table (faster than
    copy.deepcopy on the hot path of every scan)."""
    if item is None:
        return None
    return {k: _copy_value(v) for k, v in item.items()}


def _copy_value(value: Any) -> Any:
    ((kind, raw),) = value.items()
    if kind == "L":
        return {"L": [_copy_value(v) for v in raw]}
    if kind == "M":
        return {"M": _copy(raw)}
    if kind == "B" and not isinstance(raw, bytes):
        raise NotImplementedError(f"binary attribute must be bytes, got {type(raw).__name__}")
    if kind in ("SS", "NS", "BS"):
        return {kind: list(raw)}
    return {kind: raw}


def _tokens(text: str) -> list[str]:
    out, pos = [], 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise NotImplementedError(f"expression not modelled: {text!r} at {pos}")
        out.append(m.group(0).strip())
        pos = m.end()
    return out


class _Expr:
    def __init__(self, text: str, names: dict[str, str], values: dict[str, Any]) -> None:
        self.toks = _tokens(text)
        self.i = 0
        self.names, self.values = names, values

    def peek(self) -> str | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, want: str | None = None) -> str:
        tok = self.peek()
        if tok is None or (want is not None and tok.upper() != want):
            raise NotImplementedError(f"expected {want!r}, got {tok!r} in {' '.join(self.toks)}")
        self.i += 1
        return tok

    def path(self) -> list[str]:
        parts = [self._name(self.take())]
        while self.peek() == ".":
            self.take()
            parts.append(self._name(self.take()))
        if self.peek() == "[":
            raise NotImplementedError("list index paths are not modelled")
        return parts

    def _name(self, tok: str) -> str:
        return self.names[tok] if tok.startswith("#") else tok


def _get(item: Item, path: list[str]) -> Any:
    value: Any = {"M": item}
    for part in path:
        if not isinstance(value, dict) or "M" not in value or part not in value["M"]:
            return None
        value = value["M"][part]
    return value


def _set(item: Item, path: list[str], value: Any) -> None:
    target = item
    for part in path[:-1]:
        target = target[part]["M"]
    target[path[-1]] = value


def _remove(item: Item, path: list[str]) -> None:
    target: Any = item
    for part in path[:-1]:
        if part not in target:
            return
        target = target[part]["M"]
    target.pop(path[-1], None)


def _cmp_key(value: Any) -> tuple[str, Any]:
    if value is None:
        return ("null", None)
    ((kind, raw),) = value.items()
    if kind == "N":
        return ("N", Decimal(raw))
    return (kind, raw if not isinstance(raw, list | dict) else repr(raw))


def _compare(a: Any, op: str, b: Any) -> bool:
    ka, kb = _cmp_key(a), _cmp_key(b)
    if op == "=":
        return a is not None and b is not None and ka == kb
    if op == "<>":
        return not (a is not None and b is not None and ka == kb)
    if a is None or b is None or ka[0] != kb[0]:
        return False
    x, y = ka[1], kb[1]
    return bool({"<": x < y, "<=": x <= y, ">": x > y, ">=": x >= y}[op])


class _Condition(_Expr):
    def evaluate(self, item: Item) -> bool:
        result = self._or(item)
        if self.peek() is not None:
            raise NotImplementedError(f"trailing tokens in condition: {self.toks[self.i :]}")
        return result

    def _or(self, item: Item) -> bool:
        left = self._and(item)
        while (self.peek() or "").upper() == "OR":
            self.take()
            right = self._and(item)
            left = left or right
        return left

    def _and(self, item: Item) -> bool:
        left = self._not(item)
        while (self.peek() or "").upper() == "AND":
            self.take()
            right = self._not(item)
            left = left and right
        return left

    def _not(self, item: Item) -> bool:
        if (self.peek() or "").upper() == "NOT":
            self.take()
            return not self._not(item)
        return self._primary(item)

    def _primary(self, item: Item) -> bool:
        tok = self.peek()
        if tok == "(":
            self.take()
            value = self._or(item)
            self.take(")")
            return value
        if tok in ("attribute_exists", "attribute_not_exists"):
            self.take()
            self.take("(")
            present = _get(item, self.path()) is not None
            self.take(")")
            return present if tok == "attribute_exists" else not present
        if tok == "begins_with":
            self.take()
            self.take("(")
            a = self._operand(item)
            self.take(",")
            b = self._operand(item)
            self.take(")")
            return a is not None and b is not None and "S" in a and a["S"].startswith(b["S"])
        left = self._operand(item)
        op = self.take()
        if op.upper() == "BETWEEN":
            lo = self._operand(item)
            self.take("AND")
            hi = self._operand(item)
            return _compare(left, ">=", lo) and _compare(left, "<=", hi)
        if op.upper() == "IN":
            self.take("(")
            options = [self._operand(item)]
            while self.peek() == ",":
                self.take()
                options.append(self._operand(item))
            self.take(")")
            return any(_compare(left, "=", o) for o in options)
        if op not in ("=", "<>", "<", "<=", ">", ">="):
            raise NotImplementedError(f"comparator not modelled: {op}")
        return _compare(left, op, self._operand(item))

    def _operand(self, item: Item) -> Any:
        tok = self.peek() or ""
        if tok.startswith(":"):
            self.take()
            return self.values[tok]
        if tok == "size":
            self.take()
            self.take("(")
            value = _get(item, self.path())
            self.take(")")
            if value is None:
                return None
            ((_kind, raw),) = value.items()
            return {"N": str(len(raw))}
        return _get(item, self.path())


class _Update(_Expr):
    def apply(self, item: Item) -> None:
        """Evaluate every right-hand side against the old item, then write (as DynamoDB)."""
        old = copy.deepcopy(item)
        writes: list[tuple[str, list[str], Any]] = []
        while self.peek() is not None:
            clause = self.take().upper()
            if clause not in ("SET", "REMOVE", "ADD", "DELETE"):
                raise NotImplementedError(f"update clause not modelled: {clause}")
            while True:
                path = self.path()
                if clause == "SET":
                    self.take("=")
                    writes.append(("set", path, self._value(old)))
                elif clause == "REMOVE":
                    writes.append(("remove", path, None))
                else:
                    writes.append((clause.lower(), path, self.values[self.take()]))
                if self.peek() != ",":
                    break
                self.take()
        for kind, path, value in writes:
            if kind == "set":
                _set(item, path, value)
            elif kind == "remove":
                _remove(item, path)
            elif kind == "add":
                _set(item, path, _add(_get(item, path), value))
            else:
                raise NotImplementedError("DELETE is not modelled")

    def _value(self, old: Item) -> Any:
        left = self._term(old)
        while self.peek() in ("+", "-"):
            op = self.take()
            right = self._term(old)
            a, b = Decimal(left["N"]), Decimal(right["N"])
            left = {"N": str(a + b if op == "+" else a - b)}
        return left

    def _term(self, old: Item) -> Any:
        tok = self.peek() or ""
        if tok.startswith(":"):
            self.take()
            return copy.deepcopy(self.values[tok])
        if tok in ("if_not_exists", "list_append"):
            self.take()
            self.take("(")
            a = self._term(old)
            self.take(",")
            b = self._term(old)
            self.take(")")
            if tok == "if_not_exists":
                return a if a is not None else b
            return {"L": a["L"] + b["L"]}
        value = _get(old, self.path())
        return copy.deepcopy(value)


def _add(current: Any, value: Any) -> Any:
    if current is None:
        return copy.deepcopy(value)
    if "N" in value:
        return {"N": str(Decimal(current["N"]) + Decimal(value["N"]))}
    ((kind, items),) = value.items()
    return {kind: sorted(set(current[kind]) | set(items))}


def condition_holds(
    condition: str | None, item: Item, names: dict[str, str], values: dict[str, Any]
) -> bool:
    return condition is None or _Condition(condition, names, values).evaluate(item)


_MODELLED_PARAMETERS = {
    "TableName",
    "Key",
    "Item",
    "ConditionExpression",
    "UpdateExpression",
    "ExpressionAttributeNames",
    "ExpressionAttributeValues",
    "ReturnValues",
    "ConsistentRead",
    "ExclusiveStartKey",
    "Limit",
    "ReturnConsumedCapacity",
    "ProjectionExpression",
}


def _project(item: Item | None, kw: dict[str, Any]) -> Item | None:
    """The item cut to ``ProjectionExpression`` (top-level attributes only; a nested path
    or list index is refused)."""
    expression = kw.get("ProjectionExpression")
    if item is None or expression is None:
        return item
    names = kw.get("ExpressionAttributeNames", {})
    out: Item = {}
    for raw in expression.split(","):
        token = raw.strip()
        if not re.fullmatch(r"#?[A-Za-z_][A-Za-z0-9_]*", token):
            raise NotImplementedError(f"projection not modelled: {token!r}")
        name = names[token] if token.startswith("#") else token
        if name in item:
            out[name] = item[name]
    return out


class DynamoModel:
    """One table, keyed by a single string hash key."""

    def __init__(self, table: str, key: str) -> None:
        self.table, self.key = table, key
        self.items: dict[str, Item] = {}
        # (event index, virtual time, node, key, item before, item after) of every write
        self.writes: list[tuple[int, float, str, str, Item | None, Item | None]] = []
        self.events: Any = None  # () -> (next global event index, virtual time)
        # (node, key, operation, item as it stood, expression values) of every refused write
        self.refused: list[tuple[str, str, str, Item, dict[str, Any]]] = []

    def _check(self, kw: dict[str, Any], op: str) -> str:
        unknown = set(kw) - _MODELLED_PARAMETERS
        if unknown:
            raise NotImplementedError(f"{op} parameters not modelled: {sorted(unknown)}")
        if kw["TableName"] != self.table:
            raise client_error("ResourceNotFoundException", 400, op, "no such table")
        key = kw["Key"] if "Key" in kw else {self.key: kw["Item"][self.key]}
        return str(key[self.key]["S"])

    def _condition(self, kw: dict[str, Any], item: Item, op: str, node: str, key: str) -> None:
        if "Expected" in kw or "ConditionalOperator" in kw:
            raise NotImplementedError("legacy conditions are not modelled")
        names = kw.get("ExpressionAttributeNames", {})
        values = kw.get("ExpressionAttributeValues", {})
        if not condition_holds(kw.get("ConditionExpression"), item, names, values):
            self.refused.append((node, key, op, _copy(item), dict(values)))
            raise client_error(
                "ConditionalCheckFailedException", 400, op, "The conditional request failed"
            )

    def get_item(self, **kw: Any) -> dict[str, Any]:
        key = self._check(kw, "GetItem")
        item = self.items.get(key)
        return {"Item": _project(_copy(item), kw)} if item is not None else {}

    def put_item(self, node: str, **kw: Any) -> dict[str, Any]:
        key = self._check(kw, "PutItem")
        before = self.items.get(key)
        self._condition(kw, before or {}, "PutItem", node, key)
        self.items[key] = copy.deepcopy(kw["Item"])
        self.writes.append((*self.events(), node, key, before, copy.deepcopy(kw["Item"])))
        return (
            {"Attributes": copy.deepcopy(before)}
            if before and kw.get("ReturnValues") == "ALL_OLD"
            else {}
        )

    def update_item(self, node: str, **kw: Any) -> dict[str, Any]:
        key = self._check(kw, "UpdateItem")
        before = self.items.get(key)
        self._condition(kw, before or {}, "UpdateItem", node, key)
        after = copy.deepcopy(before) if before else {self.key: {"S": key}}
        names = kw.get("ExpressionAttributeNames", {})
        values = kw.get("ExpressionAttributeValues", {})
        if "UpdateExpression" in kw:
            _Update(kw["UpdateExpression"], names, values).apply(after)
        self.items[key] = after
        self.writes.append((*self.events(), node, key, before, copy.deepcopy(after)))
        returns = kw.get("ReturnValues", "NONE")
        if returns == "ALL_NEW":
            return {"Attributes": copy.deepcopy(after)}
        if returns == "ALL_OLD" and before:
            return {"Attributes": copy.deepcopy(before)}
        if returns not in ("NONE", "ALL_NEW", "ALL_OLD"):
            raise NotImplementedError(f"ReturnValues={returns} is not modelled")
        return {}

    def delete_item(self, node: str, **kw: Any) -> dict[str, Any]:
        key = self._check(kw, "DeleteItem")
        before = self.items.get(key)
        self._condition(kw, before or {}, "DeleteItem", node, key)
        self.items.pop(key, None)
        self.writes.append((*self.events(), node, key, before, None))
        return {}

    def scan(self, page_size: int | None, **kw: Any) -> dict[str, Any]:
        self._check({**kw, "Key": {self.key: {"S": ""}}}, "Scan")
        if "FilterExpression" in kw:
            raise NotImplementedError("scan filters are not modelled")
        # Scan order follows the hash of the key, not the key.
        keys = sorted(self.items, key=lambda k: (hashlib.md5(k.encode()).digest(), k))
        start = kw.get("ExclusiveStartKey")
        if start is not None:
            keys = keys[keys.index(start[self.key]["S"]) + 1 :]
        limit = min(x for x in (page_size, kw.get("Limit"), len(keys) + 1) if x is not None)
        page = keys[:limit]
        resp: dict[str, Any] = {
            "Items": [_project(_copy(self.items[k]), kw) for k in page],
            "Count": len(page),
        }
        if len(keys) > limit:
            resp["LastEvaluatedKey"] = {self.key: {"S": page[-1]}}
        return resp


class FakeDynamoDB:
    """The aiobotocore DynamoDB client calls on one table, for one node."""

    def __init__(self, model: DynamoModel, net: Network, node: Endpoint) -> None:
        self._m, self._net, self._node = model, net, node

    def _key(self, kw: dict[str, Any]) -> str:
        key = kw.get("Key") or kw.get("Item") or {}
        return str(key.get(self._m.key, {}).get("S", ""))

    async def get_item(self, **kw: Any) -> dict[str, Any]:
        return await self._net.call(
            self._node,
            "dynamodb",
            "get_item",
            lambda: self._m.get_item(**kw),
            write=False,
            key=self._key(kw),
        )

    async def put_item(self, **kw: Any) -> dict[str, Any]:
        return await self._net.call(
            self._node,
            "dynamodb",
            "put_item",
            lambda: self._m.put_item(self._node.name, **kw),
            write=True,
            key=self._key(kw),
        )

    async def update_item(self, **kw: Any) -> dict[str, Any]:
        return await self._net.call(
            self._node,
            "dynamodb",
            "update_item",
            lambda: self._m.update_item(self._node.name, **kw),
            write=True,
            key=self._key(kw),
        )

    async def delete_item(self, **kw: Any) -> dict[str, Any]:
        return await self._net.call(
            self._node,
            "dynamodb",
            "delete_item",
            lambda: self._m.delete_item(self._node.name, **kw),
            write=True,
            key=self._key(kw),
        )

    async def scan(self, **kw: Any) -> dict[str, Any]:
        size = self._net.injector.scan_page_size()
        return await self._net.call(
            self._node, "dynamodb", "scan", lambda: self._m.scan(size, **kw), write=False
        )
