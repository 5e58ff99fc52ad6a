"""The consumer fleet under real faults: SIGKILL, scaling, a paused zombie, throttling and
5xx, resharding. After each, every produced line is in the table exactly once."""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

import pytest

from service.resources import setup
from service.settings import Settings
from tests.conftest import Aws
from tests.faultproxy import FaultProxy, Rule, target_is
from tests.fleet import (
    Fleet,
    Producer,
    assert_exactly_once,
    caught_up,
    leases,
    percentile,
    report_run,
    shards_of,
    takeover_times,
    wait_until,
)

pytestmark = pytest.mark.faults


@pytest.fixture
async def four_shards(settings: Settings) -> Settings:
    four = settings.model_copy(update={"shard_count": 4})
    await setup(four)
    return four


def owners(aws: Aws, settings: Settings) -> dict[str, int]:
    count: dict[str, int] = {}
    for lease in leases(aws, settings).values():
        if lease["owner"]:
            count[lease["owner"]] = count.get(lease["owner"], 0) + 1
    return count


def finish(aws: Aws, settings: Settings, fleet: Fleet, producer: Producer) -> None:
    producer.join()
    wait_until(lambda: caught_up(aws, settings, producer.tips), 120, "the fleet to catch up")
    fleet.stop_all()


def test_sigkill_random_workers_repeatedly(aws: Aws, four_shards: Settings, tmp_path: Path) -> None:
    rng = random.Random(7)
    producer = Producer(aws, four_shards.stream, tag="kill", interval=0.15)
    kills: list[tuple[str, float, list[str]]] = []
    with Fleet(aws, four_shards, tmp_path) as fleet:
        for _ in range(3):
            fleet.start()
        wait_until(lambda: len(owners(aws, four_shards)) == 3, 60, "three owners")
        producer.start(700)
        for _ in range(6):
            time.sleep(2.0)
            candidates = [
                w for w in fleet.workers.values() if shards_of(aws, four_shards, w.name)
            ] or list(fleet.workers.values())
            victim = rng.choice(sorted(candidates, key=lambda w: w.name))
            held = shards_of(aws, four_shards, victim.name)
            kills.append((victim.name, fleet.signal(victim, signal.SIGKILL), held))
            fleet.start()
        finish(aws, four_shards, fleet, producer)
        times = [t for name, at, held in kills for t in takeover_times(fleet, name, at, held)]
    got = assert_exactly_once(aws, four_shards, producer.sent)
    assert times, "no takeover was observed"
    report_run(
        "sigkill_x6",
        producer.sent,
        got,
        trials=len(kills),
        takeovers=len(times),
        takeover_p50=round(percentile(times, 0.5), 2),
        takeover_max=round(max(times), 2),
    )


def test_scale_one_to_four_to_two_hands_off_gracefully(
    aws: Aws, four_shards: Settings, tmp_path: Path
) -> None:
    producer = Producer(aws, four_shards.stream, tag="scale", interval=0.15)
    with Fleet(aws, four_shards, tmp_path) as fleet:
        fleet.start()
        wait_until(lambda: owners(aws, four_shards) == {"w1": 4}, 60, "w1 to own all")
        producer.start(600)
        for _ in range(3):
            fleet.start()
        wait_until(lambda: sorted(owners(aws, four_shards).values()) == [1, 1, 1, 1], 60, "1 each")
        stopped = []
        for name in ("w3", "w4"):
            held = shards_of(aws, four_shards, name)
            stopped.append((name, fleet.signal(fleet.workers[name], signal.SIGTERM), held))
        wait_until(lambda: sorted(owners(aws, four_shards).values()) == [2, 2], 60, "2 each")
        finish(aws, four_shards, fleet, producer)
        handoffs = [t for name, at, held in stopped for t in takeover_times(fleet, name, at, held)]
        lost = fleet.events("lease lost")
    got = assert_exactly_once(aws, four_shards, producer.sent)
    # Scaling moves shards by hand-off (release, then acquire), never by steal.
    assert lost == []
    report_run(
        "scale_1_4_2",
        producer.sent,
        got,
        handoff_p50=round(percentile(handoffs, 0.5), 2),
        handoff_max=round(max(handoffs), 2),
    )


def test_paused_zombie_is_fenced_and_gives_its_shards_up(
    aws: Aws, four_shards: Settings, tmp_path: Path
) -> None:
    producer = Producer(aws, four_shards.stream, tag="zombie", interval=0.15)
    with Fleet(aws, four_shards, tmp_path) as fleet:
        zombie, _ = fleet.start("zombie"), fleet.start("peer")
        wait_until(lambda: owners(aws, four_shards) == {"zombie": 2, "peer": 2}, 60, "2 each")
        producer.start(500)
        time.sleep(1.5)
        held = shards_of(aws, four_shards, "zombie")
        paused_at = fleet.signal(zombie, signal.SIGSTOP)
        wait_until(lambda: owners(aws, four_shards) == {"peer": 4}, 60, "peer to take all")
        time.sleep(1.0)
        zombie.proc.send_signal(signal.SIGCONT)
        wait_until(lambda: owners(aws, four_shards) == {"zombie": 2, "peer": 2}, 60, "rebalance")
        finish(aws, four_shards, fleet, producer)
        lost = [e for e in fleet.events("lease lost") if e["worker"] == "zombie"]
        taken = takeover_times(fleet, "zombie", paused_at, held)
    got = assert_exactly_once(aws, four_shards, producer.sent)
    # On waking, the zombie's first fenced write (intent or checkpoint) failed on the shards
    # it had been reading, and it stopped them.
    assert lost and {e["shard_id"] for e in lost} <= set(held)
    report_run(
        "sigstop_zombie",
        producer.sent,
        got,
        fenced_writes=len(lost),
        takeover_max=round(max(taken), 2),
    )


def test_throttling_5xx_and_resets_from_the_proxy(
    aws: Aws, four_shards: Settings, tmp_path: Path
) -> None:
    producer = Producer(aws, four_shards.stream, tag="proxy", interval=0.15)
    with (
        FaultProxy(aws.endpoint, seed=3) as proxy,
        Fleet(aws, four_shards, tmp_path, endpoint=proxy.url) as fleet,
    ):
        proxy.add(Rule(target_is("GetRecords"), "throttle", probability=0.25))
        proxy.add(Rule(target_is("GetRecords", "GetShardIterator"), "error500", probability=0.1))
        proxy.add(Rule(target_is("GetRecords"), "reset", probability=0.03))
        proxy.add(Rule(target_is("UpdateItem", "Scan", "PutItem"), "error500", probability=0.05))
        proxy.add(Rule(target_is("ListShards"), "throttle", probability=0.1))
        fleet.start()
        fleet.start()
        producer.start(500)
        finish(aws, four_shards, fleet, producer)
        counts = dict(proxy.counts)
    got = assert_exactly_once(aws, four_shards, producer.sent)
    assert counts.get("throttle", 0) > 10 and counts.get("error500", 0) > 5
    report_run("proxy_throttle_5xx_reset", producer.sent, got, injected=counts)
