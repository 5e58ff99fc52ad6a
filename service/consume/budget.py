"""The worker's memory budget, shared by its shard consumers and replays (asyncio).

Everything that holds decoded records is charged to one ``MemoryBudget``: a replay holds
what its intent's flush costs (recorded with the intent) for as long as it runs, waiting
while that is not free; a running shard charges its buffer record by record, never past
its fair share nor past what is free, and gives the charge back when the flush is done.
While a replay waits, shards take nothing more (they flush and pause), so inherited
intents are rebuilt a few at a time, each as soon as its bytes are free, never all at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

MAX_RECORDS_PER_READ = 10_000  # GetRecords Limit maximum
# A record's flush charge before any was seen: a 25 KiB PUT payload unit (the size the
# producer packs envelopes near) at 4x; the estimate follows what is read from then on.
FIRST_RECORD_GUESS = 100 * 1024
# Flushes planned at once per worker (each in a thread): beside what its records are charged,
# a plan holds ~10-15 MiB of its own (the Parquet writer's pages, zstd contexts), so twelve
# shards flushing at once would hold ~150 MiB the budget never sees. One per core.
PLANS_AT_ONCE = 2
# A GetRecords answer is held as the HTTP body, its parsed JSON (base64 text) and the
# decoded bytes at once while the page is turned into records.
WIRE_COPIES = 3


class MemoryBudget:
    """``total`` bytes: replays hold part of them, shards' buffers are charged the rest."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.replays = 0  # bytes held by running replays
        self.buffers = 0  # bytes charged by shards' buffers (and flushes in progress)
        self.waiting = 0  # replays waiting for their bytes
        self.running_replays = 0
        self.most_replays = 0  # the most replays that ever ran at once (/status, tests)
        self.most_held = 0  # the high-water mark of replays + buffers
        self._freed = asyncio.Event()
        self.planning = asyncio.Semaphore(PLANS_AT_ONCE)

    @property
    def held(self) -> int:
        return self.replays + self.buffers

    @property
    def free(self) -> int:
        return max(0, self.total - self.held)

    @asynccontextmanager
    async def hold(self, nbytes: int) -> AsyncIterator[int]:
        """Wait until ``nbytes`` (at most ``total``) are free, hold them, yield the amount."""
        nbytes = max(1, min(nbytes, self.total))
        self.waiting += 1
        try:
            while self.held + nbytes > self.total:
                self._freed.clear()
                await self._freed.wait()
        finally:
            self.waiting -= 1
        self.replays += nbytes
        self.running_replays += 1
        self.most_replays = max(self.most_replays, self.running_replays)
        self._note()
        try:
            yield nbytes
        finally:
            self.replays -= nbytes
            self.running_replays -= 1
            self._freed.set()

    def share(self, consumers: int) -> int:
        """One shard's fair share of what replays leave free."""
        return max(0, self.total - self.replays) // max(1, consumers)

    def allowance(self, charged: int, share: int) -> int:
        """What a shard that has ``charged`` may charge in all: its ``share`` (of what replays
        leave free), at most what is free, no more than it has while a replay waits."""
        if self.waiting:
            return min(charged, share)
        return min(share, charged + self.free)

    def charge(self, nbytes: int) -> None:
        """A shard's buffer grew by ``nbytes`` (sized by ``allowance`` beforehand)."""
        self.buffers += nbytes
        self._note()

    def release(self, nbytes: int) -> None:
        """A shard's flush is done (or its consumer ended): its charge is free again."""
        self.buffers -= nbytes
        self._freed.set()

    async def freed(self) -> None:
        """Return once some charge or hold is given back."""
        self._freed.clear()
        await self._freed.wait()

    def _note(self) -> None:
        self.most_held = max(self.most_held, self.held)


def read_limit(room: int, record_charge: int, raw_bytes: int = 0) -> int:
    """GetRecords ``Limit`` for ``room`` free bytes when a record's flush charge is
    ``record_charge`` (buffer.record_charge: bytes and lines) and it arrives as
    ``raw_bytes`` (charged WIRE_COPIES times while the page is read); at least 1."""
    per_record = max(1, record_charge) + raw_bytes * WIRE_COPIES
    return max(1, min(MAX_RECORDS_PER_READ, room // per_record))


class ShardAccount:
    """One shard's account with the worker's budget: what its buffer has charged, given
    back when its flush is done (no budget: the shard's share is all it may hold)."""

    def __init__(self, budget: MemoryBudget | None, share: Callable[[], int]) -> None:
        self.budget = budget
        self.share = share
        self.charged = 0

    def allowance(self) -> int:
        """The charge this shard's buffer may reach now (its share of the budget)."""
        if self.budget is None:
            return self.share()
        return self.budget.allowance(self.charged, self.share())

    def others_hold(self) -> bool:
        """Replays or other shards hold part of the budget (and will give it back)."""
        b = self.budget
        return b is not None and (b.waiting > 0 or b.held > self.charged)

    def follow(self, charge: int) -> None:
        """Charge the buffer's growth (to ``charge``) to the worker's budget."""
        if self.budget is not None and charge > self.charged:
            self.budget.charge(charge - self.charged)
            self.charged = charge

    def release(self) -> None:
        if self.budget is not None and self.charged:
            self.budget.release(self.charged)
        self.charged = 0
