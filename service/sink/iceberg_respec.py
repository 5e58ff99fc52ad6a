"""The table's partition spec following the partition template over time (DESIGN §11).

When ``TIDEWAY_PARTITION_TEMPLATE`` gains, loses or changes a column key, ``evolve_spec``
makes the template's spec the table's default one (pyiceberg ``update_spec``); files
already in the table keep the spec they were committed under, and readers prune each file
by its own spec. A flush planned under another template than the table's current spec (a
replay whose intent pinned the old template, a consumer not yet restarted) is never
refused: ``fit_to_spec`` gives its rows as the current spec records them, the file itself
when all its rows are in one partition, else one copy per partition, written beside it
under deterministic names (the same bytes and spec give the same copies, so replays
rewrite identical objects). The original, then unreferenced, goes with orphan removal.
"""

from __future__ import annotations

import hashlib
import logging
import posixpath
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import Table

from service.sink.iceberg_spec import spec_fields
from service.sink.parquet import decode_parquet, encode_parquet

log = logging.getLogger(__name__)
EVOLVE_ATTEMPTS = 10  # lost races (another consumer evolving or committing) before giving up
RESPEC_PREFIX = "respec-"


def _field_keys(spec: PartitionSpec, schema: Schema) -> dict[tuple[str, str], str]:
    """(source column, transform) -> partition field name of each field of ``spec``."""
    return {(schema.find_field(f.source_id).name, str(f.transform)): f.name for f in spec.fields}


def spec_is(spec: PartitionSpec, schema: Schema, keys: tuple[str, ...]) -> bool:
    """Whether ``spec`` is the one the template's ``keys`` give (same fields, any order)."""
    return set(_field_keys(spec, schema)) == {
        (f.source, str(f.transform)) for f in spec_fields(keys)
    }


def evolve_spec(table: Table, keys: tuple[str, ...], columns: pa.Schema) -> tuple[Table, bool]:
    """Make the spec of the template's ``keys`` the table's default spec, in one commit:
    fields the template no longer gives are removed, new ones added (with their source
    column from ``columns`` if the table lacks it, and full column metrics, since the
    partition of a file is read from its bounds). Returns (the table, whether it evolved).
    A lost race reloads and looks again (another consumer may have evolved it already)."""
    for _ in range(EVOLVE_ATTEMPTS):
        schema = table.schema()
        have = _field_keys(table.spec(), schema)
        wanted = spec_fields(keys)
        given = {(f.source, str(f.transform)) for f in wanted}
        if set(have) == given:
            return table, False
        tx = table.transaction()
        missing = [columns.field(f.source) for f in wanted if f.source not in schema.column_names]
        if missing:
            with tx.update_schema() as update:
                update.union_by_name(pa.schema([f.with_nullable(True) for f in missing]))
        tx.set_properties({f"write.metadata.metrics.column.{f.source}": "full" for f in wanted[1:]})
        gone = [name for key, name in have.items() if key not in given]
        if gone:  # removed in an update of its own: a changed transform may keep its name
            with tx.update_spec() as update:
                for name in gone:
                    update.remove_field(name)
        with tx.update_spec() as update:
            for f in wanted:
                if (f.source, str(f.transform)) not in have:
                    update.add_field(f.source, f.transform, f.name)
        try:
            evolved = tx.commit_transaction()
        except CommitFailedException:
            table = table.refresh()
            continue
        log.warning(
            "iceberg partition spec evolved to the partition template",
            extra={"spec_id": evolved.spec().spec_id, "fields": [f.name for f in wanted]},
        )
        return evolved, True
    raise CommitFailedException(f"partition spec evolution lost {EVOLVE_ATTEMPTS} races")


def row_partitions(rows: pa.Table, spec: PartitionSpec, schema: Schema) -> list[tuple[Any, ...]]:
    """Each row's partition under ``spec`` (pyiceberg's transforms of its source columns;
    null where the file lacks the column, as a reader sees it)."""
    columns = [_transformed(rows, field, schema) for field in spec.fields]
    return list(zip(*columns, strict=True)) if columns else [()] * rows.num_rows


def _transformed(rows: pa.Table, field: PartitionField, schema: Schema) -> list[Any]:
    source = schema.find_field(field.source_id)
    if source.name not in rows.column_names:
        return [None] * rows.num_rows
    values: Any = rows.column(source.name).combine_chunks()
    if pa.types.is_timestamp(values.type):  # Iceberg transforms take microseconds
        values = values.cast(pa.timestamp("us", tz=values.type.tz)).cast(pa.int64())
    encoded: Any = pc.dictionary_encode(values)
    transform = field.transform.transform(source.field_type)
    distinct = [None if v is None else transform(v) for v in encoded.dictionary.to_pylist()]
    return [None if i is None else distinct[i] for i in encoded.indices.to_pylist()]


def fit_to_spec(table: Table, path: str, body: bytes) -> list[tuple[str, bytes]]:
    """``(path, body)`` of the file as the table's default spec can record it: itself when
    its rows are in one partition of that spec, else one copy per partition (rows in the
    file's order), written through the table's FileIO beside the original."""
    rows = decode_parquet(body)
    spec = table.spec()
    parts = row_partitions(rows, spec, table.schema())
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, part in enumerate(parts):
        groups.setdefault(part, []).append(i)
    if len(groups) <= 1:
        return [(path, body)]
    directory, name = posixpath.split(path)
    out = []
    for part in sorted(groups, key=repr):
        digest = hashlib.blake2b(f"{spec.spec_id}|{part!r}".encode(), digest_size=8).hexdigest()
        copy = f"{directory}/{RESPEC_PREFIX}{digest}-{name}"
        data = encode_parquet(rows.take(pa.array(groups[part], pa.int64())))
        with table.io.new_output(copy).create(overwrite=True) as stream:
            stream.write(data)
        out.append((copy, data))
    log.warning(
        "a file planned under another partition template was split for the table's spec",
        extra={"file": path, "copies": len(out), "spec_id": spec.spec_id},
    )
    return out


def fit_all(table: Table, files: Sequence[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """``fit_to_spec`` of every file, in order."""
    return [fitted for path, body in files for fitted in fit_to_spec(table, path, body)]
