"""The worker loop against the AWS backend: who takes which shard, and release on stop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from service.aws import AwsClients
from service.consume.context import shard_context
from service.consume.leases import LeaseTable
from service.consume.worker import ConsumerWorker
from service.settings import Settings


def worker(clients: AwsClients, settings: Settings, name: str) -> ConsumerWorker:
    return ConsumerWorker(
        shard_context(settings, clients.kinesis, clients.s3, clients.dynamodb, name),
        lease_duration=settings.lease_duration,
        memory_budget=settings.memory_budget_bytes,
    )


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
