"""The Elasticsearch bulk subset: action/source pairs -> normalized lines and ES answers (pure).

``index`` and ``create`` actions are accepted; each source must be a JSON object and is
kept as sent, with the target index added as the field ``_index`` (a metadata name that
Elasticsearch never lets a document carry, so it cannot collide) and ``_id`` when the
action names one. ``delete`` and ``update`` are answered per item with status 400.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from service.errors import RequestError
from service.ingest.lines import check_object

ACCEPTED_ACTIONS = frozenset({"index", "create"})
REFUSED_ACTIONS = frozenset({"delete", "update"})
LUCENE_FOR_ES = {"8": "9.12.0", "9": "10.1.0", "7": "8.11.1"}
_SHARDS = {"total": 1, "successful": 1, "failed": 0}


@dataclass
class BulkItems:
    """Accepted lines and one answer item per action, in order."""

    lines: list[bytes] = field(default_factory=list)
    items: list[dict[str, Any]] = field(default_factory=list)
    rejected: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)

    def refuse(
        self, action: str, meta: dict[str, Any], kind: str, reason: str, metric: str
    ) -> None:
        """Answer this item 400 with Elasticsearch's error ``kind``; count it as ``metric``."""
        self.rejected += 1
        self.rejected_by_reason[metric] = self.rejected_by_reason.get(metric, 0) + 1
        self.items.append(
            {
                action: {
                    "_index": meta.get("_index", ""),
                    "_id": meta.get("_id"),
                    "status": 400,
                    "error": {"type": kind, "reason": reason},
                }
            }
        )


def parse_bulk(body: bytes, default_index: str, max_line: int, id_prefix: str) -> BulkItems:
    """Pair actions with sources; RequestError(400) when an action line is malformed, as
    Elasticsearch refuses the whole request then (the pairs cannot be resynchronized).

    Per-line loop: one orjson pass per action and per source (benchmarks/ingest.py).
    """
    out = BulkItems()
    rows = [r for r in (raw.strip() for raw in body.split(b"\n")) if r]
    i = 0
    while i < len(rows):
        action, meta = _action(rows[i], i + 1)
        meta.setdefault("_index", default_index)
        if action in REFUSED_ACTIONS:
            i += 2 if action == "update" else 1
            out.refuse(
                action,
                meta,
                "illegal_argument_exception",
                f"tideway accepts only index and create actions, not {action}",
                "unsupported_action",
            )
            continue
        if i + 1 >= len(rows):
            out.refuse(
                action, meta, "action_request_validation_exception", "source is missing", "empty"
            )
            break
        source = rows[i + 1]
        i += 2
        problem = check_object(source, max_line)
        if problem is not None:
            out.refuse(action, meta, "document_parsing_exception", *problem)
            continue
        out.lines.append(_with_meta(source, meta))
        if meta.get("_id") is None:
            meta["_id"] = f"{id_prefix}{len(out.items):x}"
        out.items.append(
            {
                action: {
                    "_index": meta["_index"],
                    "_id": meta["_id"],
                    "_version": 1,
                    "result": "created",
                    "_shards": _SHARDS,
                    "_seq_no": len(out.lines) - 1,
                    "_primary_term": 1,
                    "status": 201,
                }
            }
        )
    return out


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


def bulk_answer(items: BulkItems, took_ms: int) -> dict[str, Any]:
    return {"took": took_ms, "errors": items.rejected > 0, "items": items.items}


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
