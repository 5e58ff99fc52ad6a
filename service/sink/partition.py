"""Hive partitioning by event time (UTC) and service, with a cardinality guard (pure)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from service.sink.opened import HOUR_US, OTHER_SERVICE, OpenedPartitions, cap_across_flushes

__all__ = [
    "OTHER_SERVICE",
    "OpenedPartitions",
    "PartitionTemplate",
    "guard_partitions",
    "hour_path",
    "partition_keys",
    "safe_service",
    "safe_services",
    "with_partitions",
]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_FIELDS = ("date", "hour", "service")


@dataclass(frozen=True, slots=True)
class PartitionTemplate:
    """A path template over ``{date}``, ``{hour}`` and ``{service}``, e.g. the default
    ``dt={date}/hour={hour}/service={service}``."""

    template: str = "dt={date}/hour={hour}/service={service}"

    def __post_init__(self) -> None:
        names = set(re.findall(r"{(\w+)}", self.template))
        if not names <= set(_FIELDS) or "{date}" not in self.template:
            raise ValueError(
                "partition_template may use only {date}, {hour}, {service} and must use {date}"
            )

    def render(self, date: str, hour: str, service: str) -> str:
        return self.template.format(date=date, hour=hour, service=service)


def safe_service(name: str) -> str:
    """A service name usable as one path segment (hive style, no '/', '=' or spaces)."""
    cleaned = _UNSAFE.sub("_", name)[:128].strip(".")
    return cleaned or "unknown"


def safe_services(services: pa.Array[Any]) -> pa.Array[Any]:
    """``safe_service`` of every value, computed once per distinct name (columnar)."""
    encoded: Any = pc.dictionary_encode(services)
    names = [safe_service(v) for v in encoded.dictionary.to_pylist()]
    return pc.take(pa.array(names, pa.string()), encoded.indices)


def guard_partitions(
    services: pa.Array[Any], hours: pa.Array[Any], limit: int
) -> tuple[pa.Array[Any], pa.Array[Any]]:
    """Cap the (hour, service) partitions of one flush at ``limit``, whatever the spread of
    hours and services (columnar, deterministic: the same rows give the same partitions).

    ``hours`` counts hours since the epoch. The busiest hours, at most ``limit // 2`` of
    them (ties: earlier first), are *open*: each may hold an ``__other__`` partition. The
    busiest (hour, service) pairs of open hours keep their place (ties by hour, then name),
    as many as the rest of the budget allows. Every other row goes to ``__other__`` in its
    own hour if open, else in the busiest hour (its event time stays in ``timestamp``).
    Returns the guarded ``(services, hours)``; callers keep the original name in
    ``attributes``.
    """
    keys = pa.table({"h": hours, "s": services})
    counts = keys.group_by(["h", "s"], use_threads=False).aggregate([("h", "count")])
    if counts.num_rows <= limit:
        return services, hours
    per_hour = keys.group_by("h", use_threads=False).aggregate([("s", "count")])
    busiest = per_hour.sort_by([("s_count", "descending"), ("h", "ascending")])
    open_hours = busiest["h"].combine_chunks().slice(0, max(limit // 2, 1))
    ranked = counts.filter(pc.is_in(counts["h"], value_set=open_hours)).sort_by(
        [("h_count", "descending"), ("h", "ascending"), ("s", "ascending")]
    )
    top = ranked.slice(0, max(limit - len(open_hours), 0))
    wanted = partition_keys(top["h"].combine_chunks(), top["s"].combine_chunks())
    is_kept = pc.is_in(partition_keys(hours, services), value_set=wanted)
    stays = pc.or_(is_kept, pc.is_in(hours, value_set=open_hours))
    out_services: pa.Array[Any] = pc.if_else(is_kept, services, OTHER_SERVICE)
    out_hours: pa.Array[Any] = pc.if_else(stays, hours, open_hours[0])
    return out_services, out_hours


def partition_keys(hours: pa.Array[Any], services: pa.Array[Any]) -> pa.Array[Any]:
    """One comparable string per (hour, service) pair."""
    join: Any = pc.binary_join_element_wise
    keys: pa.Array[Any] = join(hours.cast(pa.string()), services, "\x00")
    return keys


def with_partitions(
    table: pa.Table, limit: int, opened: OpenedPartitions | None = None
) -> tuple[pa.Table, OpenedPartitions | None]:
    """Add ``_hour`` (hours since the epoch) and ``_service`` (path-safe, guarded) partition
    values, at most ``limit`` partitions in the flush and, given the partitions the shard
    ``opened`` earlier in the hour, at most ``limit`` in that hour (returns the state after
    the flush; None without one). Whenever the partition's service differs from the row's
    (sanitised or overflowed), the original is noted in ``attributes`` under ``"service"``
    so nothing is lost. Dates and hour strings are rendered once per partition.
    """
    ts = table.column("timestamp").combine_chunks().cast(pa.int64()).to_numpy()
    hours = pa.array(ts // HOUR_US)  # floor division: hours before 1970 stay exact
    raw = table.column("service").combine_chunks()
    guarded, hours = guard_partitions(safe_services(raw), hours, limit)
    if opened is not None:
        guarded, hours, opened = cap_across_flushes(guarded, hours, opened, limit)
    changed: list[Any] = pc.indices_nonzero(pc.not_equal(guarded, raw)).to_pylist()
    if changed:
        table = _keep_original_services(table, raw, changed)
    return table.append_column("_hour", hours).append_column("_service", guarded), opened


def _keep_original_services(table: pa.Table, raw: pa.Array[Any], changed: list[int]) -> pa.Table:
    """``attributes["service"]`` = the original name on the ``changed`` rows.

    A per-row loop over the changed rows only (~2 us a row with orjson); the rest of the
    column is copied as is.
    """
    attrs: list[Any] = table.column("attributes").to_pylist()
    originals: list[Any] = raw.take(pa.array(changed, pa.int64())).to_pylist()
    for i, original in zip(changed, originals, strict=True):
        merged = orjson.loads(attrs[i]) if attrs[i] else {}
        merged["service"] = original
        attrs[i] = orjson.dumps(merged).decode()
    index = table.schema.get_field_index("attributes")
    return table.set_column(index, "attributes", pa.array(attrs, pa.string()))


def hour_path(hour: int, service: str, template: PartitionTemplate) -> str:
    """The hive path of hour ``hour`` (since the epoch, UTC) and ``service``."""
    when = datetime.fromtimestamp(hour * 3600, UTC)
    return template.render(when.strftime("%Y-%m-%d"), when.strftime("%H"), service)
