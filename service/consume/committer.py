"""The elected committer of one consumer's tables (I/O; docs/tables.md).

Every worker runs one; only the worker holding the item ``committer#{default table}``
commits. Each round it reads the flushes owners handed off (consume/handoff.py), reads
their footers from S3 and commits all of them in one snapshot per table (pipeline tables
first, the default table last, as every commit does), then marks each lease item. So the
fleet makes about one commit per table per round, whatever its size, instead of one per
worker. Who holds the item is decided by consume/election.py from the worker's last lease
round; which flushes are due by sink/iceberg_handoff.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Collection
from typing import Any

from service.consume.election import should_take
from service.consume.handoff import HandoffMode
from service.errors import LeaseLostError
from service.sink.footers import table_files
from service.sink.iceberg import SpansPartitions
from service.sink.iceberg_commit import TableFile
from service.sink.iceberg_handoff import UNKNOWN_EPOCH, Handoff, due, unmarked
from service.sink.iceberg_tables import TableRouter

log = logging.getLogger(__name__)
# A flush due and its files' records, each with its layout key.
Batched = tuple[Handoff, list[tuple[str, TableFile]]]


class ElectedCommitter:
    """Holds (or not) the commits of ``router``'s tables and, while it does, commits the
    flushes handed off to it every ``mode.interval`` seconds."""

    def __init__(
        self,
        mode: HandoffMode,
        router: TableRouter,
        s3: Any,
        worker_id: str,
        *,
        fresh: Callable[[], bool],
        on_held: Callable[[bool], None] | None = None,
    ) -> None:
        self.mode = mode
        self.router = router
        self.s3 = s3
        self.worker_id = worker_id
        self.identifier = router.default
        self.fresh = fresh  # this worker's heartbeat still landing (renewer.py)
        self.on_held = on_held
        self.epoch: int | None = None  # the committer item's epoch while we hold it
        self.committed = 0  # flushes this worker committed as the elected committer
        self.snapshots = 0  # rounds whose default-table commit added flushes
        self._alive: frozenset[str] = frozenset()
        self._assignable: frozenset[str] = frozenset()
        self._seen = False

    def observe(self, alive: Collection[str], assignable: Collection[str]) -> None:
        """The worker's last lease round: who is alive, who may be given work."""
        self._alive, self._assignable = frozenset(alive), frozenset(assignable)
        self._seen = True

    @property
    def holding(self) -> bool:
        return self.epoch is not None

    async def run(self, stop: asyncio.Event) -> None:
        """Rounds until ``stop``; a failed round is logged and the next one tried on time
        (its flushes stay handed off, and their owners fall back at their deadline)."""
        try:
            while not stop.is_set():
                try:
                    await self.step()
                except Exception as exc:
                    log.warning(
                        "elected committer round failed",
                        extra={"table": self.identifier, "error": f"{type(exc).__name__}: {exc}"},
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.mode.interval)
        finally:
            await self._release()

    async def step(self) -> int:
        """Keep or take the item as the election says, then commit if held; the number of
        flushes this round added."""
        if not self._seen:
            return 0
        leases = self.mode.leases
        hold = await leases.hold(self.identifier)
        was = self.holding
        if hold.owner == self.worker_id:
            self.epoch = hold.epoch
        else:
            self.epoch = None
            key = leases.key(self.identifier)
            if should_take(key, hold.owner, self.worker_id, self._alive, self._assignable):
                with contextlib.suppress(LeaseLostError):
                    self.epoch = await leases.take(self.identifier, self.worker_id, hold)
                    log.info(
                        "elected committer",
                        extra={"table": self.identifier, "epoch": self.epoch, "from": hold.owner},
                    )
        if self.on_held is not None and was != self.holding:
            self.on_held(self.holding)
        if not self.holding or not self.fresh():
            return 0
        return await self.commit_round()

    async def commit_round(self) -> int:
        """Commit every flush handed off and not in the tables yet, in one snapshot per
        table; mark each lease item. The number of flushes added."""
        return await self.commit(await self.gather())

    async def gather(self) -> list[Batched]:
        """The flushes due (with their files' footers read from S3); marks the hand-offs
        the tables hold already that nobody marked (UNKNOWN_EPOCH: their owners stop
        waiting)."""
        leases = self.mode.leases
        pending = await leases.handoffs()
        if not pending:
            return []
        marks = await self.router.watermarks()
        for handoff in unmarked(pending, marks.get):
            await leases.mark(handoff, UNKNOWN_EPOCH)
        todo = due((h for h, _ in pending), marks.get)
        every = [f for h in todo for f in h.files]  # one bounded pool of ranged GETs
        # Where each layout key is stored (a table the catalog placed: sink/placement.py).
        placement = await self.router.place([key for key, _ in every], create=True)
        located = [(*placement.locate(key), size) for key, size in every]
        files = iter(zip([k for k, _ in every], await table_files(self.s3, located), strict=True))
        return [(h, [next(files) for _ in h.files]) for h in todo]

    async def commit(self, batch: list[Batched]) -> int:
        """Commit ``batch`` (one snapshot per table; each flush checked against its own
        watermark, so a batch read before another committer's commit adds nothing twice)
        and mark the flushes this commit added. The number added."""
        if not batch:
            return 0
        try:
            added = await self.router.commit_many([(h.shard_id, h.last, fs) for h, fs in batch])
        except SpansPartitions:
            added = await self._one_by_one(batch)
        for handoff, _ in batch:
            if handoff.shard_id in added:
                await self.mode.leases.mark(handoff, handoff.epoch)
        self.committed += len(added)
        self.snapshots += 1 if added else 0
        log.info(
            "elected committer round",
            extra={"table": self.identifier, "handed_off": len(batch), "added": len(added)},
        )
        return len(added)

    async def _one_by_one(self, batch: list[Batched]) -> frozenset[str]:
        """The batch held a flush cut by another partition template (the table's spec moved
        after its owner read it): commit the flushes one at a time, leaving out each that
        does not fit. Its owner, waiting for a mark that does not come, commits it itself at
        its deadline, fitted to the spec (it holds the bytes; this committer does not)."""
        added: set[str] = set()
        for handoff, files in batch:
            try:
                added |= await self.router.commit_many([(handoff.shard_id, handoff.last, files)])
            except SpansPartitions as exc:
                log.warning(
                    "elected committer left a flush to its owner",
                    extra={"shard_id": handoff.shard_id, "last": handoff.last, "error": str(exc)},
                )
        return frozenset(added)

    async def _release(self) -> None:
        """Leaving: give the item up so the next holder starts at once."""
        if self.epoch is None:
            return
        try:
            await self.mode.leases.release(self.identifier, self.worker_id, self.epoch)
        except LeaseLostError:
            pass  # taken over already: nothing of ours to give up
        except Exception as exc:  # the heir takes it once our heartbeat stops moving
            log.warning(
                "elected committer not released",
                extra={"table": self.identifier, "error": f"{type(exc).__name__}: {exc}"},
            )
        self.epoch = None
        if self.on_held is not None:
            self.on_held(False)
