"""Registers new hive partitions in the Glue Data Catalog so Athena sees data at once (I/O).

Idempotent: BatchCreatePartition reports partitions that exist as ``AlreadyExistsException``
entries, which are expected (another shard or a replayed flush registered them first).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from service.schema import CANONICAL_FIELDS
from service.sink.plan import FlushPlan

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
    """The values of a hive path, in order: ``dt=2026-11-20/hour=06`` -> ["2026-11-20", "06"]."""
    return [segment.partition("=")[2] for segment in path.split("/")]


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
    columns = [
        {"Name": f.name, "Type": _HIVE_TYPES.get(str(f.type), "string")}
        for f in (*CANONICAL_FIELDS, *extra_columns)
    ]
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
