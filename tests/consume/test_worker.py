"""The worker loop against the AWS backend: who takes which shard, and release on stop."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Callable
from typing import Any

from service.aws import AwsClients
from service.consume.context import shard_context
from service.consume.leases import LeaseTable
from service.consume.worker import ConsumerWorker
from service.settings import Settings
from tests.conftest import Aws, read_table


def worker(
    clients: AwsClients,
    settings: Settings,
    name: str,
    *,
    wall_clock: Callable[[], float] = time.time,
    s3: Any = None,
) -> ConsumerWorker:
    ctx = shard_context(settings, clients.kinesis, s3 or clients.s3, clients.dynamodb, name)
    return ConsumerWorker(
        dataclasses.replace(ctx, wall_clock=wall_clock),
        lease_duration=settings.lease_duration,
        memory_budget=settings.memory_budget_bytes,
    )


def leases_lost(w: ConsumerWorker) -> float:
    return w.ctx.metrics.registry.get_sample_value("tideway_leases_lost_total") or 0.0


async def owners(table: LeaseTable) -> dict[str, str | None]:
    leases, _ = await table.scan()
    return {sid: lease.owner for sid, lease in leases.items()}


async def eventually(check: Callable[[], object], what: str, timeout: float = 30) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        ok = check()
        if asyncio.iscoroutine(ok):
            ok = await ok
        if ok:
            return
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


async def test_one_worker_takes_every_shard_and_releases_them_on_stop(
    clients: AwsClients, ready: Settings, table: LeaseTable
) -> None:
    solo = worker(clients, ready, "solo")
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        tg.create_task(solo.run(stop))

        async def all_solo() -> bool:
            held = await owners(table)
            return len(held) == 2 and set(held.values()) == {"solo"}

        await eventually(all_solo, "solo to hold both shards")
        stop.set()
    assert set((await owners(table)).values()) == {None}
    _, beats = await table.scan()
    assert beats == {}  # the heartbeat item is gone: peers need not wait for it to expire


async def test_two_workers_split_the_shards_and_a_leaver_hands_its_share_over(
    clients: AwsClients, ready: Settings, table: LeaseTable
) -> None:
    stops = {"w1": asyncio.Event(), "w2": asyncio.Event()}
    async with asyncio.TaskGroup() as tg:
        for name, stop in stops.items():
            tg.create_task(worker(clients, ready, name).run(stop))

        async def split() -> bool:
            return sorted((await owners(table)).values(), key=str) == ["w1", "w2"]

        await eventually(split, "one shard each")
        stops["w1"].set()

        async def all_w2() -> bool:
            return set((await owners(table)).values()) == {"w2"}

        await eventually(all_w2, "w2 to take over w1's shard", timeout=ready.lease_duration * 3)
        stops["w2"].set()
    assert set((await owners(table)).values()) == {None}


async def test_a_peer_whose_wall_clock_is_an_hour_slow_is_alive_and_keeps_its_share(
    clients: AwsClients, ready: Settings, table: LeaseTable
) -> None:
    slow = worker(clients, ready, "slow", wall_clock=lambda: time.time() - 3600)
    fast = worker(clients, ready, "fast")
    stops = [asyncio.Event(), asyncio.Event()]
    async with asyncio.TaskGroup() as tg:
        tg.create_task(slow.run(stops[0]))

        async def slow_holds_all() -> bool:
            return set((await owners(table)).values()) == {"slow"}

        await eventually(slow_holds_all, "slow to hold both shards")
        tg.create_task(fast.run(stops[1]))

        async def split() -> bool:
            return sorted((await owners(table)).values(), key=str) == ["fast", "slow"]

        await eventually(split, "one shard each")
        await asyncio.sleep(ready.lease_duration * 2)  # fast would have judged slow dead by now
        held = await owners(table)
        for stop in stops:
            stop.set()
    assert fast.state.live_workers == ["fast", "slow"]
    assert sorted(held.values(), key=str) == ["fast", "slow"]
    assert leases_lost(slow) == 0 and leases_lost(fast) == 0


class SlowUploads:
    """The backend's S3 client, but every PutObject takes ``seconds`` first."""

    def __init__(self, s3: Any, seconds: float) -> None:
        self._s3 = s3
        self.seconds = seconds
        self.started = asyncio.Event()

    async def put_object(self, **kwargs: Any) -> Any:
        self.started.set()
        await asyncio.sleep(self.seconds)
        return await self._s3.put_object(**kwargs)


