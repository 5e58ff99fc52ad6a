"""The consumer fleet under real faults: SIGKILL, scaling, a paused zombie, throttling and
5xx, empty pages. Lines go through ``tideway serve`` over HTTP; after each scenario, every
line acknowledged 200 is in the table exactly once."""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from service.resources import setup
from service.settings import Settings
from tests.conftest import Aws
from tests.faultproxy import FaultProxy, Rule, target_is, update_item_setting
from tests.faults.conftest import ServeLines
from tests.fleet import (
    Fleet,
    assert_exactly_once,
    caught_up,
    checkpoint_times,
    leases,
    percentile,
    report_run,
    shards_of,
    takeover_times,
    wait_until,
)
from tests.serve_fleet import ServeProducer

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


def finish(aws: Aws, settings: Settings, fleet: Fleet, producer: ServeProducer) -> None:
    producer.join()
    wait_until(lambda: caught_up(aws, settings, producer.tips), 120, "the fleet to catch up")
    fleet.stop_all()


# Production runs through every kill (about 30 s), so each new owner has lines to
# checkpoint and the takeover (signal -> its first checkpoint) is measured for each.
def test_sigkill_random_workers_repeatedly(
    aws: Aws, four_shards: Settings, tmp_path: Path, serve_lines: ServeLines
) -> None:
    rng = random.Random(7)
    producer = serve_lines(four_shards, "kill", interval=0.4)
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
        firsts = [t for name, at, held in kills for t in checkpoint_times(fleet, name, at, held)]
    got = assert_exactly_once(aws, four_shards, producer.sent)
    assert times, "no takeover was observed"
    report_run(
        "sigkill_x6",
        producer.sent,
        got,
        trials=len(kills),
        takeovers=firsts,
        acquire_p50=round(percentile(times, 0.5), 2),
        acquire_max=round(max(times), 2),
    )


def _expired_before(event: dict[str, Any], expired: list[dict[str, Any]]) -> bool:
    """Whether ``event``'s worker had stopped every shard for an expired heartbeat before it."""
    return any(e["worker"] == event["worker"] and e["time"] <= event["time"] for e in expired)


def test_scale_one_to_four_to_two_hands_off_gracefully(
    aws: Aws, four_shards: Settings, tmp_path: Path, serve_lines: ServeLines
) -> None:
    producer = serve_lines(four_shards, "scale", interval=0.5)
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
        firsts = [t for name, at, held in stopped for t in checkpoint_times(fleet, name, at, held)]
        lost = fleet.events("lease lost")
        expired = fleet.events("heartbeat expired; stopping every shard")
    got = assert_exactly_once(aws, four_shards, producer.sent)
    # Scaling moves shards by hand-off (release, then acquire), never by steal. The one
    # exception is not scaling's: a backend stall longer than the heartbeat's lease (CI saw
    # moto answer no call for ~3 s, every worker's heartbeat timing out at once) stops a
    # worker's shards, and its next fenced write then says "lease lost".
    assert [e for e in lost if not _expired_before(e, expired)] == []
    report_run(
        "scale_1_4_2",
        producer.sent,
        got,
        takeovers=firsts,
        handoff_p50=round(percentile(handoffs, 0.5), 2),
        handoff_max=round(max(handoffs), 2),
    )


def test_paused_zombie_is_fenced_and_gives_its_shards_up(
    aws: Aws, four_shards: Settings, tmp_path: Path, serve_lines: ServeLines
) -> None:
    producer = serve_lines(four_shards, "zombie", interval=0.15)
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
        firsts = checkpoint_times(fleet, "zombie", paused_at, held)
    got = assert_exactly_once(aws, four_shards, producer.sent)
    # On waking, the zombie stopped the shards it had been reading: its first fenced write
    # (intent or checkpoint) failed ("lease lost"), or, holding nothing unflushed, it let them
    # go without a write (which of the two depends on when the pause fell; CI saw both). Never
    # a shard it did not hold, and never a line twice (above).
    assert {e["shard_id"] for e in lost} <= set(held)
    # The takeover itself is asserted above (the lease table: the peer held all four). Its
    # time is a figure only: on a loaded machine the zombie's heartbeat can stall and the
    # peer take its shards just before the SIGSTOP lands, leaving no acquisition after it
    # (CI saw it once).
    report_run(
        "sigstop_zombie",
        producer.sent,
        got,
        takeovers=firsts,
        fenced_writes=len(lost),
        acquire_max=round(max(taken), 2) if taken else None,
    )


def test_throttling_5xx_and_resets_from_the_proxy(
    aws: Aws, four_shards: Settings, tmp_path: Path, serve_lines: ServeLines
) -> None:
    producer = serve_lines(four_shards, "proxy", interval=0.15)
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


def test_empty_pages_while_records_follow_and_kills(
    aws: Aws, four_shards: Settings, tmp_path: Path, serve_lines: ServeLines
) -> None:
    """A third of GetRecords answers are empty, with a lag of 0, none or positive, while
    records follow (Kinesis does this). The first worker dies between upload and checkpoint,
    so its heirs replay an open intent through such pages; then random kills. Nothing is
    checkpointed past what is in S3 (issue 14 item 2)."""
    rng = random.Random(11)
    producer = serve_lines(four_shards, "empty", interval=0.35)
    kills: list[tuple[str, float, list[str]]] = []
    with (
        FaultProxy(aws.endpoint, seed=5) as proxy,
        Fleet(aws, four_shards, tmp_path, endpoint=proxy.url) as fleet,
    ):
        gate = proxy.add(Rule(update_item_setting(b"SET checkpoint"), "blackhole", times=1))
        rule = proxy.add(Rule(target_is("GetRecords"), "empty_page", probability=0.33))
        first = fleet.start("first")
        producer.start(500)
        assert gate.held.wait(90), "the first worker never reached a checkpoint"
        held = shards_of(aws, four_shards, "first")
        kills.append(("first", fleet.signal(first, signal.SIGKILL), held))
        proxy.rules.remove(gate)
        gate.release.set()
        fleet.start()
        fleet.start()
        for _ in range(2):
            time.sleep(2.5)
            victim = rng.choice(sorted(fleet.workers.values(), key=lambda w: w.name))
            held = shards_of(aws, four_shards, victim.name)
            kills.append((victim.name, fleet.signal(victim, signal.SIGKILL), held))
            fleet.start()
        finish(aws, four_shards, fleet, producer)
        firsts = [t for name, at, held in kills for t in checkpoint_times(fleet, name, at, held)]
        replays = fleet.events("replaying intent")
    got = assert_exactly_once(aws, four_shards, producer.sent)
    assert rule.hits > 10
    assert replays, "no intent was replayed"
    report_run(
        "empty_pages_and_sigkill_x3",
        producer.sent,
        got,
        trials=len(kills),
        takeovers=firsts,
        injected={"empty_page": rule.hits},
        replays=len(replays),
    )
