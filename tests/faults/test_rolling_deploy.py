"""A rolling deploy with an open intent: the victim (old settings) dies between upload and
checkpoint; the heir (new settings) replays the intent with the plan it recorded."""

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

OLD = {
    "TIDEWAY_FILE_TARGET_BYTES": "1024",
    "TIDEWAY_PARTITION_TEMPLATE": "dt={date}/service={service}",
    "TIDEWAY_MAX_PARTITIONS_PER_FLUSH": "1",
}


def test_a_replay_after_a_settings_change_rewrites_exactly_the_old_objects(
    aws: Aws, ready: Settings, tmp_path: Path, serve_lines: ServeLines
) -> None:
    producer = serve_lines(ready, "deploy")
    producer.put(120)
    s3 = aws.client("s3")
    with FaultProxy(aws.endpoint) as proxy, Fleet(aws, ready, tmp_path, **OLD) as fleet:
        gate = proxy.add(Rule(update_item_setting(b"SET checkpoint"), "blackhole", times=1))
        victim = fleet.start("victim", endpoint=proxy.url)
        assert gate.held.wait(90), "the victim never reached its first checkpoint"
        fleet.signal(victim, signal.SIGSTOP)
        open_intents = {s: v for s, v in leases(aws, ready).items() if v["intent"] is not None}
        assert open_intents
        uploaded = {
            k: s3.get_object(Bucket=ready.bucket, Key=k)["Body"].read()
            for k in object_keys(aws, ready.bucket, "logs/")
        }
        assert uploaded
        killed_at = fleet.signal(victim, signal.SIGKILL)
        proxy.clear()

        for name in OLD:  # the new version's task definition: default settings
            del fleet.env[name]
        producer.put(60)
        fleet.start("heir")
        wait_until(lambda: caught_up(aws, ready, producer.tips), 120, "the heir to catch up")
        fleet.stop_all()
        firsts = checkpoint_times(fleet, "victim", killed_at, sorted(open_intents))

    got = assert_exactly_once(aws, ready, producer.sent)
    # The victim's objects stand as they were: the heir planned under the intent's settings.
    for key, body in uploaded.items():
        assert s3.get_object(Bucket=ready.bucket, Key=key)["Body"].read() == body, key
    # The heir's own flushes (after the intent) use its own template.
    assert any("/hour=" in k for k in object_keys(aws, ready.bucket, "logs/"))
    report_run("rolling_deploy_with_open_intent", producer.sent, got, takeovers=firsts)