async def test_heartbeats_flow_while_a_stopping_worker_waits_for_its_last_flush(
    aws: Aws, clients: AwsClients, ready: Settings, table: LeaseTable
) -> None:
    """Issue 14 item 1: no heartbeat while SIGTERM waited for flushes made a live owner look
    dead, and a peer took its shards under it."""
    uploads = SlowUploads(clients.s3, seconds=ready.lease_duration * 2.5)
    leaver = worker(clients, ready, "leaver", s3=uploads)
    heir = worker(clients, ready, "heir")
    stops = [asyncio.Event(), asyncio.Event()]
    async with asyncio.TaskGroup() as tg:
        tg.create_task(leaver.run(stops[0]))

        async def leaver_holds_all() -> bool:
            return set((await owners(table)).values()) == {"leaver"}

        await eventually(leaver_holds_all, "leaver to hold both shards")
        kinesis = aws.client("kinesis")
        for i in range(20):
            kinesis.put_record(StreamName=ready.stream, Data=b'{"n": %d}' % i, PartitionKey=str(i))
        await asyncio.wait_for(uploads.started.wait(), 30)  # a flush is under way
        stops[0].set()  # SIGTERM: the leaver waits for its flushes
        tg.create_task(heir.run(stops[1]))

        async def heir_holds_all() -> bool:
            return set((await owners(table)).values()) == {"heir"}

        await eventually(heir_holds_all, "heir to take both shards", timeout=60)
        stops[1].set()
    assert leases_lost(leaver) == 0


async def test_latest_loses_nothing_when_the_first_owner_dies_before_its_first_flush(
    aws: Aws, clients: AwsClients, ready: Settings, table: LeaseTable
) -> None:
    """Issue 14 item 7: with LATEST, the heir of a shard never checkpointed started at the
    then-latest record and skipped what arrived after the first owner started."""
    latest = ready.model_copy(update={"start_position": "LATEST", "flush_max_age": 60.0})
    first = worker(clients, latest, "first")
    run = asyncio.create_task(first.run(asyncio.Event()))

    async def first_holds_all() -> bool:
        return set((await owners(table)).values()) == {"first"}

    await eventually(first_holds_all, "first to hold both shards")
    await asyncio.sleep(1.5)  # its readers are at the tip
    kinesis = aws.client("kinesis")
    sent = [f"after-start-{i}" for i in range(12)]
    for i, message in enumerate(sent):
        data = b'{"message": "%s"}' % message.encode()
        kinesis.put_record(StreamName=latest.stream, Data=data, PartitionKey=str(i))
    await asyncio.sleep(1.0)  # read and buffered, never flushed (flush_max_age 60 s)
    run.cancel()  # dies: no flush, no release (its heartbeat item is dropped on the way out)
    with contextlib.suppress(asyncio.CancelledError):
        await run
    heir = ConsumerWorker(
        shard_context(latest, clients.kinesis, clients.s3, clients.dynamodb, "heir"),
        lease_duration=latest.lease_duration,
        memory_budget=latest.memory_budget_bytes,
        drain=True,
    )
    await asyncio.wait_for(heir.run(asyncio.Event()), 60)
    landed = read_table(aws, latest)
    assert sorted(landed.column("message").to_pylist() if landed.num_rows else []) == sorted(sent)
