"""Hive partitioning by event time (UTC) and service, with a cardinality guard (pure)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

OTHER_SERVICE = "__other__"
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


def guard_services(services: pa.Array[Any], hours: pa.Array[Any], limit: int) -> pa.Array[Any]:
    """Cap distinct (hour, service) partitions at ``limit`` per flush (columnar).

    ``hours`` counts hours since the epoch (so it orders like the date and hour strings).
    The most populated partitions keep their service (ties by hour, then name, so
    deterministic); rows of the rest go to ``__other__``. Callers keep the original name
    in ``attributes``.
    """
    keys = pa.table({"h": hours, "s": services})
    counts = keys.group_by(["h", "s"], use_threads=False).aggregate([("h", "count")])
    if counts.num_rows <= limit:
        return services
    ranked = counts.sort_by([("h_count", "descending"), ("h", "ascending"), ("s", "ascending")])
    keep = ranked.slice(0, max(limit - 1, 0))
    wanted = partition_keys(keep["h"].combine_chunks(), keep["s"].combine_chunks())
    have = partition_keys(hours, services)
    out: pa.Array[Any] = pc.if_else(pc.is_in(have, value_set=wanted), services, OTHER_SERVICE)
    return out


def partition_keys(hours: pa.Array[Any], services: pa.Array[Any]) -> pa.Array[Any]:
    """One comparable string per (hour, service) pair."""
    join: Any = pc.binary_join_element_wise
    keys: pa.Array[Any] = join(hours.cast(pa.string()), services, "\x00")
    return keys


def with_partitions(table: pa.Table, limit: int) -> pa.Table:
    """Add ``_hour`` (hours since the epoch), ``_service`` (path-safe, guarded) partition
    values; overflowed services are noted in ``attributes`` under ``"service"`` so nothing is
    lost. Dates and hour strings are rendered once per partition, not per row."""
    ts = table.column("timestamp").combine_chunks().cast(pa.int64()).to_numpy()
    hours = pa.array(ts // 3_600_000_000)  # floor division: hours before 1970 stay exact
    raw = table.column("service").combine_chunks()
    safe = safe_services(raw)
    guarded = guard_services(safe, hours, limit)
    if guarded is not safe:
        overflow: list[Any] = pc.indices_nonzero(pc.not_equal(guarded, safe)).to_pylist()
        attrs: list[Any] = table.column("attributes").to_pylist()
        originals: list[Any] = raw.to_pylist()
        for i in overflow:  # per-row only for the overflowed rows
            merged = orjson.loads(attrs[i]) if attrs[i] else {}
            merged["service"] = originals[i]
            attrs[i] = orjson.dumps(merged).decode()
        table = table.set_column(
            table.schema.get_field_index("attributes"), "attributes", pa.array(attrs, pa.string())
        )
    return table.append_column("_hour", hours).append_column("_service", guarded)


def hour_path(hour: int, service: str, template: PartitionTemplate) -> str:
    """The hive path of hour ``hour`` (since the epoch, UTC) and ``service``."""
    when = datetime.fromtimestamp(hour * 3600, UTC)
    return template.render(when.strftime("%Y-%m-%d"), when.strftime("%H"), service)
