"""The worker's memory budget: replays wait for their bytes; reads are sized to a share."""

from __future__ import annotations

import asyncio

from service.consume.budget import MAX_RECORDS_PER_READ, MemoryBudget, read_limit


async def test_a_replay_waits_until_its_bytes_are_free() -> None:
    budget = MemoryBudget(100)
    order: list[str] = []

    async def replay(name: str, nbytes: int, seconds: float) -> None:
        async with budget.hold(nbytes):
            order.append(f"{name} start")
            assert budget.held <= budget.total
            await asyncio.sleep(seconds)
            order.append(f"{name} end")

    async with asyncio.TaskGroup() as tg:
        tg.create_task(replay("a", 60, 0.05))
        await asyncio.sleep(0)
        tg.create_task(replay("b", 60, 0.0))
    assert order == ["a start", "a end", "b start", "b end"]
    assert budget.held == 0


async def test_an_intent_larger_than_the_budget_runs_alone() -> None:
    budget = MemoryBudget(100)
    async with budget.hold(10_000) as held:
        assert held == 100 and budget.share(4) == 0
    assert budget.share(4) == 25


def test_reads_are_sized_to_the_room_left() -> None:
    assert read_limit(10 * 1024, 1024) == 10
    assert read_limit(10 * 1024, 512, raw_bytes=512 // 3) == 10  # the wire copies count too
    assert read_limit(0, 1024) == 1  # always progress: a page of one record
    assert read_limit(1 << 40, 1) == MAX_RECORDS_PER_READ


async def test_a_shard_charges_its_share_at_most_what_is_free() -> None:
    budget = MemoryBudget(100)
    assert budget.allowance(0, share=50) == 50
    budget.charge(80)  # other shards' buffers
    assert budget.allowance(0, share=50) == 20
    budget.release(80)
    async with budget.hold(30):  # a replay: the shards share what it leaves
        assert budget.share(2) == 35
        assert budget.allowance(10, share=budget.share(2)) == 35


async def test_shards_take_nothing_more_while_a_replay_waits_for_its_bytes() -> None:
    budget = MemoryBudget(100)
    budget.charge(60)  # a shard's buffer
    replay = asyncio.create_task(budget.hold(50).__aenter__())
    await asyncio.sleep(0)
    assert not replay.done() and budget.allowance(60, share=100) == 60
    budget.release(60)  # the shard flushed
    assert await replay == 50 and budget.held == 50
