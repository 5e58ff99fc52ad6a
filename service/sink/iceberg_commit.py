"""Exactly-once commits of flushed data files to an Iceberg table (I/O).

The table's properties hold, per shard, the last sequence number whose flush is in the
table (``tideway.committed.{stream}.{shard}``); a flush's files and its shard's new
watermark go in one snapshot, committed only if the table has not moved since it was read
(optimistic concurrency: every append asserts the snapshot it was built on). So:

- a flush whose ``last`` is at or under its shard's watermark is already in the table and
  is not added again (a replay after a crash between commit and checkpoint, a zombie);
- a flush uploaded but not committed (crash between upload and commit) leaves the watermark
  under its ``last``; the next owner replays the intent and commits the same files;
- a commit that loses the race re-reads the table, and so the watermarks, and tries again.

Flushes of the shards one worker owns that arrive while a commit is running wait and go
into the next snapshot together (group commit): one commit per worker at a time, never one
per shard. The elected committer (consume/committer.py) hands many workers' flushes to
``commit_many`` instead: one snapshot per table per round. docs/tables.md has the proof
sketch.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table import Table, TableProperties

from service.sink.iceberg import TABLE_PROPERTIES, data_file, stats_plan
from service.sink.iceberg_schema import conform, conformed_key, evolution, table_arrow_types
from service.sink.parquet import decode_parquet, encode_parquet

log = logging.getLogger(__name__)
WATERMARK_PREFIX = "tideway.committed."
SUMMARY_PREFIX = "tideway.shard."
COMMIT_ATTEMPTS = 30  # lost races in a row before a flush gives up (and is replayed)
RETRY_BASE = 0.05  # seconds; doubled per lost race up to RETRY_CAP, with full jitter
RETRY_CAP = 2.0


class TableCommitError(RuntimeError):
    """The table could not take a flush (lost every race, or refused it)."""


@dataclass(frozen=True, slots=True)
class TableFile:
    """One data object of a flush: its ``s3://`` URL, its size and its Parquet footer (what
    the table records of it). ``body`` is its bytes when in memory (the owner's own flush);
    the elected committer has only the footer it read by a ranged GET, and reads the whole
    object only for the rare converted copy (a column type conflict)."""

    path: str
    size: int
    footer: pq.FileMetaData = field(repr=False)
    body: bytes | None = field(default=None, repr=False)

    @classmethod
    def of(cls, path: str, body: bytes) -> TableFile:
        return cls(path, len(body), pq.read_metadata(pa.BufferReader(body)), body)

    def content(self, table: Table) -> bytes:
        """The object's bytes: in memory, or read through the table's FileIO."""
        if self.body is not None:
            return self.body
        with table.io.new_input(self.path).open() as stream:
            return stream.read()


@dataclass(frozen=True, slots=True)
class FlushFiles:
    """A flush as a committer takes it: its shard, its ``last`` and its files of one table."""

    shard_id: str
    last: int
    files: tuple[TableFile, ...]


@dataclass(slots=True)
class CommitStats:
    """What a committer has done so far (read by telemetry, docs/telemetry.md)."""

    commits: int = 0  # snapshots added
    lost_races: int = 0  # commits refused because the table moved (each retried)
    files: int = 0  # data files committed
    bytes: int = 0  # their bytes
    columns_added: int = 0  # columns the table gained (schema evolution)
    files_converted: int = 0  # files committed as a converted copy (a type conflict)
    seconds: float = 0.0  # time in commits that landed, from the first attempt
    given_up: int = 0  # batches that lost every race (their flushes are replayed)
    flushes: int = 0  # flushes in the snapshots added (flushes per snapshot = this / commits)

    def add(self, other: CommitStats) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


@dataclass(slots=True)
class _Flush:
    shard_id: str
    last: int
    files: tuple[TableFile, ...]
    done: asyncio.Future[bool] | None = field(default=None, repr=False)


def watermark_key(stream: str, shard_id: str) -> str:
    return f"{WATERMARK_PREFIX}{stream}.{shard_id}"


def watermark(table: Table, stream: str, shard_id: str) -> int | None:
    """The last sequence number of ``shard_id`` whose flush is in ``table``; None if none."""
    value = table.properties.get(watermark_key(stream, shard_id))
    return None if value is None else int(value)


class TableCommitter:
    """Commits flushes to one table exactly once, a snapshot per batch of waiting flushes.

    ``load_table`` reads the table's current metadata from the catalog (blocking; run in a
    thread). Only one commit of this committer runs at a time. ``on_commit`` gets the
    outcome of each batch (landed, lost races, given up) as plain values.
    """

    def __init__(
        self,
        load_table: Callable[[], Table],
        stream: str,
        *,
        bucket: str,
        rng: random.Random,
        on_commit: Callable[[CommitStats], None] | None = None,
    ) -> None:
        self._load = load_table
        self._on_commit = on_commit  # each batch's outcome (telemetry); runs in the thread
        self.stream = stream
        self.bucket = bucket
        self._rng = rng
        self._waiting: list[_Flush] = []
        self._lock = asyncio.Lock()
        self.stats = CommitStats()

    async def committed(self, shard_id: str) -> int | None:
        """The shard's watermark as the table has it now."""
        table = await asyncio.to_thread(self._load)
        return watermark(table, self.stream, shard_id)

    async def watermarks(self) -> dict[str, int]:
        """Every shard's watermark as the table has it now (one table load)."""
        table = await asyncio.to_thread(self._load)
        prefix = f"{WATERMARK_PREFIX}{self.stream}."
        return {
            k.removeprefix(prefix): int(v)
            for k, v in table.properties.items()
            if k.startswith(prefix)
        }

    async def commit(self, shard_id: str, last: int, keys: Sequence[tuple[str, bytes]]) -> bool:
        """Make the flush of ``shard_id`` ending at ``last`` (its data objects: key and bytes)
        part of the table. True: this call added it; False: it was in the table already.
        Raises TableCommitError (the flush is then replayed from its intent)."""
        files = tuple(TableFile.of(f"s3://{self.bucket}/{key}", body) for key, body in keys)
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        flush = _Flush(shard_id, last, files, done)
        self._waiting.append(flush)
        async with self._lock:
            if not done.done():
                batch, self._waiting = self._waiting, []
                try:
                    added = await asyncio.to_thread(self._commit_batch, batch)
                except BaseException as exc:
                    for f in batch:
                        if f.done is not None and not f.done.done():
                            f.done.set_exception(TableCommitError(f"commit failed: {exc!r}"))
                    raise
                for f in batch:
                    if f.done is not None:
                        f.done.set_result(f in added)
        return await done

    async def commit_many(self, flushes: Sequence[FlushFiles]) -> frozenset[str]:
        """Commit several shards' flushes in one snapshot (the elected committer's batch,
        sink/iceberg_handoff.py); each is checked against its own shard's watermark. Returns
        the shards whose flush this call added. At most one flush per shard. Raises
        TableCommitError."""
        batch = [_Flush(f.shard_id, f.last, f.files) for f in flushes]
        async with self._lock:
            added = await asyncio.to_thread(self._commit_batch, batch)
        return frozenset(f.shard_id for f in added)

    @property
    def commits(self) -> int:
        """Snapshots this committer added."""
        return self.stats.commits

    def _commit_batch(self, batch: list[_Flush]) -> list[_Flush]:
        """Commit the flushes of ``batch`` not yet in the table; return those this added."""
        started = time.monotonic()
        one = CommitStats()
        try:
            for attempt in range(COMMIT_ATTEMPTS):
                table = self._load()
                todo = [
                    f for f in batch if (watermark(table, self.stream, f.shard_id) or -1) < f.last
                ]
                if not todo:
                    return []
                try:
                    self._check_no_retry(table)
                    landed = self._append(table, todo)
                except CommitFailedException as exc:
                    one.lost_races += 1
                    delay = self._rng.uniform(0, min(RETRY_CAP, RETRY_BASE * 2**attempt))
                    log.info(
                        "iceberg commit lost a race; re-reading the table",
                        extra={"attempt": attempt + 1, "error": str(exc)[:200]},
                    )
                    time.sleep(delay)
                    continue
                landed.lost_races = one.lost_races
                landed.seconds = time.monotonic() - started
                landed.flushes = len(todo)
                one = landed
                return todo
            one.given_up = 1
            raise TableCommitError(f"{COMMIT_ATTEMPTS} commits in a row lost to concurrent commits")
        finally:
            self.stats.add(one)
            if self._on_commit is not None:
                self._on_commit(one)

    def _append(self, table: Table, todo: list[_Flush]) -> CommitStats:
        """One snapshot: the files of ``todo``, the columns they bring (union by name), and
        their shards' new watermarks. A file whose column the table types otherwise is
        committed as a converted copy (the table's type wins, sink/iceberg_schema.py)."""
        tx = table.transaction()
        tx.set_properties({watermark_key(self.stream, f.shard_id): str(f.last) for f in todo})
        summary = {f"{SUMMARY_PREFIX}{self.stream}.{f.shard_id}": str(f.last) for f in todo}
        files = [file for f in todo for file in f.files]
        footers = [file.footer for file in files]
        types = table_arrow_types(table.schema())
        added: list[pa.Field[Any]] = []
        converted: list[tuple[tuple[str, pa.DataType], ...]] = []
        for footer in footers:  # in order: a column two files add takes the first's type
            evolved = evolution(types, footer.schema.to_arrow_schema())
            added.extend(evolved.added)
            types.update((f.name, f.type) for f in evolved.added)
            converted.append(evolved.converted)
        if added:
            with tx.update_schema() as update:
                update.union_by_name(pa.schema(added))
        metadata = tx.table_metadata
        plan = stats_plan(metadata)
        committed = 0
        with tx.update_snapshot(snapshot_properties=summary).fast_append() as append:
            for original, read, conversion in zip(files, footers, converted, strict=True):
                file, footer = original, read
                if conversion:
                    file = self._conformed(table, original, conversion)
                    footer = file.footer
                record = data_file(
                    metadata,
                    file.path,
                    file.size,
                    plan=plan,
                    footer=footer,
                    content=_reader(table, file),
                )
                append.append_data_file(record)
                committed += file.size
        tx.commit_transaction()
        return CommitStats(
            commits=1,
            files=len(files),
            bytes=committed,
            columns_added=len(added),
            files_converted=sum(1 for c in converted if c),
        )

    @staticmethod
    def _conformed(
        table: Table, file: TableFile, conversion: tuple[tuple[str, pa.DataType], ...]
    ) -> TableFile:
        """A copy of ``file`` whose columns have the table's types, written beside it."""
        body = encode_parquet(conform(decode_parquet(file.content(table)), conversion))
        path = conformed_key(file.path, conversion)
        log.warning(
            "iceberg column type conflict: the table's type wins; unconvertible values"
            " go to attributes",
            extra={"file": file.path, "columns": [name for name, _ in conversion]},
        )
        with table.io.new_output(path).create(overwrite=True) as out:
            out.write(body)
        return TableFile.of(path, body)

    @staticmethod
    def _check_no_retry(table: Table) -> None:
        # pyiceberg retries a failed commit by re-basing the append on the newer snapshot,
        # skipping the watermark check above: a table must have that retry off.
        key = TableProperties.COMMIT_NUM_RETRIES
        if table.properties.get(key) != TABLE_PROPERTIES[key]:
            tx = table.transaction()
            tx.set_properties({key: TABLE_PROPERTIES[key]})
            tx.commit_transaction()
            raise CommitFailedException(f"turned off pyiceberg's own commit retry ({key})")


def _reader(table: Table, file: TableFile) -> Callable[[], bytes]:
    """Reads ``file``'s bytes when a bucket partition must be proven from its values."""
    return lambda: file.content(table)
