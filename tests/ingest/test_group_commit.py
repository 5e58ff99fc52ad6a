"""Group commit at the PutRecords level: records sealed while a call is in flight wait for it
and share the next call; a call backing off after a throttle never holds them up."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from service import envelope
from service.ingest import producer as producer_module
from service.ingest.packer import Header
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
