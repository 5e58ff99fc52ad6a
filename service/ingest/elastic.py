"""The Elasticsearch bulk subset: action/source pairs -> normalized lines and ES answers (pure).

``index`` and ``create`` actions are accepted; each source must be a JSON object and is
kept as sent, with the target index added as the field ``_index`` (a metadata name that
Elasticsearch never lets a document carry, so it cannot collide) and ``_id`` when the
action names one. ``delete`` and ``update`` are answered per item with status 400.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from service.errors import RequestError
from service.ingest.lineblock import BlockWriter, LineBlock
from service.ingest.lines import load_object, pieces, too_many_lines

ACCEPTED_ACTIONS = frozenset({"index", "create"})
REFUSED_ACTIONS = frozenset({"delete", "update"})
LUCENE_FOR_ES = {"8": "9.12.0", "9": "10.1.0", "7": "8.11.1"}
# Elasticsearch's own limits: an index name is at most 255 bytes, an _id at most 512.
MAX_INDEX_BYTES = 255
MAX_ID_BYTES = 512
# Every action is answered with an item, refused ones too (ES clients pair items with
# actions by position): 100,000 actions answer in about 10 MB. Beats send 1,600 a request.
MAX_ACTIONS = 100_000
_METADATA = ("_index", "_id")


@dataclass
class BulkItems:
    """Accepted lines and one answer item per action, in order, each already encoded: the
    answer of a request of a million actions is bytes, not a million dicts."""

    lines: list[bytes] | LineBlock = field(default_factory=list)
    items: list[bytes] = field(default_factory=list)
    rejected: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    _refusals: dict[bytes, bytes] = field(default_factory=dict)

    def refuse(
        self, action: str, meta: dict[str, Any], kind: str, reason: str, metric: str
    ) -> None:
        """Answer this item 400 with Elasticsearch's error ``kind``; count it as ``metric``."""
        self.rejected += 1
        self.rejected_by_reason[metric] = self.rejected_by_reason.get(metric, 0) + 1
        index = meta.get("_index", "")
        # Never echo an oversized name back (it was refused for its size).
        index = index[:MAX_INDEX_BYTES] if isinstance(index, str) else ""
        item = bytes(
            memoryview(
                orjson.dumps(
                    {
                        action: {
                            "_index": index,
                            "status": 400,
                            "error": {"type": kind, "reason": reason},
                        }
                    }
                )
            )
        )  # a copy: an orjson.dumps result keeps its 4 KB buffer
        # Identical refusals (a body of a million deletes) share one bytes object.
        self.items.append(self._refusals.setdefault(item, item))

    def accept(self, action: str, index: str, doc_id: str) -> None:
        # The fields clients read: _index and status (required by elasticsearch-java),
        # _id and result; _shards, _seq_no and _version are optional and left out.
        # Formatted, not orjson.dumps'd: a dumps result keeps a 4 KB buffer for life.
        self.items.append(
            b'{"%s":{"_index":%s,"_id":%s,"status":201,"result":"created"}}'
            % (action.encode(), orjson.dumps(index), orjson.dumps(doc_id))
        )


def parse_bulk(
    body: bytes, default_index: str, max_line: int, id_prefix: str, max_items: int = 1 << 62
) -> BulkItems:
    """Pair actions with sources; RequestError(400) when an action line is malformed, as
    Elasticsearch refuses the whole request then (the pairs cannot be resynchronized), and
    RequestError(413) past ``max_items`` actions.

    Per-line loop: one orjson pass per action and per source (benchmarks/ingest.py); the
    body is split a piece at a time, so only one piece's lines exist as objects.
    """
    max_items = min(max_items, MAX_ACTIONS)
    if body.count(b"\n") > 2 * max_items + 1:  # cheap: two lines an action at most
        raise too_many_lines(max_items + 1, max_items, "actions")
    out = BulkItems()
    writer = BlockWriter()
    pending: tuple[str, dict[str, Any]] | None = None
    number = 0
    for piece in pieces(body):
        kept: list[bytes] = []
        for raw in piece.split(b"\n"):
            number += 1
            row = raw.strip()
            if not row:
                continue
            if pending is None:
                if len(out.items) >= max_items:
                    raise too_many_lines(max_items + 1, max_items, "actions")
                action, meta = _action(row, number)
                meta.setdefault("_index", default_index)
                if action in REFUSED_ACTIONS:
                    out.refuse(
                        action,
                        meta,
                        "illegal_argument_exception",
                        f"only index and create are accepted, not {action}",
                        "unsupported_action",
                    )
                    if action == "update":
                        pending = ("", meta)  # its source line is skipped
                    continue
                pending = (action, meta)
                continue
            action, meta = pending
            pending = None
            if action:
                line = _source_line(out, action, meta, row, max_line, id_prefix)
                if line is not None:
                    kept.append(line)
        writer.extend(kept)
    if pending is not None and pending[0]:
        action, meta = pending
        out.refuse(
            action, meta, "action_request_validation_exception", "source is missing", "empty"
        )
    out.lines = writer.block()
    return out


