"""The Iceberg tables of one consumer (I/O): the default table and one per pipeline table
(DESIGN §12: ``table = "waf"`` routes to ``namespace.waf``), each committed exactly once by
its own per-shard watermark (sink/iceberg_commit.py).

A flush's data objects name their table in their key (``{prefix}{table}/…``, sink/plan.py).
Its pipeline tables are committed first and the default table last, always (a snapshot
without files when the flush wrote no default rows): so the default table's watermark at or
past a flush's ``last`` means the whole flush is in every table, which is what a replay
reads before it uploads anything. A crash between two tables' commits leaves the default
watermark behind; the replay commits again and each table already holding the range adds
nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from random import Random  # the class: the simulation swaps the module for a generator

import pyarrow as pa
from pyiceberg.catalog import Catalog

from service.pipeline.engine import DEFAULT_TABLE, VERSION_COLUMN, Pipelines
from service.sink.iceberg import check_location, check_spec, ensure_table, split_identifier
from service.sink.iceberg_commit import CommitStats, FlushFiles, TableCommitter, TableFile


class TableRouter:
    """Commits each flush to the tables its objects belong to; pipeline tables are created
    (with ``schema``, the default table's columns) when first used."""

    def __init__(
        self,
        catalog: Catalog,
        default: str,
        *,
        stream: str,
        bucket: str,
        prefix: str,
        schema: pa.Schema,
        rng: Random,
        schemas: Mapping[str, pa.Schema] | None = None,
        keys: tuple[str, ...] = ("service",),
        on_commit: Callable[[CommitStats], None] | None = None,
    ) -> None:
        self._catalog = catalog
        self.default = default
        self.stream, self.bucket, self.prefix = stream, bucket, prefix
        self._schema = schema
        self._schemas = dict(schemas or {})  # a pipeline table's columns, when known
        self._keys = keys  # the partition template's keys: the spec of a new table
        self._on_commit = on_commit
        self._rng = rng
        self._committers: dict[str, TableCommitter] = {}
        self._opening = asyncio.Lock()

    def identifier(self, table: str) -> str:
        """The catalog identifier of a layout table (``logs``, a pipeline's ``waf``)."""
        if table == DEFAULT_TABLE:
            return self.default
        namespace, _ = split_identifier(self.default)
        return f"{namespace}.{table}"

    def location(self, table: str) -> str:
        """Where the consumer writes the table's objects: the Hive layout's prefix."""
        return f"s3://{self.bucket}/{self.prefix}{table}"

    def table_of(self, key: str) -> str:
        """The layout table of a data object's key."""
        return key[len(self.prefix) :].split("/", 1)[0]

    async def open(self, table: str, *, create: bool = True) -> TableCommitter:
        """The committer of ``table``, creating a pipeline table if missing (idempotent; an
        existing table is left as it is). Raises SettingsError when the table lives
        elsewhere than the consumer writes, and NoSuchTableError for a missing default
        table (``tideway setup`` creates it: its columns and spec are the operator's)."""
        async with self._opening:
            committer = self._committers.get(table)
            if committer is not None:
                return committer
            identifier = self.identifier(table)
            if create and table != DEFAULT_TABLE:
                schema = self._schemas.get(table, self._schema)
                _, found = await asyncio.to_thread(
                    ensure_table,
                    self._catalog,
                    identifier,
                    self.location(table),
                    schema,
                    self._keys,
                )
            else:
                found = await asyncio.to_thread(self._catalog.load_table, identifier)
            check_location(found, identifier, self.location(table))
            check_spec(found, identifier, self._keys)
            committer = TableCommitter(
                lambda: self._catalog.load_table(identifier),
                self.stream,
                bucket=self.bucket,
                rng=Random(self._rng.getrandbits(32)),
                on_commit=self._on_commit,
            )
            self._committers[table] = committer
            return committer

    async def committed(self, shard_id: str) -> int | None:
        """The last sequence number of ``shard_id`` whose whole flush is in every table."""
        return await (await self.open(DEFAULT_TABLE)).committed(shard_id)

    async def commit(self, shard_id: str, last: int, keys: Sequence[tuple[str, bytes]]) -> bool:
        """Commit the flush of ``shard_id`` ending at ``last`` to each of its tables, the
        default table last. True when the default table's commit added it (False: the
        flush was in the tables already). Raises TableCommitError."""
        by_table: dict[str, list[tuple[str, bytes]]] = {}
        for key, body in keys:
            by_table.setdefault(self.table_of(key), []).append((key, body))
        for table in sorted(t for t in by_table if t != DEFAULT_TABLE):
            await (await self.open(table)).commit(shard_id, last, by_table[table])
        default = await self.open(DEFAULT_TABLE)
        return await default.commit(shard_id, last, by_table.get(DEFAULT_TABLE, []))

    async def watermarks(self) -> dict[str, int]:
        """Each shard's last sequence number whose whole flush is in every table."""
        return await (await self.open(DEFAULT_TABLE)).watermarks()

    async def commit_many(
        self, flushes: Sequence[tuple[str, int, Sequence[TableFile]]]
    ) -> frozenset[str]:
        """Commit several shards' flushes (shard, ``last``, its files of every table, read
        from S3 by the elected committer) in one snapshot per table: pipeline tables first,
        the default table last, always, as ``commit``. Returns the shards whose flush the
        default table's commit added. Raises TableCommitError."""
        by_table: dict[str, list[FlushFiles]] = {DEFAULT_TABLE: []}
        for shard_id, last, files in flushes:
            mine: dict[str, list[TableFile]] = {DEFAULT_TABLE: []}
            for file in files:
                key = file.path.removeprefix(f"s3://{self.bucket}/")
                mine.setdefault(self.table_of(key), []).append(file)
            for table, some in mine.items():
                by_table.setdefault(table, []).append(FlushFiles(shard_id, last, tuple(some)))
        for table in sorted(t for t in by_table if t != DEFAULT_TABLE):
            await (await self.open(table)).commit_many(by_table[table])
        return await (await self.open(DEFAULT_TABLE)).commit_many(by_table[DEFAULT_TABLE])

    @property
    def stats(self) -> dict[str, CommitStats]:
        """Each open table's commit statistics, by catalog identifier."""
        return {self.identifier(t): c.stats for t, c in sorted(self._committers.items())}

    @property
    def commits(self) -> int:
        """Snapshots added to every table so far."""
        return sum(c.stats.commits for c in self._committers.values())


def total(stats: dict[str, CommitStats]) -> CommitStats:
    """The sum of several tables' statistics."""
    out = CommitStats()
    for one in stats.values():
        out.add(one)
    return out


def pipeline_schemas(pipelines: Pipelines | None, base: pa.Schema) -> dict[str, pa.Schema]:
    """The columns of each table the pipelines route to (other than the default): ``base``,
    then the typed columns every pipeline writing it adds (its parser's fields, ``set`` and
    ``cast`` columns, ``parse_error``), then ``pipeline_version``. Fields a parser takes from
    the data (json, kv, regex) are not known before the data: the table gains them when a
    flush first carries them (sink/iceberg_schema.py)."""
    if pipelines is None:
        return {}
    empty = base.empty_table()
    out: dict[str, pa.Schema] = {}
    for pipeline in pipelines.pipelines:
        if pipeline.table == DEFAULT_TABLE:
            continue
        schema = out.get(pipeline.table, base)
        produced, _ = pipeline.run(empty, pipelines.redactor)
        names = set(schema.names)
        for f in produced.schema:
            if f.name not in names:
                schema = schema.append(f.with_nullable(True))
                names.add(f.name)
        out[pipeline.table] = schema
    for table, schema in out.items():
        out[table] = schema.append(pa.field(VERSION_COLUMN, pa.string()))
    return out
