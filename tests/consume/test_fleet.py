"""The consumer as one fleet member: /status over HTTP, start positions for new shards."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from pathlib import Path

import pytest

from service.consume.runner import consume
from service.settings import Settings
from tests.conftest import Aws, read_table
from tests.fleet import Fleet, Producer, caught_up, leases, wait_until


def get_json(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        assert resp.status == 200
        return dict(json.loads(resp.read()))


def test_status_shows_leases_checkpoints_and_lag_over_http(
    aws: Aws, ready: Settings, tmp_path: Path
) -> None:
    producer = Producer(aws, ready.stream, tag="status")
    producer.put(40)
    with Fleet(aws, ready, tmp_path) as fleet:
        worker = fleet.start("solo")
        wait_until(lambda: caught_up(aws, ready, producer.tips), 60, "solo to catch up")
        status = get_json(worker.url + "/status")
        metrics = urllib.request.urlopen(worker.url + "/metrics", timeout=5).read().decode()
        fleet.stop_all()
    assert status["worker_id"] == "solo" and status["ready"] is True
    assert status["live_workers"] == ["solo"] and status["leaving"] is False
    assert status["leases_by_owner"] == {"solo": 2}
    assert isinstance(status["lag_ms"], int)
    shards = status["shards"]
    assert isinstance(shards, dict) and sorted(shards) == sorted(producer.tips)
    for sid, view in shards.items():
        assert view["owner"] == "solo" and view["assigned_to"] == "solo"
        assert view["closed"] is False and view["finished"] is False and view["epoch"] >= 1
        here = view["here"]  # live, where "checkpoint" above is as of the last lease round
        assert int(here["checkpoint"]) == producer.tips[sid]
        assert int(here["last_read"]) == producer.tips[sid]
        assert here["millis_behind"] >= 0 and here["buffered_records"] >= 0
    assert "tideway_leases_held 2.0" in metrics


async def consume_until_caught_up(
    aws: Aws, settings: Settings, producer: Producer, before_new: int
) -> list[str]:
    """Run a consumer in-process; produce ``before_new`` old records before it starts and the
    same number after it holds every lease; return the messages that landed."""
    producer.put(before_new)
    old = set(producer.sent)
    time.sleep(1.2)  # the test's AT_TIMESTAMP falls between the old and the new records
    stop = asyncio.Event()
    task = asyncio.create_task(consume(settings, stop))
    try:

        def owned() -> bool:
            return (
                all(v["owner"] for v in leases(aws, settings).values())
                and len(leases(aws, settings)) == 2
            )

        await asyncio.to_thread(wait_until, owned, 60, "both leases")
        await asyncio.sleep(1.0)  # readers have their first iterator (LATEST is "now" then)
        await asyncio.to_thread(producer.put, before_new)
        await asyncio.to_thread(
            wait_until, lambda: caught_up(aws, settings, producer.tips), 60, "catch up"
        )
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
    messages = read_table(aws, settings).column("message").to_pylist()
    assert len(messages) == len(set(messages))
    new = set(producer.sent) - old
    assert new <= set(messages)
    return [m for m in messages if m in old]


@pytest.mark.parametrize("position", ["TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"])
async def test_start_position_applies_to_shards_with_no_checkpoint(
    aws: Aws, ready: Settings, position: str
) -> None:
    # AT_TIMESTAMP: a second after the old records, before the consumer starts.
    producer = Producer(aws, ready.stream, tag=position)
    stamp = time.time() + 1.05
    run = ready.model_copy(update={"start_position": position, "start_timestamp": stamp})
    old_landed = await consume_until_caught_up(aws, run, producer, 20)
    if position == "TRIM_HORIZON":
        assert len(old_landed) == 20 * 4
    else:
        assert old_landed == []
