"""Hive partitioning by event time (UTC), service and any other template key, with a
cardinality guard (pure).

The guard counts *partition names*: the escaped values of a row's template keys joined by
``/`` (an escaped value never holds one), so for the default template a name is the safe
service name, and a template with more keys caps the combinations the same way.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from service.sink.iceberg_spec import value_transform
from service.sink.lineage import Lineage
from service.sink.opened import HOUR_US, OpenedPartitions, cap_across_flushes
from service.sink.template import (
    ATTRIBUTES,
    OTHER_SERVICE,
    SERVICE,
    PartitionTemplate,
    escape_value,
    split_key,
)

__all__ = [
    "OTHER_SERVICE",
    "OpenedPartitions",
    "PartitionTemplate",
    "event_hours",
    "guard_partitions",
    "hour_path",
    "partition_keys",
    "partition_names",
    "safe_service",
    "safe_service_names",
    "safe_services",
    "with_partitions",
]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def safe_service(name: str) -> str:
    """A service name usable as one path segment (hive style, no '/', '=' or spaces)."""
    cleaned = _UNSAFE.sub("_", name)[:128].strip(".")
    return cleaned or "unknown"


def safe_services(services: pa.Array[Any]) -> pa.Array[Any]:
    """``safe_service`` of every value, computed once per distinct name (columnar)."""
    encoded = safe_service_names(services)
    return pc.take(encoded.dictionary, encoded.indices)


def safe_service_names(services: pa.Array[Any]) -> pa.DictionaryArray[Any, Any]:
    """``safe_services`` dictionary-encoded: the distinct names' safe forms (which may
    repeat: two names can clean to one) and each row's index, null for a null name."""
    encoded: Any = pc.dictionary_encode(services)
    names = [safe_service(v) for v in encoded.dictionary.to_pylist()]
    return pa.DictionaryArray.from_arrays(encoded.indices, pa.array(names, pa.string()))


def event_hours(table: pa.Table) -> np.ndarray[Any, Any]:
    """Each row's hour of ``timestamp`` since the epoch, UTC (floor division: hours before
    1970 stay exact)."""
    ts = table.column("timestamp").combine_chunks().cast(pa.int64()).to_numpy()
    hours: np.ndarray[Any, Any] = ts // HOUR_US
    return hours


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
    table: pa.Table,
    limit: int,
    opened: OpenedPartitions | None = None,
    template: PartitionTemplate | None = None,
    lineage: Lineage | None = None,
) -> tuple[pa.Table, OpenedPartitions | None]:
    """Add ``_hour`` (hours since the epoch) and ``_service`` (the guarded partition name,
    see ``partition_names``) working columns, at most ``limit`` partitions in the flush
    and, given the partitions the shard ``opened`` earlier in the hour, at most ``limit``
    in that hour (returns the state after the flush; None without one). Whenever the
    partition's service differs from the row's (sanitised or overflowed), the original is
    noted in ``attributes`` under ``"service"`` so nothing is lost (other keys are columns
    or attributes already). Dates and hour strings are rendered once per partition.
    Keys that are lineage columns (``source``, ``log_group``, ...) are read from ``lineage``.
    """
    template = template or PartitionTemplate()
    hours = pa.array(event_hours(table))
    raw = table.column("service").combine_chunks()
    safe = safe_services(raw)
    names = safe if template.keys == (SERVICE,) else partition_names(table, template, safe, lineage)
    guarded, hours = guard_partitions(names, hours, limit)
    if opened is not None:
        guarded, hours, opened = cap_across_flushes(guarded, hours, opened, limit)
    other = pa.scalar(OTHER_SERVICE, pa.string())
    shown = pc.if_else(pc.equal(guarded, other), other, safe)
    changed: list[Any] = pc.indices_nonzero(pc.not_equal(shown, raw)).to_pylist()
    if changed:
        table = _keep_original_services(table, raw, changed)
    return table.append_column("_hour", hours).append_column("_service", guarded), opened


def partition_names(
    table: pa.Table,
    template: PartitionTemplate,
    safe: pa.Array[Any],
    lineage: Lineage | None = None,
) -> pa.Array[Any]:
    """Each row's partition name: the escaped value of every template key (``safe``, the
    path-safe service names, for ``{service}``) joined by ``/``. Columnar: each distinct
    value of a key is escaped once (a lineage column's once per batch). Raises ValueError
    for a key that is no column of the flush."""
    parts = [safe if key == SERVICE else _escaped(table, key, lineage) for key in template.keys]
    join: Any = pc.binary_join_element_wise
    names: pa.Array[Any] = join(*parts, "/")
    return names


