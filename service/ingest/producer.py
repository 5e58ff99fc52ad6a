"""The PutRecords sender behind group commit (I/O).

``submit`` returns only when every line of the call is in Kinesis (DESIGN §2: acknowledge
only what is durable). Only failed entries are retried, with full-jitter backoff, until
``put_deadline``; in-flight bytes are bounded, past which callers get OverloadedError.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from types import TracebackType
from typing import Any

from botocore.exceptions import ClientError

from service.aws import error_code
from service.errors import KinesisUnavailableError, OverloadedError
from service.ingest.packer import Header, Packer, SealedRecord, Ticket, put_batches
from service.telemetry.metrics import IngestMetrics

log = logging.getLogger(__name__)
_THROTTLED = {
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "LimitExceededException",
}
_MAX_CONCURRENT_PUTS = 8


class Producer:
    """Async context manager: packs lines from concurrent requests and sends them."""

    def __init__(
        self,
        kinesis: Any,
        stream: str,
        *,
        metrics: IngestMetrics,
        record_target_bytes: int = 25 * 1024,
        linger: float = 0.005,
        deadline: float = 20.0,
        max_inflight_bytes: int = 256 * 1024 * 1024,
    ) -> None:
        self._kinesis = kinesis
        self._stream = stream
        self.metrics = metrics
        self._packer = Packer(record_target_bytes)
        self._linger = linger
        self._deadline = deadline
        self._max_inflight = max_inflight_bytes
        self.inflight = 0
        self._wake = asyncio.Event()
        self._closing = False
        self._puts = asyncio.Semaphore(_MAX_CONCURRENT_PUTS)
        self._tg: asyncio.TaskGroup | None = None
        self.throttled_until = 0.0  # monotonic; /readyz and 503s use it

    async def __aenter__(self) -> Producer:
        self._tg = asyncio.TaskGroup()
        await self._tg.__aenter__()
        self._tg.create_task(self._linger_loop(), name="producer-linger")
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._closing = True
        self._wake.set()
        assert self._tg is not None
        await self._tg.__aexit__(et, e, tb)

    async def submit(self, lines: list[bytes], header: Header, traceparent: str = "") -> None:
        """Store ``lines`` durably in Kinesis; raise OverloadedError or KinesisUnavailableError."""
        if self._closing:
            raise OverloadedError("server is shutting down", retry_after=1.0)
        size = sum(len(line) for line in lines)
        if self.inflight + size > self._max_inflight and self.inflight > 0:
            raise OverloadedError("too many bytes waiting for Kinesis", retry_after=1.0)
        loop = asyncio.get_running_loop()
        ticket = Ticket()
        future: asyncio.Future[None] = loop.create_future()
        ticket.waiter = future
        self.inflight += size
        self.metrics.inflight_bytes.set(self.inflight)
        try:
            sealed = self._packer.add(
                lines,
                header,
                ticket,
                traceparent=traceparent,
                now=loop.time(),
                received_us=int(time.time() * 1e6),
            )
            self._dispatch(sealed)
            self._wake.set()
            await future
        finally:
            self.inflight -= size
            self.metrics.inflight_bytes.set(self.inflight)

    def _dispatch(self, sealed: list[SealedRecord]) -> None:
        assert self._tg is not None
        for batch in put_batches(sealed):
            self._tg.create_task(self._send(batch))

    async def _linger_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            oldest = self._packer.oldest()
            if self._closing and oldest is None:
                return
            if oldest is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            wait = oldest + self._linger - loop.time()
            if wait > 0 and not self._closing:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)
                self._wake.clear()
            self._dispatch(self._packer.due(loop.time(), 0 if self._closing else self._linger))

    async def _send(self, batch: list[SealedRecord]) -> None:
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self._deadline
        pending = batch
        attempt = 0
        while pending:
            try:
                async with self._puts:
                    failed = await self._put(pending)
            except ClientError as exc:
                code = error_code(exc)
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
                if code not in _THROTTLED and status < 500:
                    self._fail(pending, KinesisUnavailableError(f"PutRecords refused: {code}"))
                    return
                failed = pending
                self._note_throttle(code in _THROTTLED, len(pending))
            except (TimeoutError, OSError) as exc:
                log.warning("PutRecords transport error", extra={"error": repr(exc)})
                failed = pending
            if not failed:
                return
            attempt += 1
            self.metrics.put_retries.inc(len(failed))
            delay = random.uniform(0, min(2.0, 0.05 * 2**attempt))
            if loop.time() + delay > give_up:
                self._fail(
                    failed, KinesisUnavailableError("Kinesis did not accept the lines in time")
                )
                return
            await asyncio.sleep(delay)
            pending = failed

    async def _put(self, records: list[SealedRecord]) -> list[SealedRecord]:
        """One PutRecords call; returns the entries that failed (only those are retried)."""
        resp = await self._kinesis.put_records(
            StreamName=self._stream,
            Records=[
                {
                    "Data": r.data,
                    "PartitionKey": r.partition_key,
                    "ExplicitHashKey": r.explicit_hash_key,
                }
                for r in records
            ],
        )
        self.metrics.put_calls.inc()
        failed = []
        throttled = 0
        for rec, result in zip(records, resp["Records"], strict=True):
            if "ErrorCode" in result:
                failed.append(rec)
                throttled += result["ErrorCode"] in _THROTTLED
                continue
            self.metrics.put_entries.inc()
            self.metrics.put_bytes.inc(len(rec.data))
            self._complete(rec, None)
        if throttled:
            self._note_throttle(True, throttled)
        return failed

    def _note_throttle(self, throttled: bool, count: int) -> None:
        if throttled:
            self.metrics.put_throttles.inc(count)
            self.throttled_until = asyncio.get_running_loop().time() + 1.0

    def _fail(self, records: list[SealedRecord], error: BaseException) -> None:
        for rec in records:
            self._complete(rec, error)

    @staticmethod
    def _complete(rec: SealedRecord, error: BaseException | None) -> None:
        for ticket in rec.tickets:
            ticket.pending -= 1
            future = ticket.waiter
            assert isinstance(future, asyncio.Future)
            if future.done():
                continue
            if error is not None:
                future.set_exception(error)
            elif ticket.pending == 0:
                future.set_result(None)
