"""The console's replays as tasks it owns (no AWS: the replay itself is stood in for):
a failing replay ends with its reason and the others run on; ended ones are kept a while."""

from __future__ import annotations

import asyncio

import pytest

from service.console.jobs import KEPT_ENDED, replay_jobs
from service.errors import TidewayError
from service.repair.replay import ReplayReport, Window
from service.settings import Settings

SETTINGS = Settings.load(None, stream="logs", bucket="tideway-test", prefix="live/")


async def stand_in(settings: Settings, window: Window) -> ReplayReport:
    await asyncio.sleep(0)
    if window.into == "broken/":
        raise RuntimeError("the stream went away")
    if window.into == "refused/":
        raise TidewayError("replay: no shard shardId-9 in stream logs")
    return ReplayReport(shards=1, records=3, rows=3)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_failing_replay_ends_with_its_reason_and_the_console_stays_up() -> None:
    async with replay_jobs(SETTINGS, stand_in) as jobs:
        broken = jobs.start(Window(0, 1, "broken/"), "alice")
        refused = jobs.start(Window(0, 1, "refused/"), "alice")
        fine = jobs.start(Window(0, 1, "side/"), "bob")
        await settle()
        assert (broken.state, broken.outcome) == ("failed", "RuntimeError: the stream went away")
        assert refused.outcome == "replay: no shard shardId-9 in stream logs"
        assert fine.state == "finished" and "records 3, rows 3" in fine.outcome
        assert not jobs.running


async def test_ended_replays_are_kept_for_the_page_up_to_a_bound() -> None:
    async with replay_jobs(SETTINGS, stand_in) as jobs:
        for n in range(KEPT_ENDED + 5):
            jobs.start(Window(0, 1, f"side-{n}/"), "alice")
            await settle()
        assert len(jobs.jobs) == KEPT_ENDED + 1  # the newest, and the ones that ended
        assert jobs.jobs[0].window.into == f"side-{KEPT_ENDED + 4}/"


async def test_a_window_is_checked_before_anything_runs() -> None:
    async with replay_jobs(SETTINGS, stand_in) as jobs:
        with pytest.raises(TidewayError, match=r"^replay: --into is TIDEWAY_PREFIX"):
            jobs.start(Window(0, 1, "live/"), "alice")
        assert jobs.jobs == []
