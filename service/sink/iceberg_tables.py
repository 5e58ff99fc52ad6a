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

A table may live where its catalog chose (S3 Tables): ``placement`` then sends its objects
under the table's data path (sink/placement.py). Opening a table also makes its partition
spec the template's (sink/iceberg_respec.py), and a flush cut by another template is fitted
to the table's spec before its commit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping, Sequence
from random import Random  # the class: the simulation swaps the module for a generator

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.table import Table

from service.pipeline.engine import DEFAULT_TABLE, VERSION_COLUMN, Pipelines
from service.sink.iceberg import SpansPartitions, ensure_table, split_identifier
from service.sink.iceberg_commit import CommitStats, FlushFiles, TableCommitter, TableFile
from service.sink.iceberg_respec import evolve_spec, fit_all, spec_is
from service.sink.placement import Placement
from service.sink.plan import DEAD_LETTER


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
        catalog_locates: bool = False,
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
        self._tables: dict[str, Table] = {}  # each open table as last read (for its spec)
        self._stale: set[str] = set()  # tables to read again before the next commit
        self._opening = asyncio.Lock()
        # True: a new table goes where the catalog puts it (S3 Tables); False: at location().
        self._catalog_locates = catalog_locates
        self.placement = Placement(bucket, prefix)

    def identifier(self, table: str) -> str:
        """The catalog identifier of a layout table (``logs``, a pipeline's ``waf``)."""
        if table == DEFAULT_TABLE:
            return self.default
        namespace, _ = split_identifier(self.default)
        return f"{namespace}.{table}"

    def location(self, table: str) -> str | None:
        """Where a new table is created: the Hive layout's prefix, or None when the catalog
        chooses (the objects then follow the table: ``placement``)."""
        return None if self._catalog_locates else f"s3://{self.bucket}/{self.prefix}{table}"

    def table_of(self, key: str) -> str:
        """The layout table of a data object's key."""
        return self.placement.table_of(key)

    async def open(self, table: str, *, create: bool = True) -> TableCommitter:
        """The committer of ``table``, creating a pipeline table if missing (idempotent; an
        existing table is left as it is, apart from its partition spec, which becomes the
        template's). Raises NoSuchTableError for a missing default table (``tideway setup``
        creates it: its columns are the operator's), or any table when not ``create``."""
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
            columns = self._schemas.get(table, self._schema)
            found, _ = await asyncio.to_thread(evolve_spec, found, self._keys, columns)
            self._tables[table] = found
            self.placement = self.placement.with_table(table, found.location(), found.properties)
            committer = TableCommitter(
                lambda: self._catalog.load_table(identifier),
                self.stream,
                bucket=self.placement.locate(f"{self.prefix}{table}/")[0],
                rng=Random(self._rng.getrandbits(32)),
                on_commit=self._on_commit,
            )
            self._committers[table] = committer
            return committer

    async def place(self, keys: Iterable[str], *, create: bool) -> Placement:
        """The placement, with every table that ``keys`` (layout keys or key prefixes) name
        opened: created if missing when ``create``, else left out when missing."""
        for table in sorted({self.table_of(k) for k in keys} - {"", DEAD_LETTER}):
            try:
                await self.open(table, create=create)
            except NoSuchTableError:
                if create or table == DEFAULT_TABLE:
                    raise
        return self.placement

    async def committed(self, shard_id: str) -> int | None:
        """The last sequence number of ``shard_id`` whose whole flush is in every table."""
        return await (await self.open(DEFAULT_TABLE)).committed(shard_id)

    async def commit(
        self,
        shard_id: str,
        last: int,
        keys: Sequence[tuple[str, bytes]],
        cut_by: tuple[str, ...] | None = None,
    ) -> bool:
        """Commit the flush of ``shard_id`` ending at ``last`` (layout keys and bytes of its
        data objects, cut by the template keys ``cut_by``; None: unknown) to each of its
        tables, the default table last. True when the default table's commit added it
        (False: the flush was in the tables already). Raises TableCommitError."""
        by_table: dict[str, list[tuple[str, bytes]]] = {}
        for key, body in keys:
            by_table.setdefault(self.table_of(key), []).append((key, body))
        added = False
        for table in [*sorted(t for t in by_table if t != DEFAULT_TABLE), DEFAULT_TABLE]:
            added = await self._commit_to(table, shard_id, last, by_table.get(table, []), cut_by)
        return added

    async def _commit_to(
        self,
        table: str,
        shard_id: str,
        last: int,
        files: list[tuple[str, bytes]],
        cut_by: tuple[str, ...] | None,
    ) -> bool:
        """One table's commit of the flush. A file that spans partitions of the table's
        spec (another consumer evolved it since this one read it) is fitted to the spec
        read again, and the commit tried once more."""
        committer = await self.open(table)
        try:
            try:
                return await committer.commit(
                    shard_id, last, await self._fitted(table, files, cut_by)
                )
            except SpansPartitions:
                self._stale.add(table)
                return await committer.commit(shard_id, last, await self._fitted(table, files))
        except BaseException:
            self._stale.add(table)  # its spec may have moved: read it again first
            raise

    async def _fitted(
        self, table: str, files: list[tuple[str, bytes]], cut_by: tuple[str, ...] | None = None
    ) -> list[tuple[str, bytes]]:
        """The stored keys of ``files`` (in the committer's bucket), each file fitted to the
        table's spec unless the template that cut them gives that spec."""
        stored = [(self.placement.locate(key)[1], body) for key, body in files]
        if table in self._stale:
            self._tables[table] = await asyncio.to_thread(self._tables[table].refresh)
            self._stale.discard(table)
        found = self._tables[table]
        if not stored or (cut_by is not None and spec_is(found.spec(), found.schema(), cut_by)):
            return stored
        root = f"s3://{self._committers[table].bucket}/"
        urls = [(root + key, body) for key, body in stored]
        fitted = await asyncio.to_thread(fit_all, found, urls)
        return [(url.removeprefix(root), body) for url, body in fitted]

    def cut_fits(self, keys: Iterable[str], cut_by: tuple[str, ...] | None) -> bool:
        """Whether every table of ``keys`` (open) has, as last read, the spec the template
        ``cut_by`` gives: the elected committer, which reads only footers, can commit such
        files as they are; others need fitting by the process holding their bytes."""
        if cut_by is None:
            return False
        for table in {self.table_of(k) for k in keys}:
            found = self._tables.get(table)
            if found is None or table in self._stale:
                return False
            if not spec_is(found.spec(), found.schema(), cut_by):
                return False
        return True

    async def watermarks(self) -> dict[str, int]:
        """Each shard's last sequence number whose whole flush is in every table."""
        return await (await self.open(DEFAULT_TABLE)).watermarks()

    async def commit_many(
        self, flushes: Sequence[tuple[str, int, Sequence[tuple[str, TableFile]]]]
    ) -> frozenset[str]:
        """Commit several shards' flushes (shard, ``last``, its files of every table as
        (layout key, the file where it is stored), read from S3 by the elected committer) in
        one snapshot per table: pipeline tables first, the default table last, always, as
        ``commit``. Returns the shards whose flush the default table's commit added. Raises
        TableCommitError, and SpansPartitions for a flush cut by another template (its owner
        fits it: the committer does not hold its bytes)."""
        by_table: dict[str, list[FlushFiles]] = {DEFAULT_TABLE: []}
        for shard_id, last, files in flushes:
            mine: dict[str, list[TableFile]] = {DEFAULT_TABLE: []}
            for key, file in files:
                mine.setdefault(self.table_of(key), []).append(file)
            for table, some in mine.items():
                by_table.setdefault(table, []).append(FlushFiles(shard_id, last, tuple(some)))
        for table in [*sorted(t for t in by_table if t != DEFAULT_TABLE), DEFAULT_TABLE]:
            committer = await self.open(table)
            try:
                added = await committer.commit_many(by_table[table])
            except BaseException:
                self._stale.add(table)  # its spec may have moved: read it again first
                raise
        return added

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
