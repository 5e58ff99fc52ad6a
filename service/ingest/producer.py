"""The PutRecords sender behind group commit (I/O).

``submit`` returns only when every line of the call is in Kinesis (DESIGN §2: acknowledge
only what is durable). Only failed entries are retried, with full-jitter backoff, until
``put_deadline``; lines waiting for Kinesis draw from the server's byte budget, past which
callers get OverloadedError at once instead of queueing without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from types import TracebackType
from typing import Any, TypeVar

import aiohttp
from botocore.exceptions import BotoCoreError, ClientError

from service.aws import error_code
from service.errors import KinesisUnavailableError, OverloadedError, RequestError
from service.ingest.arrivals import Arrival, Arrivals
from service.ingest.budget import ByteBudget
from service.ingest.lineblock import LineBlock
from service.ingest.packer import (
    Header,
    Packer,
    SealedRecord,
    Ticket,
    call_hold,
    keyed_producer_id,
    pack_keyed,
    put_batches,
)
from service.telemetry.metrics import IngestMetrics
from service.telemetry.tracing import aws_span

log = logging.getLogger(__name__)
_THROTTLED = {
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "LimitExceededException",
}
_MAX_CONCURRENT_PUTS = 8
_MAX_ENTRIES = 500  # PutRecords: at most 500 entries and 5 MiB a call
_MAX_CALL_BYTES = 5 * 1024 * 1024
_BACKOFF_BASE = 0.05
_BACKOFF_CAP = 2.0
# Transport failures of one PutRecords call: the entries may or may not be written, so they
# are retried (at least once; never acknowledged unless a later call succeeds).
_TRANSPORT_ERRORS = (BotoCoreError, aiohttp.ClientError, TimeoutError, OSError)
# Packing at most this many bytes seals at most ~10 records (~3 ms of zstd level 1): done on
# the loop when the pack thread is idle, as the hop costs more and split group commit into
# ~1.5x the PutRecords calls (issue 13).
_INLINE_PACK_BYTES = 1024 * 1024

T = TypeVar("T")


class Producer:
    """Async context manager: packs lines from concurrent requests and sends them.

    The idempotent half of exactly once: each process picks a random producer id at start;
    every envelope is named by it and a sequence assigned when the envelope is sealed, and
    every retry (ours: ``kinesis_put`` makes none of its own) carries the same bytes and
    the same partition and hash keys, so a copy lands on the same shard
    and the consumer drops it. Retries stop at ``deadline`` seconds after the first
    attempt: the consumer's dedupe window must be at least that (docs/operations.md).
    """

    def __init__(
        self,
        kinesis: Any,
        stream: str,
        *,
        metrics: IngestMetrics,
        budget: ByteBudget | None = None,
        record_target_bytes: int = 25_000,
        linger: float = 0.005,
        deadline: float = 20.0,
        max_inflight_bytes: int = 256 * 1024 * 1024,
        producer_id: bytes | None = None,
    ) -> None:
        self._kinesis = kinesis
        self._stream = stream
        self.metrics = metrics
        self.budget = budget or ByteBudget(max_inflight_bytes, metrics.inflight_bytes)
        self.producer_id = producer_id or os.urandom(16)
        self._target = record_target_bytes
        self._packer = Packer(record_target_bytes, producer_id=self.producer_id)
        # Big packer calls run on this one thread (64 MiB of lines is ~0.2 s of zstd); small
        # ones on the loop while none is queued there: one user at a time (_on_packer).
        self._packing = ThreadPoolExecutor(1, thread_name_prefix="pack")
        self._packing_calls = 0  # submitted to the pack thread and not yet finished there
        self._linger = linger
        self._deadline = deadline
        self._stop_by: float | None = None
        self._wake = asyncio.Event()
        self._closing = False
        self._queue: list[SealedRecord] = []
        self._queued_bytes = 0
        self._arrived_bytes = 0  # ever queued: what arrived while a call was in flight
        self._holding = 0  # senders holding their next call for records about to arrive
        self.arrivals = Arrivals()  # admitted requests that may still submit lines
        self._senders = 0
        self._calls = 0  # PutRecords calls in flight (senders in backoff do not count)
        self._tg: asyncio.TaskGroup | None = None
        self.throttled_until = 0.0  # monotonic; when Kinesis last pushed back

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
        try:
            await self._tg.__aexit__(et, e, tb)
        finally:
            self._packing.shutdown()

    def stop_retrying_at(self, when: float) -> None:
        """Shutdown: give up on Kinesis at loop time ``when`` at the latest (ECS stop timeout)."""
        self._stop_by = when

    async def submit(
        self,
        lines: Sequence[bytes],
        header: Header,
        traceparent: str = "",
        *,
        idempotency: tuple[str, str] | None = None,
        arrival: Arrival | None = None,
    ) -> None:
        """Store ``lines`` durably in Kinesis; raise OverloadedError or KinesisUnavailableError.

        With ``idempotency`` = (caller, Idempotency-Key), the lines go into envelopes of
        their own named by a producer id derived from the pair and sequences 0..n-1, so the
        same request sent again is landed once (within the consumer's dedupe window).
        ``arrival``, the request's count in ``arrivals``, ends once its lines are packed.
        """
        if self._closing:
            raise OverloadedError("server is shutting down", retry_after=1.0)
        size = lines.nbytes if isinstance(lines, LineBlock) else sum(map(len, lines))
        self.budget.take(size)  # given back when every record holding these lines is done
        loop = asyncio.get_running_loop()
        ticket = Ticket(size)
        future: asyncio.Future[None] = loop.create_future()
        ticket.waiter = future
        pack: Callable[[], list[SealedRecord]]
        if idempotency is None:
            pack = partial(
                self._packer.add,
                lines,
                header,
                ticket,
                traceparent=traceparent,
                now=loop.time(),
                received_us=int(time.time() * 1e6),
            )
        else:
            pack = partial(
                pack_keyed,
                lines,
                header,
                ticket,
                producer_id=keyed_producer_id(*idempotency),
                target_bytes=self._target,
                traceparent=traceparent,
                received_us=int(time.time() * 1e6),
            )
        sealed = await self._on_packer(pack, lambda: size)
        if arrival is not None:
            arrival.done()
        self._dispatch(sealed)
        self._wake.set()
        await future

    async def _on_packer(self, call: Callable[[], T], size: Callable[[], int]) -> T:
        """``call()`` on the packer: on the loop when the pack thread is idle and the bytes
        of lines it packs (``size()``, asked only then) are few (_INLINE_PACK_BYTES), else on
        the pack thread after the calls queued there. Either way no two packer calls
        overlap and they run in call order."""
        if self._packing_calls == 0 and size() <= _INLINE_PACK_BYTES:
            return call()
        loop = asyncio.get_running_loop()
        self._packing_calls += 1
        done = self._packing.submit(call)
        # Counted down once the thread is done with it (not when an awaiting request is
        # cancelled): only then may the loop use the packer again.
        done.add_done_callback(lambda _: loop.call_soon_threadsafe(self._packed_one))
        return await asyncio.wrap_future(done)

    def _packed_one(self) -> None:
        self._packing_calls -= 1

    def _dispatch(self, sealed: list[SealedRecord]) -> None:
        """Queue sealed records and start senders to drain the queue.

        Group commit at the call level: while a PutRecords call is in flight, new records
        wait for it and go out together in the next call, so under load one call carries
        the records of many requests (each call costs ~2 ms of botocore CPU whatever its
        size). A further sender starts only when no call is in flight or a full call's
        worth is queued, up to ``_MAX_CONCURRENT_PUTS``.
        """
        assert self._tg is not None
        for rec in sealed:
            if rec.refused:
                self._fail([rec], RequestError(413, rec.refused))
            else:
                self._queue.append(rec)
                self._queued_bytes += len(rec.data) + len(rec.partition_key)
                self._arrived_bytes += len(rec.data) + len(rec.partition_key)
        while (
            self._queue
            and self._senders < _MAX_CONCURRENT_PUTS
            and (
                (self._calls == 0 and self._holding == 0)
                or len(self._queue) >= _MAX_ENTRIES
                or self._queued_bytes >= _MAX_CALL_BYTES
            )
        ):
            self._senders += 1
            self._tg.create_task(self._sender())

    async def _sender(self) -> None:
        loop = asyncio.get_running_loop()
        last_call: tuple[int, float] | None = None  # (bytes arrived, seconds) of the last call
        try:
            while self._queue:
                # Let requests whose bodies are already in run first: their records join
                # this call instead of paying for another one.
                await asyncio.sleep(0)
                if last_call is not None and self._queue:
                    await self._hold(*last_call)
                if not self._queue:  # another sender took it meanwhile
                    break
                batch = put_batches(self._queue, _MAX_ENTRIES, _MAX_CALL_BYTES)[0]
                del self._queue[: len(batch)]
                self._queued_bytes -= sum(len(r.data) + len(r.partition_key) for r in batch)
                arrived, started = self._arrived_bytes, loop.time()
                await self._send(batch)
                last_call = (self._arrived_bytes - arrived, loop.time() - started)
        finally:
            self._senders -= 1

    async def _hold(self, arrived: int, seconds: float) -> None:
        """Back-to-back calls under load: wait up to ``linger`` for the next call to fill
        (``call_hold``), but only while admitted requests may still add records
        (service/ingest/arrivals.py). With N serve workers each sees 1/N of the load, so
        without it each call would carry 1/N of the records for the same fixed cost."""
        hold = call_hold(
            self._queued_bytes, arrived, seconds, full=_MAX_CALL_BYTES, max_hold=self._linger
        )
        if hold <= 0 or self._closing or not self.arrivals.count:
            return
        self._holding += 1
        try:
            await self.arrivals.settled(hold)
        finally:
            self._holding -= 1

    async def _linger_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            oldest = await self._on_packer(self._packer.oldest, lambda: 0)
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
            linger = 0 if self._closing else self._linger
            due = partial(self._packer.due, loop.time(), linger, int(time.time() * 1e6))
            self._dispatch(await self._on_packer(due, lambda: self._packer.open_bytes))

    async def _send(self, batch: list[SealedRecord]) -> None:
        """Deliver ``batch``; every ticket is completed, whatever happens (never raises)."""
        try:
            await self._deliver(batch)
        except Exception as exc:  # a bug must fail the requests, not stop the producer
            log.exception("PutRecords sender failed")
            self._fail(batch, KinesisUnavailableError(f"PutRecords failed: {exc!r}"))

    async def _deliver(self, batch: list[SealedRecord]) -> None:
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self._deadline
        pending = batch
        attempt = 0
        while pending:
            if self._stop_by is not None:
                give_up = min(give_up, self._stop_by)
            try:
                self._calls += 1
                try:
                    async with asyncio.timeout(max(0.05, give_up - loop.time())):
                        failed = await self._put(pending)
                finally:
                    self._calls -= 1
            except ClientError as exc:
                code = error_code(exc)
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
                if code not in _THROTTLED and 0 < status < 500:
                    self._fail(pending, KinesisUnavailableError(f"PutRecords refused: {code}"))
                    return
                failed = pending
                self._note_throttle(code in _THROTTLED, len(pending))
            except _TRANSPORT_ERRORS as exc:
                log.warning("PutRecords transport error", extra={"error": repr(exc)})
                failed = pending
            if not failed:
                return
            attempt += 1
            self.metrics.put_retries.inc(len(failed))
            delay = random.uniform(0, min(_BACKOFF_CAP, _BACKOFF_BASE * 2**attempt))
            if loop.time() + delay >= give_up:
                self._fail(
                    failed, KinesisUnavailableError("Kinesis did not accept the lines in time")
                )
                return
            self._dispatch([])  # records queued behind this call must not wait for its backoff
            await asyncio.sleep(delay)
            pending = failed

    async def _put(self, records: list[SealedRecord]) -> list[SealedRecord]:
        """One PutRecords call; returns the entries that failed (only those are retried)."""
        with (
            aws_span("Kinesis", "PutRecords", entries=len(records)),
            self.metrics.aws_call("put_records"),
        ):
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
        results = resp["Records"]
        if len(results) != len(records):  # checked before any entry completes a request
            raise KinesisUnavailableError(f"PutRecords answered {len(results)} of {len(records)}")
        failed = []
        throttled = 0
        for rec, result in zip(records, results, strict=True):
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

    def _complete(self, rec: SealedRecord, error: BaseException | None) -> None:
        for ticket in rec.tickets:
            ticket.pending -= 1
            if ticket.pending == 0:
                self.budget.give(ticket.size)
            future = ticket.waiter
            assert isinstance(future, asyncio.Future)
            if future.done():
                continue
            if error is not None:
                future.set_exception(error)
            elif ticket.pending == 0:
                future.set_result(None)
