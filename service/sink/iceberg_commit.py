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
per shard. docs/tables.md has the proof sketch.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table import Table, TableProperties

from service.sink.iceberg import TABLE_PROPERTIES, data_file, stats_plan

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
    """One data object of a flush: its ``s3://`` URL and its bytes (for the footer)."""

    path: str
    body: bytes


@dataclass(slots=True)
class _Flush:
    shard_id: str
    last: int
    files: tuple[TableFile, ...]
    done: asyncio.Future[bool] = field(repr=False)


def watermark_key(stream: str, shard_id: str) -> str:
    return f"{WATERMARK_PREFIX}{stream}.{shard_id}"


def watermark(table: Table, stream: str, shard_id: str) -> int | None:
    """The last sequence number of ``shard_id`` whose flush is in ``table``; None if none."""
    value = table.properties.get(watermark_key(stream, shard_id))
    return None if value is None else int(value)


class TableCommitter:
    """Commits flushes to one table exactly once, a snapshot per batch of waiting flushes.

    ``load_table`` reads the table's current metadata from the catalog (blocking; run in a
    thread). Only one commit of this committer runs at a time.
    """

    def __init__(
        self, load_table: Callable[[], Table], stream: str, *, bucket: str, rng: random.Random
    ) -> None:
        self._load = load_table
        self.stream = stream
        self.bucket = bucket
        self._rng = rng
        self._waiting: list[_Flush] = []
        self._lock = asyncio.Lock()
        self.commits = 0  # snapshots this committer added

    async def committed(self, shard_id: str) -> int | None:
        """The shard's watermark as the table has it now."""
        table = await asyncio.to_thread(self._load)
        return watermark(table, self.stream, shard_id)

    async def commit(self, shard_id: str, last: int, keys: Sequence[tuple[str, bytes]]) -> bool:
        """Make the flush of ``shard_id`` ending at ``last`` (its data objects: key and bytes)
        part of the table. True: this call added it; False: it was in the table already.
        Raises TableCommitError (the flush is then replayed from its intent)."""
        files = tuple(TableFile(f"s3://{self.bucket}/{key}", body) for key, body in keys)
        flush = _Flush(shard_id, last, files, asyncio.get_running_loop().create_future())
        self._waiting.append(flush)
        async with self._lock:
            if not flush.done.done():
                batch, self._waiting = self._waiting, []
                try:
                    added = await asyncio.to_thread(self._commit_batch, batch)
                except BaseException as exc:
                    for f in batch:
                        if not f.done.done():
                            f.done.set_exception(TableCommitError(f"commit failed: {exc!r}"))
                    raise
                for f in batch:
                    f.done.set_result(f in added)
        return await flush.done

    def _commit_batch(self, batch: list[_Flush]) -> list[_Flush]:
        """Commit the flushes of ``batch`` not yet in the table; return those this added."""
        for attempt in range(COMMIT_ATTEMPTS):
            table = self._load()
            todo = [f for f in batch if (watermark(table, self.stream, f.shard_id) or -1) < f.last]
            if not todo:
                return []
            try:
                self._check_no_retry(table)
                self._append(table, todo)
            except CommitFailedException as exc:
                delay = self._rng.uniform(0, min(RETRY_CAP, RETRY_BASE * 2**attempt))
                log.info(
                    "iceberg commit lost a race; re-reading the table",
                    extra={"attempt": attempt + 1, "error": str(exc)[:200]},
                )
                time.sleep(delay)
                continue
            self.commits += 1
            return todo
        raise TableCommitError(f"{COMMIT_ATTEMPTS} commits in a row lost to concurrent commits")

    def _append(self, table: Table, todo: list[_Flush]) -> None:
        """One snapshot: the files of ``todo`` and their shards' new watermarks."""
        metadata = table.metadata
        tx = table.transaction()
        tx.set_properties({watermark_key(self.stream, f.shard_id): str(f.last) for f in todo})
        summary = {f"{SUMMARY_PREFIX}{self.stream}.{f.shard_id}": str(f.last) for f in todo}
        plan = stats_plan(metadata)
        with tx.update_snapshot(snapshot_properties=summary).fast_append() as append:
            for f in todo:
                for file in f.files:
                    append.append_data_file(data_file(metadata, file.path, file.body, plan))
        tx.commit_transaction()

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
