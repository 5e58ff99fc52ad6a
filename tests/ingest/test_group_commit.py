"""Group commit at the PutRecords level: records sealed while a call is in flight wait for it
and share the next call; a call backing off after a throttle never holds them up; under
sustained load the next call waits (up to the linger) for the records still arriving."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from service import envelope
from service.ingest import producer as producer_module
from service.ingest.arrivals import Arrival
from service.ingest.packer import Header, call_hold
from service.ingest.producer import Producer
from service.telemetry.metrics import IngestMetrics


class FakeKinesis:
    """Answers PutRecords; the first call can be held on a gate or throttled."""

    def __init__(self, *, gate_first: bool = False, throttle_first: bool = False) -> None:
        self.calls: list[int] = []
        self.gate = asyncio.Event()
        self.gate_first = gate_first
        self.throttle_first = throttle_first

    async def put_records(self, StreamName: str, Records: list[dict[str, Any]]) -> dict[str, Any]:
        self.calls.append(len(Records))
        first = len(self.calls) == 1
        if first and self.gate_first:
            await self.gate.wait()
        if first and self.throttle_first:
            failed = {"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": ""}
            return {"FailedRecordCount": len(Records), "Records": [failed for _ in Records]}
        ok = [{"SequenceNumber": str(i), "ShardId": "shardId-0"} for i in range(len(Records))]
        return {"FailedRecordCount": 0, "Records": ok}


def _submit(producer: Producer, n: int) -> asyncio.Task[None]:
    # A distinct source per request: each request's lines become a record of their own.
    return asyncio.create_task(producer.submit([b'{"n": %d}' % n], Header(source=str(n))))


async def _until(condition: Any) -> None:
    async with asyncio.timeout(2):
        while not condition():
            await asyncio.sleep(0.001)


async def test_records_sealed_during_a_call_share_the_next_call() -> None:
    kinesis = FakeKinesis(gate_first=True)
    async with Producer(
        kinesis, "s", metrics=IngestMetrics(), record_target_bytes=1024, linger=0
    ) as producer:
        first = _submit(producer, 0)
        await _until(lambda: kinesis.calls)
        rest = [_submit(producer, n) for n in range(1, 6)]
        await asyncio.sleep(0.05)
        assert kinesis.calls == [1]  # nothing acknowledged, nothing sent beside the open call
        assert not any(task.done() for task in (first, *rest))
        kinesis.gate.set()
        await asyncio.gather(first, *rest)
    assert kinesis.calls == [1, 5]


async def test_a_call_in_backoff_does_not_hold_up_records_queued_behind_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(producer_module.random, "uniform", lambda a, b: 1.0)
    kinesis = FakeKinesis(gate_first=True, throttle_first=True)
    async with Producer(
        kinesis, "s", metrics=IngestMetrics(), record_target_bytes=1024, linger=0
    ) as producer:
        throttled = _submit(producer, 0)
        await _until(lambda: kinesis.calls)
        queued = _submit(producer, 1)  # waits behind the call in flight
        await asyncio.sleep(0.01)
        kinesis.gate.set()  # the call is throttled: its sender backs off for 1 s
        async with asyncio.timeout(0.5):
            await queued
        assert not throttled.done()
        await throttled
    assert kinesis.calls == [1, 1, 1]


class RecordingKinesis:
    """Answers every PutRecords and keeps each record's data."""

    def __init__(self) -> None:
        self.data: list[bytes] = []

    async def put_records(self, StreamName: str, Records: list[dict[str, Any]]) -> dict[str, Any]:
        self.data.extend(r["Data"] for r in Records)
        ok = [{"SequenceNumber": str(i), "ShardId": "shardId-0"} for i in range(len(Records))]
        return {"FailedRecordCount": 0, "Records": ok}


async def test_small_requests_beside_a_big_one_land_once_in_seal_order() -> None:
    # The big request is packed on the pack thread, the small ones on the loop unless that
    # thread is busy: whichever way, every line lands once and sequences follow seal order.
    kinesis = RecordingKinesis()
    big = [b'{"big": %d, "pad": "%s"}' % (i, b"x" * 200) for i in range(8000)]  # ~1.7 MB
    async with Producer(
        kinesis, "s", metrics=IngestMetrics(), record_target_bytes=25_000, linger=0.001
    ) as producer:
        header = Header(source="bench")
        tasks = [asyncio.create_task(producer.submit(big, header))]
        tasks += [
            asyncio.create_task(producer.submit([b'{"small": %d}' % n], header)) for n in range(50)
        ]
        await asyncio.gather(*tasks)
        tasks = [
            asyncio.create_task(producer.submit([b'{"late": %d}' % n], header)) for n in range(50)
        ]
        await asyncio.gather(*tasks)
    records = [envelope.decode(data) for data in kinesis.data]
    assert sorted(r.producer_seq for r in records) == list(range(len(records)))
    lines = [line for r in records for line in r.payload.split(b"\n")]
    expected = big + [b'{"small": %d}' % n for n in range(50)]
    expected += [b'{"late": %d}' % n for n in range(50)]
    assert sorted(lines) == sorted(expected)


