"""Reads one shard with GetRecords inside Kinesis limits (I/O).

Pacing: at most 5 GetRecords calls per second per shard and 2 MiB/s read per shard
(Kinesis limits: after a large batch the next call waits until the shard's read budget has
refilled), and a longer idle wait when a call returns nothing. Throttling, expired
iterators, 5xx and connection errors are retried with capped, jittered backoff from the
last sequence number read, never a crash loop; a caller stops a reader by cancelling it
(nothing is committed inside ``read``).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
from botocore.exceptions import BotoCoreError, ClientError

from service.aws import error_code
from service.consume.discovery import ShardInfo, shard_info
from service.consume.sequence import sequence_from_wire
from service.decode import RecordMeta
from service.telemetry.metrics import ConsumerMetrics, timed_call
from service.telemetry.tracing import aws_span

MIN_CALL_INTERVAL = 0.2  # 5 GetRecords per second per shard
READ_BYTES_PER_SECOND = 2 * 1024 * 1024  # per shard, shared by every reader of the shard
_RETRYABLE = {
    "ProvisionedThroughputExceededException",
    "LimitExceededException",
    "ExpiredIteratorException",
    "InternalFailure",
    "InternalFailureException",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "KMSThrottlingException",
    "ThrottlingException",
}


def wall_time() -> float:
    """The system's wall clock (epoch seconds), looked up at each call so a simulation that
    replaces this module's ``time`` controls it."""
    return time.time()


@dataclass(frozen=True, slots=True)
class Position:
    """Where to (re)start reading: a Kinesis iterator type and optional argument."""

    kind: str  # TRIM_HORIZON | LATEST | AT_TIMESTAMP | AT_SEQUENCE_NUMBER | AFTER_SEQUENCE_NUMBER
    sequence: int | None = None
    timestamp: float | None = None


@dataclass(frozen=True, slots=True)
class ReadBatch:
    records: list[dict[str, Any]]
    millis_behind: int | None  # None when Kinesis left it out: never read as "at the tip"
    shard_end: bool  # Kinesis returned no next iterator: the closed shard is fully read

    @property
    def at_tip(self) -> bool:
        """Nothing returned and nothing behind. Kinesis also answers empty pages while
        records follow, so this ends a drain, never a replay or a closed shard."""
        return not self.records and self.millis_behind == 0


async def list_shards(kinesis: Any, stream: str) -> dict[str, ShardInfo]:
    """Every shard of the stream with its parents and whether it is closed (ListShards)."""
    shards: dict[str, ShardInfo] = {}
    kwargs: dict[str, Any] = {"StreamName": stream}
    while True:
        resp = await kinesis.list_shards(**kwargs)
        for listing in resp["Shards"]:
            info = shard_info(listing)
            shards[info.shard_id] = info
        token = resp.get("NextToken")
        if not token:
            return shards
        kwargs = {"NextToken": token}


