"""The worker's memory budget: replays wait for their bytes; reads are sized to a share."""

from __future__ import annotations

import asyncio

from service.consume.budget import MAX_RECORDS_PER_READ, MemoryBudget, read_limit
from service.consume.buffer import FLUSH_WORKING_SET


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
    assert read_limit(10 * 1024 * FLUSH_WORKING_SET, 1024) == 10
    assert read_limit(0, 1024) == 1  # always progress: a page of one record
    assert read_limit(1 << 40, 1) == MAX_RECORDS_PER_READ
