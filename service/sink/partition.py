"""Hive partitioning by event time (UTC) and service, with a cardinality guard (pure)."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

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


def guard_services(services: pa.Array, dates: pa.Array, hours: pa.Array, limit: int) -> pa.Array:
    """Cap distinct (date, hour, service) partitions at ``limit`` per flush.

    The most populated partitions keep their service (ties by name, so deterministic); rows
    of the rest go to ``__other__``. Callers keep the original name in ``attributes``.
    """
    triples = Counter(zip(dates.to_pylist(), hours.to_pylist(), services.to_pylist(), strict=True))
    if len(triples) <= limit:
        return services
    ranked = sorted(triples.items(), key=lambda kv: (-kv[1], kv[0]))
    keep = {t for t, _ in ranked[: max(limit - 1, 0)]}
    out = [
        s if (d, h, s) in keep else OTHER_SERVICE
        for d, h, s in zip(dates.to_pylist(), hours.to_pylist(), services.to_pylist(), strict=True)
    ]
    return pa.array(out, pa.string())


def with_partitions(table: pa.Table, limit: int) -> pa.Table:
    """Add ``_date``, ``_hour``, ``_service`` path values; overflowed services are noted in
    ``attributes`` under ``"service"`` so nothing is lost."""
    ts = table.column("timestamp")
    dates = pc.strftime(ts, format="%Y-%m-%d")
    hours = pc.strftime(ts, format="%H")
    raw = table.column("service").combine_chunks()
    safe = pa.array([safe_service(s) for s in raw.to_pylist()], pa.string())
    guarded = guard_services(safe, dates.combine_chunks(), hours.combine_chunks(), limit)
    if guarded is not safe:
        attrs = table.column("attributes").to_pylist()
        for i, (g, original) in enumerate(zip(guarded.to_pylist(), raw.to_pylist(), strict=True)):
            if g == OTHER_SERVICE:
                merged = orjson.loads(attrs[i]) if attrs[i] else {}
                merged["service"] = original
                attrs[i] = orjson.dumps(merged).decode()
        table = table.set_column(
            table.schema.get_field_index("attributes"), "attributes", pa.array(attrs, pa.string())
        )
    return (
        table.append_column("_date", dates)
        .append_column("_hour", hours)
        .append_column("_service", guarded)
    )