def _source_line(  # noqa: PLR0917
    out: BulkItems, action: str, meta: dict[str, Any], source: bytes, max_line: int, prefix: str
) -> bytes | None:
    """The accepted line of one index/create pair, or None once its item is refused."""
    problem = _meta_problem(meta)
    if problem is not None:
        out.refuse(action, meta, "illegal_argument_exception", problem, "bad_metadata")
        return None
    value, problem2 = load_object(source, max_line)
    if problem2 is not None:
        out.refuse(action, meta, "document_parsing_exception", *problem2)
        return None
    assert value is not None
    for name in _METADATA:
        if name in value:  # it would override the action's (the last duplicate key wins)
            out.refuse(
                action,
                meta,
                "document_parsing_exception",
                f"Field [{name}] is a metadata field and cannot be added inside a document. "
                "Use the index API request parameters.",
                "bad_metadata",
            )
            return None
    line = _with_meta(source, meta)  # a generated _id is answered, never stored
    doc_id = meta.get("_id")
    out.accept(
        action, meta["_index"], doc_id if doc_id is not None else f"{prefix}{len(out.items):x}"
    )
    return line


def _meta_problem(meta: dict[str, Any]) -> str | None:
    index, doc_id = meta.get("_index"), meta.get("_id")
    if not isinstance(index, str) or not index:
        return "index name must be a non-empty string"
    if len(index.encode()) > MAX_INDEX_BYTES:
        return f"index name is too long, must be no longer than {MAX_INDEX_BYTES} bytes"
    if doc_id is not None:
        if not isinstance(doc_id, str):
            return "_id must be a string"
        size = len(doc_id.encode())
        if size > MAX_ID_BYTES:
            return f"id is too long, must be no longer than {MAX_ID_BYTES} bytes but was: {size}"
    return None


def _action(row: bytes, number: int) -> tuple[str, dict[str, Any]]:
    try:
        value = orjson.loads(row)
    except orjson.JSONDecodeError:
        value = None
    if isinstance(value, dict) and len(value) == 1:
        action, meta = next(iter(value.items()))
        if action in ACCEPTED_ACTIONS | REFUSED_ACTIONS and isinstance(meta, dict):
            return action, meta
    raise RequestError(
        400,
        f"Malformed action/metadata line [{number}], expected one of index, create, delete, update",
    )


def _with_meta(source: bytes, meta: dict[str, Any]) -> bytes:
    """Prepend ``_index`` (and ``_id`` if the client chose it) to the object's bytes."""
    extra = b'"_index":' + orjson.dumps(meta["_index"]) + b","
    if meta.get("_id") is not None:
        extra += b'"_id":' + orjson.dumps(meta["_id"]) + b","
    return b"{" + extra + source[1:]


def bulk_answer_parts(items: BulkItems, took_ms: int) -> Iterator[bytes]:
    """The bulk answer as pieces to write in turn (never joined into one object)."""
    yield b'{"took":%d,"errors":%s,"items":[' % (took_ms, b"true" if items.rejected else b"false")
    step = 4096
    for start in range(0, len(items.items), step):
        chunk = b",".join(items.items[start : start + step])
        yield chunk if start == 0 else b"," + chunk
    yield b"]}"


def bulk_answer(items: BulkItems, took_ms: int) -> dict[str, Any]:
    """The bulk answer as a value (tests and small answers)."""
    parsed: dict[str, Any] = orjson.loads(b"".join(bulk_answer_parts(items, took_ms)))
    return parsed


def error_body(status: int, kind: str, reason: str) -> dict[str, Any]:
    """Elasticsearch's error shape, which every ES client knows how to report."""
    cause = {"type": kind, "reason": reason}
    return {"error": {"root_cause": [cause], **cause}, "status": status}


def root_info(version: str, cluster: str, node: str) -> dict[str, Any]:
    """``GET /`` as Elasticsearch answers it; agents read ``version.number`` to pick a dialect."""
    major = version.split(".", maxsplit=1)[0]
    return {
        "name": node,
        "cluster_name": cluster,
        "cluster_uuid": "tideway-" + cluster,
        "version": {
            "number": version,
            "build_flavor": "default",
            "build_type": "docker",
            "build_hash": "tideway",
            "build_date": "2024-01-01T00:00:00.000000000Z",
            "build_snapshot": False,
            "lucene_version": LUCENE_FOR_ES.get(major, "9.12.0"),
            "minimum_wire_compatibility_version": "7.17.0",
            "minimum_index_compatibility_version": "7.0.0",
        },
        "tagline": "You Know, for Search",
    }
