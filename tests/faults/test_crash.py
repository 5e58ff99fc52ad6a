"""Crash at the worst point of the flush protocol: files uploaded, checkpoint not written."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from service.settings import Settings
from tests.conftest import Aws, object_keys
from tests.faultproxy import FaultProxy, Rule, update_item_setting
from tests.faults.conftest import ServeLines
from tests.fleet import (
    Fleet,
    assert_exactly_once,
    caught_up,
    checkpoint_times,
    leases,
    report_run,
    wait_until,
)

pytestmark = pytest.mark.faults


def test_kill_between_upload_and_checkpoint_replays_the_intent_exactly(
    aws: Aws, ready: Settings, tmp_path: Path, serve_lines: ServeLines
) -> None:
    producer = serve_lines(ready, "crash")
    producer.put(120)
    s3 = aws.client("s3")
    with FaultProxy(aws.endpoint) as proxy, Fleet(aws, ready, tmp_path) as fleet:
        # Step 3 (fenced checkpoint) of the first flush never reaches DynamoDB.
        gate = proxy.add(Rule(update_item_setting(b"SET checkpoint"), "blackhole", times=1))
        victim = fleet.start("victim", endpoint=proxy.url)
        assert gate.held.wait(90), "the victim never reached its first checkpoint"
        # Freeze it first: its other shard may be mid-flush too, and the snapshot below must
        # be exactly the state it dies in.
        fleet.signal(victim, signal.SIGSTOP)
        table = leases(aws, ready)
        open_intents = {s: v for s, v in table.items() if v["intent"] is not None}
        assert open_intents and all(v["owner"] == "victim" for v in open_intents.values())
        uploaded = {
            k: s3.get_object(Bucket=ready.bucket, Key=k)["Body"].read()
            for k in object_keys(aws, ready.bucket, "logs/")
        }
        assert uploaded, "step 2 (upload) happened before the held checkpoint"
        killed_at = fleet.signal(victim, signal.SIGKILL)
        proxy.clear()

        producer.put(60)
        fleet.start("heir")
        wait_until(lambda: caught_up(aws, ready, producer.tips), 120, "the heir to catch up")
        fleet.stop_all()
        firsts = checkpoint_times(fleet, "victim", killed_at, sorted(open_intents))
        replays = fleet.events("replaying intent")

    got = assert_exactly_once(aws, ready, producer.sent)
    assert {e["worker"] for e in replays} == {"heir"}
    assert sorted(e["shard_id"] for e in replays) == sorted(open_intents)
    for event in replays:
        assert event["last"] == open_intents[event["shard_id"]]["intent"]
    # The heir rewrote the victim's objects with identical keys and bytes.
    for key, body in uploaded.items():
        assert s3.get_object(Bucket=ready.bucket, Key=key)["Body"].read() == body, key
    report_run("kill_between_upload_and_checkpoint", producer.sent, got, takeovers=firsts)
