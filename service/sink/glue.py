"""Registers new hive partitions in the Glue Data Catalog so Athena sees data at once, and
evolves the table's columns when extra typed columns are added later (I/O).

Idempotent: BatchCreatePartition reports partitions that exist as ``AlreadyExistsException``
entries, which are expected (another shard or a replayed flush registered them first).
Columns are only ever appended, never retyped: files already written keep their meaning.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from service.schema import CANONICAL_FIELDS
from service.sink.plan import FlushPlan
from service.sink.template import catalog_value

log = logging.getLogger(__name__)

GLUE_BATCH_LIMIT = 100  # BatchCreatePartition accepts at most 100 partitions per call
_HIVE_TYPES = {
    "string": "string",
    "int32": "int",
    "int64": "bigint",
    "float": "float",
    "double": "double",
    "bool": "boolean",
    "timestamp[us, tz=UTC]": "timestamp",
}


_ARROW_TYPES = {
    "string": pa.string(),
    "int": pa.int32(),
    "bigint": pa.int64(),
    "float": pa.float32(),
    "double": pa.float64(),
    "boolean": pa.bool_(),
    "timestamp": pa.timestamp("us", tz="UTC"),
}
# The keys of a GetTable answer that UpdateTable's TableInput accepts.
_TABLE_INPUT_KEYS = (
    "Name",
    "Description",
    "Owner",
    "Retention",
    "StorageDescriptor",
    "PartitionKeys",
    "TableType",
    "Parameters",
)
_EVOLVE_ATTEMPTS = 3


class CatalogError(RuntimeError):
    """Glue refused partitions for a reason other than their existing already."""


@dataclass
class PartitionCatalog:
    """One Glue table's partitions; remembers what it registered to skip repeat calls.

    The memory is bounded (``max_known`` paths, least recently used forgotten first):
    partitions are hourly, so a long-running worker would otherwise hold every hour it
    ever saw. Forgetting costs one idempotent BatchCreatePartition, nothing else.
    """

    glue: Any
    database: str
    table: str
    location: str  # s3://bucket/prefix/logs
    max_known: int = 10_000
    _known: dict[str, None] = field(default_factory=dict)  # insertion order = recency
    _storage: dict[str, Any] | None = None

    async def register(self, partitions: Iterable[str]) -> int:
        """Create each hive path (``dt=…/hour=…/service=…``) not yet known; return how many
        were new to this process. Raises CatalogError for errors other than AlreadyExists."""
        wanted = set(partitions)
        for path in wanted & self._known.keys():
            self._known[path] = self._known.pop(path)  # recently used: forgotten last
        new = sorted(wanted - self._known.keys())
        if not new:
            return 0
        storage = await self._table_storage()
        for start in range(0, len(new), GLUE_BATCH_LIMIT):
            batch = new[start : start + GLUE_BATCH_LIMIT]
            resp = await self.glue.batch_create_partition(
                DatabaseName=self.database,
                TableName=self.table,
                PartitionInputList=[self._input(path, storage) for path in batch],
            )
            errors = [
                e
                for e in resp.get("Errors", [])
                if e.get("ErrorDetail", {}).get("ErrorCode") != "AlreadyExistsException"
            ]
            if errors:
                detail = errors[0].get("ErrorDetail", {})
                raise CatalogError(
                    f"glue {self.database}.{self.table}: {detail.get('ErrorCode')}: "
                    f"{detail.get('ErrorMessage')}"
                )
            # Remembered per batch: a later batch that fails must not send this one again.
            self._remember(batch)
        return len(new)

    def _remember(self, paths: Iterable[str]) -> None:
        self._known.update(dict.fromkeys(paths))
        while len(self._known) > self.max_known:
            del self._known[next(iter(self._known))]

    async def register_plan(self, plan: FlushPlan) -> None:
        """Register the data partitions of an uploaded flush. Never raises: the files are
        durable already, and the next flush touching a partition registers it again."""
        # Only the table's own files: a pipeline routes rows to other tables beside it (§12).
        root = self.location.removeprefix("s3://").partition("/")[2] + "/"
        paths = {o.partition for o in plan.objects if _data_under(o.key, root)}
        try:
            await self.register(paths)
        except Exception:  # the catalog is an index over S3, never a reason to stop a shard
            log.exception(
                "glue partition registration failed",
                extra={"database": self.database, "table": self.table},
            )

    async def _table_storage(self) -> dict[str, Any]:
        if self._storage is None:
            resp = await self.glue.get_table(DatabaseName=self.database, Name=self.table)
            self._storage = dict(resp["Table"].get("StorageDescriptor", {}))
        return self._storage

    def _input(self, path: str, storage: dict[str, Any]) -> dict[str, Any]:
        return {
            "Values": partition_values(path),
            "StorageDescriptor": {**storage, "Location": f"{self.location}/{path}/"},
        }


def _data_under(key: str, root: str) -> bool:
    return key.startswith(root) and key.endswith(".parquet")


def partition_values(path: str) -> list[str]:
    """The values of a hive path, in order, unescaped (``sink.template.catalog_value``):
    ``dt=2026-11-20/hour=06/lg=%2Faws%2Fx`` -> ["2026-11-20", "06", "/aws/x"]."""
    return [catalog_value(segment.partition("=")[2]) for segment in path.split("/")]


def table_input(
    table: str,
    location: str,
    partition_keys: Iterable[str],
    *,
    extra_columns: Iterable[pa.Field[Any]] = (),
) -> dict[str, Any]:
    """A Glue TableInput for the canonical Parquet columns, then ``extra_columns`` (the
    configured typed columns), partitioned by ``partition_keys`` (the names in the partition
    template), as ``tideway setup`` and deploy/ define it."""
    columns = [{"Name": f.name, "Type": hive_type(f)} for f in (*CANONICAL_FIELDS, *extra_columns)]
    return {
        "Name": table,
        "TableType": "EXTERNAL_TABLE",
        "Parameters": {"classification": "parquet", "EXTERNAL": "TRUE"},
        "PartitionKeys": [{"Name": k, "Type": "string"} for k in partition_keys],
        "StorageDescriptor": {
            "Columns": columns,
            "Location": f"{location}/",
            "InputFormat": "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat",
            "OutputFormat": "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat",
            "SerdeInfo": {
                "SerializationLibrary": (
                    "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
                )
            },
        },
    }


def hive_type(column: pa.Field[Any]) -> str:
    """The Glue (Hive) type of one Arrow column (string for a type Glue would not know)."""
    return _HIVE_TYPES.get(str(column.type), "string")


@dataclass(frozen=True, slots=True)
class ColumnEvolution:
    """How a table's columns meet the configured extra columns (pure result).

    ``added``: Glue columns to append; ``written``: the extra columns the writer uses, the
    table's type winning on a conflict (a value that does not fit it stays in
    ``attributes``, as any misfit does), a column of a type the writer cannot produce left
    out (its values stay in ``attributes``); ``conflicts``: (name, table type, configured)."""

    added: tuple[dict[str, str], ...]
    written: tuple[pa.Field[Any], ...]
    conflicts: tuple[tuple[str, str, str], ...]


def evolve_columns(
    current: Iterable[dict[str, Any]], extra: Iterable[pa.Field[Any]]
) -> ColumnEvolution:
    """Append the extra columns the table lacks (Glue names are lower case); keep every
    column the table has, with its type."""
    have = {str(c["Name"]).lower(): str(c.get("Type", "string")).lower() for c in current}
    added: list[dict[str, str]] = []
    written: list[pa.Field[Any]] = []
    conflicts: list[tuple[str, str, str]] = []
    for column in extra:
        wanted = hive_type(column)
        table_type = have.get(column.name.lower())
        if table_type is None:
            added.append({"Name": column.name, "Type": wanted})
            written.append(column)
        elif table_type == wanted:
            written.append(column)
        else:
            conflicts.append((column.name, table_type, wanted))
            if table_type in _ARROW_TYPES:
                written.append(column.with_type(_ARROW_TYPES[table_type]))
    return ColumnEvolution(tuple(added), tuple(written), tuple(conflicts))


async def evolve_table(
    glue: Any, database: str, table: str, extra: tuple[pa.Field[Any], ...]
) -> ColumnEvolution:
    """Append the missing extra columns to the Glue table (re-read and retried when another
    worker updated it meanwhile, at most 3 times); return the evolution. Raises the
    client's error (e.g. EntityNotFoundException) when the table cannot be read."""
    evolution = ColumnEvolution((), extra, ())
    added: tuple[dict[str, str], ...] = ()
    for _ in range(_EVOLVE_ATTEMPTS):
        found = (await glue.get_table(DatabaseName=database, Name=table))["Table"]
        storage = dict(found.get("StorageDescriptor", {}))
        columns = list(storage.get("Columns", []))
        evolution = evolve_columns(columns, extra)
        for name, table_type, wanted in evolution.conflicts:
            log.warning(
                "glue column type differs from the configured extra column; the table's wins",
                extra={"column": name, "table_type": table_type, "configured": wanted},
            )
        if not evolution.added:
            return dataclasses.replace(evolution, added=added)
        added += evolution.added
        storage["Columns"] = columns + list(evolution.added)
        update = {k: found[k] for k in _TABLE_INPUT_KEYS if k in found}
        await glue.update_table(
            DatabaseName=database, TableInput={**update, "StorageDescriptor": storage}
        )
        log.info(
            "glue table columns added",
            extra={"table": f"{database}.{table}", "columns": [c["Name"] for c in evolution.added]},
        )
    return evolution
