"""The Iceberg tables' commit and compaction state for the overview (issue 19).

``table_view`` turns a pyiceberg Table's metadata into a plain ``TableView`` (pure);
``behind`` compares each shard's committed watermark with its lease-table checkpoint.
``read_tables`` loads the default table through the catalog in a thread and never raises:
an error becomes a one-line reason shown on the page, as cloudwatch.py does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from service.consume.context import iceberg_properties
from service.sink.compact import SUMMARY_KEY
from service.sink.iceberg import open_catalog
from service.sink.iceberg_commit import WATERMARK_PREFIX


@dataclass(frozen=True, slots=True)
class TableView:
    name: str
    snapshot_id: int | None
    snapshot_at: str
    operation: str
    records: int
    data_files: int
    size_bytes: int
    last_compaction: str  # time of the latest compaction snapshot, "" if none
    snapshots: int
    # shard -> the last sequence number committed to this table (table properties)
    watermarks: Mapping[str, int] = field(default_factory=dict)
    behind: tuple[str, ...] = ()  # shards checkpointed past their watermark (should be none)

    @property
    def mean_file_bytes(self) -> int:
        return self.size_bytes // self.data_files if self.data_files else 0


def _at(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def watermarks_of(properties: Mapping[str, str], stream: str) -> dict[str, int]:
    """Each shard's committed watermark in a table's properties (iceberg_commit's keys)."""
    head = f"{WATERMARK_PREFIX}{stream}."
    return {k[len(head) :]: int(v) for k, v in properties.items() if k.startswith(head)}


def table_view(name: str, table: Any, stream: str = "") -> TableView:
    """The plain view of a pyiceberg ``Table``'s current metadata."""
    marks = watermarks_of(table.properties, stream)
    snapshots = list(table.metadata.snapshots)
    current = table.current_snapshot()
    replaces = [
        s
        for s in snapshots
        if s.summary is not None and SUMMARY_KEY in s.summary.additional_properties
    ]
    last_compaction = _at(max(s.timestamp_ms for s in replaces)) if replaces else ""
    if current is None:
        return TableView(name, None, "", "", 0, 0, 0, last_compaction, len(snapshots), marks)
    summary = current.summary
    props: Mapping[str, str] = summary.additional_properties if summary is not None else {}
    return TableView(
        name=name,
        snapshot_id=current.snapshot_id,
        snapshot_at=_at(current.timestamp_ms),
        operation=summary.operation.value if summary is not None else "",
        records=int(props.get("total-records", 0)),
        data_files=int(props.get("total-data-files", 0)),
        size_bytes=int(props.get("total-files-size", 0)),
        last_compaction=last_compaction,
        snapshots=len(snapshots),
        watermarks=marks,
    )


def behind(
    watermarks: Mapping[str, int | None], checkpoints: Mapping[str, int | None]
) -> list[str]:
    """Shards checkpointed past their committed watermark (checkpointed, not yet committed)."""
    out = []
    for shard, checkpoint in sorted(checkpoints.items()):
        committed = watermarks.get(shard)
        if checkpoint is not None and (committed is None or committed < checkpoint):
            out.append(shard)
    return out


def with_checkpoints(view: TableView, checkpoints: Mapping[str, str | None]) -> TableView:
    """``view`` with the shards whose lease-table checkpoint (wire form; sentinels are not
    compared) is past the table's committed watermark: a commit must precede a checkpoint."""
    numbers = {s: int(c) if c and c.isdigit() else None for s, c in checkpoints.items()}
    return replace(view, behind=tuple(behind(view.watermarks, numbers)))


async def read_tables(load: Any, names: list[str], stream: str = "") -> tuple[list[TableView], str]:
    """Views of ``names`` via ``load(name) -> Table`` (blocking, run in a thread); never raises."""
    views: list[TableView] = []
    try:
        for name in names:
            table = await asyncio.to_thread(load, name)
            views.append(table_view(name, table, stream))
    except Exception as e:
        return views, f"{type(e).__name__}: {e}".splitlines()[0]
    return views, ""


CACHE_SECONDS = 30.0
_cache: dict[str, tuple[float, list[TableView], str]] = {}


async def overview_tables(settings: Any, s3: Any) -> tuple[list[TableView], str]:
    """The default Iceberg table's view, read at most once per ``CACHE_SECONDS``."""
    name = settings.iceberg_table
    hit = _cache.get(name)
    if hit is not None and time.monotonic() - hit[0] < CACHE_SECONDS:
        return hit[1], hit[2]

    def load(table: str) -> Any:
        return open_catalog(iceberg_properties(settings, s3)).load_table(table)

    views, problem = await read_tables(load, [name], settings.stream)
    _cache[name] = (time.monotonic(), views, problem)
    return views, problem
