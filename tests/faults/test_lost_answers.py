"""Serve and consume as real processes, with 8% of PutRecords answers lost after the
records were written (tests/faultproxy.py ``lost_answer``): serve re-sends those puts, and
every line acknowledged 200 is a row in S3 exactly once (4,000 lines in 1,000 requests,
ten at a time over two serve processes)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from pathlib import Path

import aiohttp
import pytest

from service.envelope import EnvelopeRecord, encode
from service.local import free_port
from service.settings import Settings
from tests.conftest import Aws
from tests.faultproxy import FaultProxy, Rule, target_is
from tests.faults.conftest import ServeLines
from tests.fleet import (
    LINES_PER_RECORD,
    TIDEWAY,
    Fleet,
    landed,
    leases,
    report_run,
    route_writes_to_open_shards,
)
from tests.ingest_support import ndjson, post, serving

pytestmark = pytest.mark.faults

REQUESTS = 1000  # of LINES_PER_RECORD (4) lines: 4,000 lines in all


def _env(aws: Aws, settings: Settings, endpoint: str, **extra: str) -> dict[str, str]:
    return aws.env(
        TIDEWAY_STREAM=settings.stream,
        TIDEWAY_BUCKET=settings.bucket,
        TIDEWAY_LEASE_TABLE=settings.lease_table,
        TIDEWAY_HOST="127.0.0.1",
        TIDEWAY_FLUSH_MAX_AGE="1",
        TIDEWAY_IDLE_WAIT="0.1",
        AWS_ENDPOINT_URL=endpoint,
        **extra,
    )


def test_lines_acknowledged_despite_lost_put_answers_land_exactly_once(
    aws: Aws, ready: Settings, serve_lines: ServeLines
) -> None:
    with FaultProxy(aws.endpoint, seed=8) as proxy:
        rule = proxy.add(Rule(target_is("PutRecords"), "lost_answer", probability=0.08))
        producer = serve_lines(ready, "lost", endpoint=proxy.url)
        producer.put(REQUESTS)
    assert rule.hits > 0
    _drain(aws, ready)
    got = landed(aws, ready, producer.sent)
    report_run("lost_put_answers", producer.sent, got, injected={"lost_answer": rule.hits})
    assert len(producer.sent) == REQUESTS * LINES_PER_RECORD
    assert (got.lost, got.duplicated, got.dead_letters) == (0, 0, 0), got
    assert got.rows == len(producer.sent)


# The consumer's dedupe state travels: through a hand-off (a new process), through the
# replay of an open intent, and from a parent to its children after a reshard.

PRODUCER = bytes(range(16))
LOW_HASH = "1"  # every envelope on the stream's first shard


def _envelope(seq: int, created_s: int = 1_764_000_000) -> bytes:
    payload = b"\n".join(b'{"message":"env%d-%d"}' % (seq, i) for i in range(4))
    return encode(
        EnvelopeRecord(
            payload,
            4,
            created_s * 1_000_000,
            producer_id=PRODUCER,
            producer_seq=seq,
            created_us=created_s * 1_000_000 + seq,
        )
    )


def _put(aws: Aws, stream: str, seqs: list[int], hash_key: str = LOW_HASH) -> None:
    kinesis = aws.client("kinesis")
    for seq in seqs:
        kinesis.put_record(
            StreamName=stream, Data=_envelope(seq), PartitionKey="k", ExplicitHashKey=hash_key
        )


def _sent(seqs: range) -> list[str]:
    return [f"env{seq}-{i}" for seq in seqs for i in range(4)]


def _drain(aws: Aws, settings: Settings, endpoint: str | None = None) -> None:
    env = _env(aws, settings, endpoint or aws.endpoint, TIDEWAY_PORT=str(free_port()))
    done = subprocess.run(
        [TIDEWAY, "consume", "--drain"], env=env, capture_output=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]


def test_a_copy_read_by_the_next_owner_after_a_hand_off_is_dropped(
    aws: Aws, ready: Settings
) -> None:
    _put(aws, ready.stream, [0, 1, 0, 2])
    _drain(aws, ready)
    _put(aws, ready.stream, [1, 3, 2, 0])  # read by a new process, from the checkpoint
    _drain(aws, ready)
    got = landed(aws, ready, _sent(range(4)))
    assert (got.lost, got.duplicated, got.rows) == (0, 0, 16), got


def test_the_replay_of_an_open_intent_drops_exactly_what_the_first_reading_dropped(
    aws: Aws, ready: Settings, tmp_path: Path
) -> None:
    _put(aws, ready.stream, [0, 1, 0, 2, 1])
    with FaultProxy(aws.endpoint) as proxy, Fleet(aws, ready, tmp_path) as fleet:
        # Step 2 (upload) of the first flush never reaches S3: only the replay writes rows.
        gate = proxy.add(Rule(lambda target, _: "/logs/" in target, "blackhole", times=1))
        victim = fleet.start("victim", endpoint=proxy.url)
        assert gate.held.wait(90), "the victim never reached its first upload"
        fleet.signal(victim, signal.SIGSTOP)
        assert any(v["intent"] for v in leases(aws, ready).values())
        fleet.signal(victim, signal.SIGKILL)
        proxy.clear()
    _drain(aws, ready)  # the heir replays the intent from the state it was opened with
    got = landed(aws, ready, _sent(range(3)))
    assert (got.lost, got.duplicated, got.rows) == (0, 0, 12), got


def test_a_child_shard_drops_copies_of_what_its_parent_landed(aws: Aws, ready: Settings) -> None:
    kinesis = aws.client("kinesis")
    _put(aws, ready.stream, [0, 1, 2])
    _drain(aws, ready)
    parent = kinesis.list_shards(StreamName=ready.stream)["Shards"][0]
    high = int(parent["HashKeyRange"]["EndingHashKey"])
    kinesis.split_shard(
        StreamName=ready.stream, ShardToSplit=parent["ShardId"], NewStartingHashKey=str(high // 2)
    )
    route_writes_to_open_shards(ready.stream)
    _put(aws, ready.stream, [2, 0, 3])  # retries whose hash key now maps to the lower child
    _drain(aws, ready)
    got = landed(aws, ready, _sent(range(4)))
    assert (got.lost, got.duplicated, got.rows) == (0, 0, 16), got


async def test_a_request_resent_with_its_idempotency_key_is_one_set_of_rows(
    aws: Aws, ready: Settings
) -> None:
    body = ndjson("keyed", 300, pad="p" * 100)
    small = ready.model_copy(update={"record_target_bytes": 2048})
    async with serving(small, create=False) as url, aiohttp.ClientSession() as s:
        for _ in range(2):  # the client never saw the first answer, and sends again
            status, _, _ = await post(s, url + "/ingest", body, **{"Idempotency-Key": "b-7"})
            assert status == 200
        status, _, _ = await post(s, url + "/ingest", ndjson("unkeyed", 5))
        assert status == 200
    await asyncio.to_thread(_drain, aws, ready)
    sent = [f"keyed-{i}" for i in range(300)] + [f"unkeyed-{i}" for i in range(5)]
    got = landed(aws, ready, sent)
    assert (got.lost, got.duplicated, got.rows) == (0, 0, 305), got