class ShardReader:
    """Iterates GetRecords for one shard, resuming after the last record it returned."""

    def __init__(
        self,
        kinesis: Any,
        stream: str,
        shard_id: str,
        start: Position,
        *,
        limit: int = 10000,
        idle_wait: float = 1.0,
        max_backoff: float = 10.0,
        metrics: ConsumerMetrics | None = None,
        wall_clock: Callable[[], float] | None = None,
    ) -> None:
        self._kinesis = kinesis
        self.metrics = metrics
        self._stream = stream
        self.shard_id = shard_id
        self.start = start
        self.limit = limit
        self._idle_wait = idle_wait
        self._max_backoff = max_backoff
        self._iterator: str | None = None
        self._wall_clock = wall_clock or wall_time  # resolves LATEST (data, not liveness)
        self._latest_at: float | None = None  # when a LATEST start was first resolved
        self.last_sequence: int | None = None
        self._last_call = 0.0
        self.errors: dict[str, int] = {}

    def _position(self) -> Position:
        if self.last_sequence is not None:
            return Position("AFTER_SEQUENCE_NUMBER", self.last_sequence)
        if self.start.kind == "LATEST":
            if self._latest_at is None:
                self._latest_at = self._wall_clock()
                return self.start
            # A renewed LATEST iterator would skip what arrived while we backed off.
            return Position("AT_TIMESTAMP", timestamp=self._latest_at)
        return self.start

    async def _new_iterator(self) -> str:
        pos = self._position()
        kwargs: dict[str, Any] = {
            "StreamName": self._stream,
            "ShardId": self.shard_id,
            "ShardIteratorType": pos.kind,
        }
        if pos.sequence is not None:
            kwargs["StartingSequenceNumber"] = str(pos.sequence)
        if pos.timestamp is not None:
            kwargs["Timestamp"] = datetime.fromtimestamp(pos.timestamp, UTC)
        resp = await self._kinesis.get_shard_iterator(**kwargs)
        return str(resp["ShardIterator"])

    async def read(self) -> ReadBatch:
        """The next batch; waits to respect pacing. Raises only on non-retryable errors."""
        attempt = 0
        while True:
            loop = asyncio.get_running_loop()
            wait = self._last_call + MIN_CALL_INTERVAL - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            self._last_call = loop.time()
            try:
                if self._iterator is None:
                    self._iterator = await self._new_iterator()
                with (
                    aws_span("Kinesis", "GetRecords", shard_id=self.shard_id),
                    timed_call(self.metrics, "get_records"),
                ):
                    resp = await self._kinesis.get_records(
                        ShardIterator=self._iterator, Limit=self.limit
                    )
            except ClientError as exc:
                code = error_code(exc)
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
                if code not in _RETRYABLE and status < 500:
                    raise
                self.errors[code] = self.errors.get(code, 0) + 1
                # An expired iterator needs a new one, and so does moto's HTTP 500 for an
                # invalid one; a throttled call keeps its iterator (still valid).
                if code == "ExpiredIteratorException" or status >= 500:
                    self._iterator = None
                attempt += 1
                await asyncio.sleep(_backoff(attempt, self._max_backoff))
                continue
            except (BotoCoreError, aiohttp.ClientError, TimeoutError) as exc:
                # Connection reset, read timeout, endpoint down: botocore's own retries are
                # spent; keep the iterator (it may still be valid) and back off.
                code = type(exc).__name__
                self.errors[code] = self.errors.get(code, 0) + 1
                attempt += 1
                await asyncio.sleep(_backoff(attempt, self._max_backoff))
                continue
            records = resp.get("Records", [])
            size = sum(len(r["Data"]) for r in records)
            # Spend the shard's 2 MiB/s read budget: a 10 MB batch delays the next call ~5 s.
            self._last_call += max(0.0, size / READ_BYTES_PER_SECOND - MIN_CALL_INTERVAL)
            if records:
                self.last_sequence = sequence_from_wire(records[-1]["SequenceNumber"])
            self._iterator = resp.get("NextShardIterator")
            behind = resp.get("MillisBehindLatest")
            return ReadBatch(
                records, None if behind is None else int(behind), self._iterator is None
            )

    async def idle(self) -> None:
        await asyncio.sleep(self._idle_wait)


def _backoff(attempt: int, cap: float) -> float:
    """Full jitter exponential backoff (AWS architecture blog), capped."""
    return float(random.uniform(0, min(cap, 0.1 * 2 ** min(attempt, 30))))


def record_meta(shard_id: str, record: dict[str, Any]) -> RecordMeta:
    """What a dead letter and a lineage column say of a GetRecords record."""
    arrival: datetime = record["ApproximateArrivalTimestamp"]
    return RecordMeta(
        shard_id=shard_id,
        sequence_number=sequence_from_wire(record["SequenceNumber"]),
        arrival_us=int(arrival.timestamp() * 1_000_000),
        partition_key=record.get("PartitionKey", ""),
    )


def passed_end(reader: ShardReader, ending: int | None) -> bool:
    """The reader of a closed shard is at or past the EndingSequenceNumber ListShards gave
    it (moto never ends a closed shard's iterator, DESIGN §8); never judged on an empty
    page."""
    if ending is None:
        return False
    if reader.last_sequence is not None:
        return reader.last_sequence >= ending
    start = reader.start
    position = start.sequence if start.sequence is not None else 0
    if start.kind == "AT_SEQUENCE_NUMBER":
        position -= 1
    return position >= ending
