"""A shard's progress as its lease item carries it (pure): lag, last flush, running totals.

Written with every checkpoint, in the same fenced UpdateItem (no call of its own), as the map
attribute ``progress``: ``at`` (the writer's wall clock at the checkpoint, epoch ms: for
people and rates, never compared for liveness), ``lag`` (MillisBehindLatest as last read),
``rate`` (rows per second since the previous checkpoint), and totals since the shard's
first flush, over every owner: ``rows`` landed, ``bytes`` written to S3, ``dead`` letters
by class (service/telemetry/reasons.py) and ``tables`` (rows by destination table). An heir
starts from the totals of the checkpoint it took over (its acquire returns the item), and a
range replayed from an open intent is counted once: by the checkpoint that closes it.
The console and ``tideway status`` read it from the lease table (docs/console.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from service.sink.plan import FlushPlan
from service.telemetry.reasons import dead_letter_class

PROGRESS_ATTRIBUTE = "progress"


@dataclass(frozen=True, slots=True)
class ShardProgress:
    at_ms: int = 0
    lag_ms: int | None = None
    rows_per_s: float | None = None
    rows: int = 0
    bytes: int = 0
    dead: Mapping[str, int] = field(default_factory=dict)
    tables: Mapping[str, int] = field(default_factory=dict)

    def after_flush(
        self, plan: FlushPlan, dead_reasons: Sequence[str], lag_ms: int, at_ms: int
    ) -> ShardProgress:
        """The progress once ``plan`` is checkpointed at ``at_ms``; ``dead_reasons`` are the
        reasons of its records that failed to decode (its other dead letters could not be
        mapped), as ConsumerMetrics.observe_flush counts them."""
        tables = dict(self.tables)
        for obj in plan.objects:
            if obj.key.endswith(".parquet"):
                table = table_of(obj.key, obj.partition)
                tables[table] = tables.get(table, 0) + obj.rows
        dead = dict(self.dead)
        for why in dead_reasons:
            cls = dead_letter_class(why)
            dead[cls] = dead.get(cls, 0) + 1
        if plan.dead_letters > len(dead_reasons):
            dead["unmappable"] = dead.get("unmappable", 0) + plan.dead_letters - len(dead_reasons)
        rows, size = plan.rows, plan.bytes_out
        span = (at_ms - self.at_ms) / 1000 if self.at_ms else 0.0
        return ShardProgress(
            at_ms=at_ms,
            lag_ms=lag_ms,
            rows_per_s=round(rows / span, 3) if span > 0 else None,
            rows=self.rows + rows,
            bytes=self.bytes + size,
            dead=dead,
            tables=tables,
        )

    def to_item(self) -> dict[str, Any]:
        """The DynamoDB map value (``{"M": …}``)."""
        m: dict[str, Any] = {
            "at": {"N": str(self.at_ms)},
            "rows": {"N": str(self.rows)},
            "bytes": {"N": str(self.bytes)},
            "dead": {"M": {k: {"N": str(v)} for k, v in self.dead.items()}},
            "tables": {"M": {k: {"N": str(v)} for k, v in self.tables.items()}},
        }
        if self.lag_ms is not None:
            m["lag"] = {"N": str(self.lag_ms)}
        if self.rows_per_s is not None:
            m["rate"] = {"N": str(self.rows_per_s)}
        return {"M": m}


def table_of(key: str, partition: str) -> str:
    """The destination table of a data object: the folder above its partition path
    (``{prefix}{table}/{partition}/{file}``, service/sink/plan.py Layout.data_key)."""
    head = key[: key.rfind(f"/{partition}/")] if partition else key.rpartition("/")[0]
    return head.rpartition("/")[2]


def progress_from_item(value: Mapping[str, Any] | None) -> ShardProgress | None:
    """The progress in a lease item's ``progress`` attribute (None when absent)."""
    m = value.get("M") if value else None
    if m is None:
        return None
    # Inlined: the console parses one per shard on every page (1,000 shards: ~5 ms).
    lag, rate = m.get("lag"), m.get("rate")
    return ShardProgress(
        at_ms=int(m["at"]["N"]) if "at" in m else 0,
        lag_ms=int(lag["N"]) if lag else None,
        rows_per_s=float(rate["N"]) if rate else None,
        rows=int(m["rows"]["N"]) if "rows" in m else 0,
        bytes=int(m["bytes"]["N"]) if "bytes" in m else 0,
        dead=_counts(m.get("dead")),
        tables=_counts(m.get("tables")),
    )


def _counts(value: Mapping[str, Any] | None) -> dict[str, int]:
    return {k: int(v["N"]) for k, v in value["M"].items()} if value else {}