def _escaped(table: pa.Table, key: str, lineage: Lineage | None) -> pa.Array[Any]:
    if ":" in key:  # a value transform (truncate, bucket): per distinct value
        return _transformed(table, key, lineage)
    if lineage is not None and key in lineage.per_batch and key not in table.column_names:
        per_batch = lineage.per_batch[key].cast(pa.string()).to_pylist()
        escaped_batches = pa.array([escape_value(v) for v in per_batch], pa.string())
        return escaped_batches.take(pa.array(lineage.batch_of_row, pa.int64()))
    if key.startswith(ATTRIBUTES):
        source = table.column("attributes").combine_chunks()
        path = tuple(key[len(ATTRIBUTES) :].split("."))
        encoded: Any = pc.dictionary_encode(source)
        values = [escape_value(v) for v in attribute_values(encoded.dictionary, path)]
    else:
        if key not in table.column_names:
            raise ValueError(f"partition_template field {{{key}}} is not a column of the table")
        column = table.column(key).combine_chunks()
        encoded = pc.dictionary_encode(
            column if pa.types.is_string(column.type) else column.cast(pa.string())
        )
        values = [escape_value(v) for v in encoded.dictionary.to_pylist()]
    escaped: pa.Array[Any] = pc.take(pa.array(values, pa.string()), encoded.indices)
    # A null row has a null index: its value is the placeholder of a missing value.
    fill: Any = pc.fill_null
    filled: pa.Array[Any] = fill(escaped, escape_value(None))
    return filled


def _transformed(table: pa.Table, key: str, lineage: Lineage | None) -> pa.Array[Any]:
    """The escaped, transformed value of a ``{column:transform[N]}`` key, row by row: the
    transform (Iceberg's, sink/iceberg_spec.py) runs once per distinct value."""
    column_name, _ = split_key(key)
    if lineage is not None and column_name in lineage.per_batch:
        if column_name not in table.column_names:
            per_batch = lineage.per_batch[column_name]
            column = per_batch.take(pa.array(lineage.batch_of_row, pa.int64()))
        else:
            column = table.column(column_name).combine_chunks()
    elif column_name in table.column_names:
        column = table.column(column_name).combine_chunks()
    else:
        raise ValueError(f"partition_template field {{{key}}} is not a column of the table")
    transform = value_transform(key, column.type)
    assert transform is not None
    encoded: Any = pc.dictionary_encode(column)
    values = [
        escape_value(None if v is None else str(transform(v)))
        for v in encoded.dictionary.to_pylist()
    ]
    escaped: pa.Array[Any] = pc.take(pa.array(values, pa.string()), encoded.indices)
    fill: Any = pc.fill_null
    filled: pa.Array[Any] = fill(escaped, escape_value(None))
    return filled


def attribute_values(documents: pa.Array[Any], path: tuple[str, ...]) -> list[str | None]:
    """``attribute_value`` of each of ``documents`` (a flush's distinct ``attributes``).

    Decoding a document costs ~2 us, and a template's attribute is often in some lines only
    (a tenant on one service's lines). A document whose text holds neither the path's first
    key nor its flat key, each quoted, nor a ``\\u`` escape (the only other way to write
    a key's characters: the path's need no escape) holds neither key: None, not decoded.
    One RE2 search a document finds the others (25 ms for the writer benchmark's 70,000
    ``attributes``, against 151 ms decoding them all); when most of the first documents
    may hold the key, every document is decoded without the search.
    """
    needles = [*sorted({f'"{path[0]}"', f'"{".".join(path)}"'}), "\\u"]
    pattern = "|".join(re.escape(n) for n in needles)
    fill: Any = pc.fill_null  # pyarrow-stubs type no implicit scalar casts
    sample = fill(pc.match_substring_regex(documents.slice(0, _SAMPLED), pattern), False)
    if pc.sum(sample).as_py() * 2 >= len(sample):  # the common case: decode them all
        return [attribute_value(doc, path) for doc in documents.to_pylist()]
    held = fill(pc.match_substring_regex(documents, pattern), False)
    out: list[str | None] = [None] * len(documents)
    rows = pc.indices_nonzero(held).to_pylist()
    for row, doc in zip(rows, documents.take(pa.array(rows, pa.int64())).to_pylist(), strict=True):
        out[row] = attribute_value(doc, path)
    return out


# Documents searched first to guess whether most hold the key (a guess: same values either way).
_SAMPLED = 512


def attribute_value(document: str | None, path: tuple[str, ...]) -> str | None:
    """The value at ``path`` in an ``attributes`` JSON document: nested objects first
    (``env.tier`` -> ``{"env": {"tier": ...}}``), else the flat key ``"env.tier"``; a
    string as it is, any other JSON value as its JSON text; None when absent or null.

    A per-row loop over the distinct documents of a flush (~2 us each with orjson); only
    templates with an ``attributes.`` key pay it."""
    if not document:
        return None
    obj: Any = orjson.loads(document)
    found: Any = obj
    for step in path:
        if not isinstance(found, dict) or step not in found:
            found = obj.get(".".join(path)) if isinstance(obj, dict) else None
            break
        found = found[step]
    if found is None or isinstance(found, str):
        return found
    return orjson.dumps(found).decode()


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


def hour_path(hour: int, name: str, template: PartitionTemplate) -> str:
    """The hive path of hour ``hour`` (since the epoch, UTC) and partition ``name``
    (``partition_names``; ``__other__`` stands for every key of an overflowed row)."""
    when = datetime.fromtimestamp(hour * 3600, UTC)
    keys = template.keys
    parts = [name] * len(keys) if name == OTHER_SERVICE else name.split("/")
    values = dict(zip(keys, parts, strict=True))
    return template.render(when.strftime("%Y-%m-%d"), when.strftime("%H"), values)