def _submit_sealed(
    producer: Producer, n: int, arrival: Arrival | None = None
) -> asyncio.Task[None]:
    # An Idempotency-Key request: its records are sealed at once, never left open for the
    # linger, so only the call-level hold decides when they are sent.
    lines = [b'{"n": %d}' % n]
    return asyncio.create_task(
        producer.submit(lines, Header(), idempotency=("t", str(n)), arrival=arrival)
    )


async def test_under_sustained_load_the_next_call_waits_for_the_requests_being_read() -> None:
    # Records kept arriving during the last call, so the next one is held (up to the linger)
    # while admitted requests are still being read: their records go with it instead of
    # paying for calls of their own: what keeps each of N serve workers' calls full when
    # each sees 1/N of the load.
    kinesis = FakeKinesis(gate_first=True)
    async with Producer(kinesis, "s", metrics=IngestMetrics(), linger=1.0) as producer:
        first = _submit_sealed(producer, 0)
        await _until(lambda: kinesis.calls)
        during = [_submit_sealed(producer, n) for n in range(1, 5)]
        reading = [producer.arrivals.begin() for _ in range(5, 9)]  # admitted, not parsed
        await asyncio.sleep(0.05)
        kinesis.gate.set()
        await first
        await asyncio.sleep(0.1)
        assert kinesis.calls == [1]  # the records queued during call 1 wait for company
        later = [_submit_sealed(producer, n, a) for n, a in zip(range(5, 9), reading, strict=True)]
        async with asyncio.timeout(0.5):  # the last of them ends the hold, not the 1 s linger
            await asyncio.gather(*during, *later)
    assert kinesis.calls == [1, 8]


async def test_a_held_call_goes_once_no_admitted_request_can_add_records() -> None:
    # Clients that wait for their answer before sending again send nothing while the call
    # is held: once every admitted request has submitted (or ended), holding would only
    # leave the server idle, so the call goes at once instead of after the linger.
    kinesis = FakeKinesis(gate_first=True)
    async with Producer(kinesis, "s", metrics=IngestMetrics(), linger=1.0) as producer:
        first = _submit_sealed(producer, 0)
        await _until(lambda: kinesis.calls)
        during = [_submit_sealed(producer, n) for n in range(1, 5)]
        with producer.arrivals.begin():  # a request refused after admission: no lines
            await asyncio.sleep(0.05)
            kinesis.gate.set()
            await first
            await asyncio.sleep(0.1)
            assert kinesis.calls == [1]  # held while it might still add records
        async with asyncio.timeout(0.5):
            await asyncio.gather(*during)
    assert kinesis.calls == [1, 4]


FULL = 5_000_000


def test_a_call_is_held_only_when_arrivals_would_make_it_much_fuller() -> None:
    # 1 MB/s arriving (10 KB during a 10 ms call), 100 KB queued: 5 ms would add 5%.
    assert call_hold(100_000, 10_000, 0.01, full=FULL, max_hold=0.005) == 0.0
    # 20 MB/s arriving: 5 ms adds 100 KB to the 100 KB queued, so the call waits 5 ms.
    assert call_hold(100_000, 200_000, 0.01, full=FULL, max_hold=0.005) == 0.005
    # 1 GB/s: the call is full after 2 ms, and waits only that long.
    assert call_hold(3_000_000, 10_000_000, 0.01, full=FULL, max_hold=0.005) == 0.002


def test_a_call_is_never_held_when_full_idle_or_lingering_is_off() -> None:
    assert call_hold(FULL, 200_000, 0.01, full=FULL, max_hold=0.005) == 0.0
    assert call_hold(100_000, 0, 0.01, full=FULL, max_hold=0.005) == 0.0  # nothing arrived
    assert call_hold(100_000, 200_000, 0.01, full=FULL, max_hold=0.0) == 0.0
