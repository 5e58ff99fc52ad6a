"""One byte budget for everything a server holds on behalf of clients (I/O-free bookkeeping).

Request bodies being read and decompressed, parsed lines and records waiting for Kinesis all
draw from the same budget (``max_inflight_bytes``), so memory stays bounded under any load:
a request that would pass it is refused with 503 and ``Retry-After`` instead of waiting.
"""

from __future__ import annotations

import threading
from types import TracebackType

from prometheus_client import Gauge

from service.errors import OverloadedError, RequestError


class ByteBudget:
    """Bytes in flight; ``take`` never lets ``used`` pass ``limit``."""

    def __init__(self, limit: int, gauge: Gauge | None = None) -> None:
        self.limit = limit
        self.used = 0
        self.peak = 0
        self._gauge = gauge
        # Bodies are decompressed and parsed on worker threads, which draw from it too.
        self._lock = threading.Lock()

    def take(self, n: int) -> None:
        """Reserve ``n`` bytes; OverloadedError when full, RequestError(413) if it never fits."""
        if n > self.limit:
            raise RequestError(
                413, f"request needs {n} bytes of buffer, over the {self.limit} byte limit"
            )
        with self._lock:
            if self.used + n > self.limit:
                raise OverloadedError("too many bytes waiting for Kinesis", retry_after=1.0)
            self.used += n
            self.peak = max(self.peak, self.used)
            used = self.used
        if self._gauge is not None:
            self._gauge.set(used)

    def give(self, n: int) -> None:
        with self._lock:
            self.used -= n
            used = self.used
        if self._gauge is not None:
            self._gauge.set(used)

    def reservation(self) -> Reservation:
        return Reservation(self)


class Reservation:
    """Bytes held for one request, all given back when the ``with`` block ends."""

    __slots__ = ("_budget", "held")

    def __init__(self, budget: ByteBudget) -> None:
        self._budget = budget
        self.held = 0

    def take(self, n: int) -> None:
        """Reserve ``n`` more bytes for this request (thread-safe: one request, one thread
        at a time)."""
        self._budget.take(n)
        self.held += n

    def __enter__(self) -> Reservation:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._budget.give(self.held)
        self.held = 0
