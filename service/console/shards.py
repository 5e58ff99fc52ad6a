"""The shard view (pure): lease items, worker heartbeats and workers' /status -> sorted rows.

Lag, last flush and lines/s come from the progress each owner writes with its checkpoints
(service/consume/progress.py); a worker's /status, where the console reaches one, gives a
fresher lag for the shards it reads.

Shared by the console's pages and ``tideway status``; no I/O, no clock (``now_ms`` is passed).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from service.consume.leases import ShardLease, WorkerBeat
from service.consume.sequence import checkpoint_to_wire


@dataclass(frozen=True, slots=True)
class ShardRow:
    """One shard as an operator reads it; sequence numbers as the strings Kinesis shows."""

    shard_id: str
    owner: str | None
    epoch: int
    checkpoint: str | None
    intent: tuple[str, str] | None
    lag_ms: int | None
    parents: tuple[str, ...]
    children: tuple[str, ...]
    state: str  # finished, reading, open intent, unowned
    last_flush_ms: int | None = None  # the owner's wall clock at its last checkpoint
    lines_per_s: float | None = None  # rows landed per second, between its last checkpoints

    def as_json(self) -> dict[str, Any]:
        return {
            "shard_id": self.shard_id,
            "owner": self.owner,
            "epoch": self.epoch,
            "checkpoint": self.checkpoint,
            "intent": list(self.intent) if self.intent else None,
            "lag_ms": self.lag_ms,
            "parents": list(self.parents),
            "children": list(self.children),
            "state": self.state,
            "last_flush_ms": self.last_flush_ms,
            "lines_per_s": self.lines_per_s,
        }


@dataclass(frozen=True, slots=True)
class WorkerRow:
    worker_id: str
    beats: int
    leaving: bool
    written_at_ms: int  # the worker's own wall clock: for people, never compared
    shards: int
    lag_ms: int | None = None  # its shards' largest lag, as of its last heartbeat

    def as_json(self) -> dict[str, Any]:
        return {
            "worker_id": self.worker_id,
            "beats": self.beats,
            "leaving": self.leaving,
            "written_at_ms": self.written_at_ms,
            "shards": self.shards,
            "lag_ms": self.lag_ms,
        }


@dataclass(frozen=True, slots=True)
class ShardView:
    shards: tuple[ShardRow, ...]
    workers: tuple[WorkerRow, ...]

    def summary(self) -> dict[str, int | None]:
        lags = [r.lag_ms for r in self.shards if r.lag_ms is not None]
        states = [r.state for r in self.shards]
        return {
            "shards": len(self.shards),
            "finished": states.count("finished"),
            "reading": states.count("reading"),
            "open_intents": states.count("open intent"),
            "unowned": states.count("unowned"),
            "workers": len(self.workers),
            "max_lag_ms": max(lags) if lags else None,
        }

    def as_json(self) -> dict[str, Any]:
        return {
            "summary": self.summary(),
            "shards": [r.as_json() for r in self.shards],
            "workers": [w.as_json() for w in self.workers],
        }


def lags_from_statuses(statuses: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Shard -> millis behind the tip, from consume workers' /status documents (the reader's)."""
    lags: dict[str, int] = {}
    for doc in statuses:
        for sid, view in (doc.get("shards") or {}).items():
            here = view.get("here") if isinstance(view, Mapping) else None
            if isinstance(here, Mapping) and isinstance(here.get("millis_behind"), int | float):
                lags[sid] = int(here["millis_behind"])
    return lags


def _lag(lease: ShardLease) -> int | None:
    """The lag its owner wrote with its last checkpoint; none for a finished or unowned shard
    (nobody reads it: the figure would be stale)."""
    if lease.finished or not lease.owner or lease.progress is None:
        return None
    return lease.progress.lag_ms


def _state(lease: ShardLease) -> str:
    if lease.finished:
        return "finished"
    if lease.intent_last is not None:
        return "open intent"
    return "reading" if lease.owner else "unowned"


def shard_view(
    leases: Mapping[str, ShardLease],
    workers: Mapping[str, WorkerBeat],
    lags: Mapping[str, int] | None = None,
) -> ShardView:
    """Rows sorted by shard id; children are the shards that name a shard as parent."""
    lags = lags or {}
    children: dict[str, list[str]] = {}
    for sid, lease in leases.items():
        for parent in lease.parents:
            children.setdefault(parent, []).append(sid)
    owned: dict[str, int] = {}
    rows = []
    for sid in sorted(leases):
        lease = leases[sid]
        progress = lease.progress
        if lease.owner and not lease.finished:
            owned[lease.owner] = owned.get(lease.owner, 0) + 1
        intent = (
            (str(lease.intent_first), str(lease.intent_last))
            if lease.intent_first is not None and lease.intent_last is not None
            else None
        )
        rows.append(
            ShardRow(
                shard_id=sid,
                owner=lease.owner,
                epoch=lease.epoch,
                checkpoint=None
                if lease.checkpoint is None
                else checkpoint_to_wire(lease.checkpoint),
                intent=intent,
                lag_ms=lags.get(sid, _lag(lease)),
                parents=lease.parents,
                children=tuple(sorted(children.get(sid, ()))),
                state=_state(lease),
                last_flush_ms=progress.at_ms if progress and progress.at_ms else None,
                lines_per_s=progress.rows_per_s if progress else None,
            )
        )
    worker_rows = tuple(
        WorkerRow(
            w.worker_id, w.beats, w.leaving, w.written_at_ms, owned.get(w.worker_id, 0), w.lag_ms
        )
        for w in sorted(workers.values(), key=lambda w: w.worker_id)
    )
    return ShardView(tuple(rows), worker_rows)


def format_lag(ms: float | None) -> str:
    """Milliseconds behind the tip as people read them; "-" when no worker reported it."""
    if ms is None:
        return "-"
    return f"{ms:.0f} ms" if ms < 10_000 else f"{ms / 1000:.0f} s"


def format_time(ms: int | None) -> str:
    """A wall-clock time of day (UTC) as people read it; "-" when there is none."""
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%H:%M:%S")


def format_rate(per_s: float | None) -> str:
    """Lines per second as people read them; "-" when no checkpoint gave one."""
    if per_s is None:
        return "-"
    return f"{per_s:.1f}" if per_s < 100 else f"{per_s:,.0f}"


def filter_rows(rows: Iterable[ShardRow], query: str) -> list[ShardRow]:
    """Rows whose shard id, owner or state contains ``query`` (case-insensitive)."""
    q = query.strip().lower()
    if not q:
        return list(rows)
    return [
        r for r in rows if q in r.shard_id.lower() or q in (r.owner or "").lower() or q in r.state
    ]
