"""The worker's memory budget, shared by its shard consumers and replays (asyncio).

Consumers size their reads to their share of what replays leave free; a replay holds the
bytes its intent needs for as long as it runs, and waits while they are not free, so many
inherited intents are rebuilt a few at a time, not all at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from service.consume.buffer import FLUSH_WORKING_SET

MAX_RECORDS_PER_READ = 10_000  # GetRecords Limit maximum
# A record's decoded size before any was seen: a 25 KiB PUT payload unit, the size the
# producer packs envelopes near; the estimate follows what is read from then on.
FIRST_RECORD_GUESS = 25 * 1024


class MemoryBudget:
    """``total`` bytes; replays hold part of them, consumers share the rest."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.held = 0
        self._freed = asyncio.Event()

    @asynccontextmanager
    async def hold(self, nbytes: int) -> AsyncIterator[int]:
        """Wait until ``nbytes`` (at most ``total``) are free, hold them, yield the amount."""
        nbytes = max(1, min(nbytes, self.total))
        while self.held + nbytes > self.total:
            self._freed.clear()
            await self._freed.wait()
        self.held += nbytes
        try:
            yield nbytes
        finally:
            self.held -= nbytes
            self._freed.set()

    def share(self, consumers: int) -> int:
        """One consumer's share of what replays leave free."""
        return max(0, self.total - self.held) // max(1, consumers)


# A GetRecords answer is held as the HTTP body, its parsed JSON (base64 text) and the
# decoded bytes at once while the page is turned into records.
WIRE_COPIES = 3


def read_limit(room: int, record_bytes: int, raw_bytes: int = 0) -> int:
    """GetRecords ``Limit`` for ``room`` free bytes when a record decodes to ``record_bytes``
    (charged FLUSH_WORKING_SET times, as the flush trigger charges it) and arrives as
    ``raw_bytes`` (charged WIRE_COPIES times while the page is read); at least 1."""
    per_record = max(1, record_bytes) * FLUSH_WORKING_SET + raw_bytes * WIRE_COPIES
    return max(1, min(MAX_RECORDS_PER_READ, room // per_record))
