"""Redrive and replay whose S3 and DynamoDB calls pass a fault proxy (throttles, 5xx,
answers lost after the call took effect), the redrive a process SIGKILLed midway and run
again: every line is read back from S3 exactly once, in the table and in the side prefix."""

from __future__ import annotations

import asyncio
import signal
import time

import pyarrow as pa
import pytest

from service.repair.redrive import RedriveReport, redrive
from service.repair.replay import ReplayReport, Window, replay
from service.settings import Settings
from tests.conftest import Aws, drain, lineage_counts, read_dead_letters, read_table
from tests.faultproxy import FaultProxy, Rule, target_is
from tests.repair.support import SMALL_LIMIT, big_record, put_records, tideway_process

pytestmark = pytest.mark.faults

BIG, LINES_EACH, SMALL = 4, 40, 40  # big records dead-lettered under SMALL_LIMIT; small lines
SIDE = "forensics/"
TIMES = 4


def is_s3(target: str, body: bytes) -> bool:
    return target.startswith("/")  # S3 calls carry no X-Amz-Target: the proxy sees the path


def faults(proxy: FaultProxy) -> dict[str, Rule]:
    dynamodb = target_is("GetItem", "UpdateItem", "Scan")
    # Each kind a few times at most: botocore backs off up to seconds after each one.
    return {
        "dynamodb_lost": proxy.add(Rule(target_is("UpdateItem"), "lost_answer", TIMES, 0.2)),
        "dynamodb_throttle": proxy.add(Rule(dynamodb, "throttle", TIMES, 0.2)),
        "s3_lost": proxy.add(Rule(is_s3, "lost_answer", TIMES, 0.2)),
        "s3_500": proxy.add(Rule(is_s3, "error500", TIMES, 0.2)),
    }


async def killed_then_rerun(
    aws: Aws, settings: Settings, window: Window, env: dict[str, str]
) -> tuple[RedriveReport, ReplayReport]:
    """A redrive process SIGKILLed after its first upload while a replay runs here, then
    both again (in this process: a process start costs seconds of imports)."""
    killed = tideway_process(aws, settings, "redrive", "--crash-after", "upload", env=env)
    first = await replay(settings, window)
    _, err = await asyncio.to_thread(killed.communicate, timeout=60)
    assert killed.returncode == -signal.SIGKILL, err.decode()[-3000:]
    redriven, again = await asyncio.gather(redrive(settings), replay(settings, window))
    assert again == ReplayReport(already_finished=2)
    return redriven, first


def assert_once(table: pa.Table, rows: int) -> None:
    """``rows`` rows, each line once: by lineage, and by message (each line's is its own)."""
    assert table.num_rows == rows
    assert set(lineage_counts(table).values()) == {1}
    messages = table.column("message").to_pylist()
    assert len(set(messages)) == rows
    assert all(m.startswith(("big", "small")) for m in messages)


def test_a_redrive_killed_under_faults_and_a_replay_beside_it_land_each_line_once(
    aws: Aws, ready: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = ready.model_copy(update={"lease_duration": 1.0})
    start = time.time() - 1
    records = [big_record(f"big{n}", LINES_EACH) for n in range(BIG)]
    records += [b'{"message": "small-%d", "service": "api"}' % n for n in range(SMALL)]
    put_records(aws, settings, records)
    end = time.time() + 1
    asyncio.run(drain(settings, max_decompressed_bytes=SMALL_LIMIT))
    assert len(read_dead_letters(aws, settings)) == BIG
    with FaultProxy(aws.endpoint, seed=19) as proxy:
        rules = faults(proxy)
        env = {"AWS_ENDPOINT_URL_S3": proxy.url, "AWS_ENDPOINT_URL_DYNAMODB": proxy.url}
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        window = Window(start, end, SIDE)
        redriven, replayed = asyncio.run(killed_then_rerun(aws, settings, window, env))
    assert all(rule.hits for rule in rules.values()), {k: r.hits for k, r in rules.items()}
    assert redriven.objects + redriven.skipped_already_done == 2  # one dead-letter object a shard
    assert replayed.shards == 2
    lines = BIG * LINES_EACH + SMALL
    assert_once(read_table(aws, settings), lines)
    assert read_dead_letters(aws, settings) == []
    assert_once(read_table(aws, settings.model_copy(update={"prefix": SIDE})), lines)
