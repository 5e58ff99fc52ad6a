"""Requests a server has admitted whose lines have not yet reached the producer (I/O-free
bookkeeping on the event loop).

Group commit holds a PutRecords call for the records still arriving (``packer.call_hold``).
The only records certain to arrive soon are those of requests already admitted: being read,
decompressed or parsed. Once none is, a hold waits for requests that have not been sent,
and clients that wait for their answer before sending the next (every agent with a bounded
number of connections) send nothing until the held call is answered: the server sits idle
for the rest of the hold. With two serve workers each holds half the connections, so all of
a worker's clients wait on one call more often (issue 16: on a quiet machine two workers
left ~0.2-0.3 of a core idle). So a held call goes as soon as no admitted request is left
before its ``submit``.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType


class Arrival:
    """One admitted request: counted until its lines are submitted or it ends."""

    __slots__ = ("_arrivals", "_open")

    def __init__(self, arrivals: Arrivals) -> None:
        self._arrivals = arrivals
        self._open = True
        arrivals.enter()

    def done(self) -> None:
        """Its lines are with the producer, or it will send none (idempotent)."""
        if self._open:
            self._open = False
            self._arrivals.leave()

    def __enter__(self) -> Arrival:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.done()


class Arrivals:
    """How many admitted requests may still add records, and a wait for none to be left."""

    def __init__(self) -> None:
        self.count = 0
        self._settled = asyncio.Event()
        self._settled.set()

    def begin(self) -> Arrival:
        """Count a request from its admission (use as a context manager: its end stops it)."""
        return Arrival(self)

    def enter(self) -> None:
        self.count += 1
        self._settled.clear()

    def leave(self) -> None:
        self.count -= 1
        if self.count == 0:
            self._settled.set()

    async def settled(self, at_most: float) -> None:
        """Return once no admitted request is left before its submit, or after ``at_most``
        seconds."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._settled.wait(), at_most)
