"""Kinesis misbehaves (through tests/faultproxy.py in front of moto): every 200 is durable,
no accepted line is lost, memory stays bounded and overload is answered 503 + Retry-After."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import aiohttp
import pytest

from service.settings import Settings
from tests.conftest import Aws
from tests.faultproxy import FaultProxy, Rule, target_is
from tests.ingest_support import gauge, ndjson, post, serving, stream_lines


@pytest.fixture
def proxy(aws: Aws) -> Iterator[FaultProxy]:
    """The server's AWS endpoint is the proxy; the test reads the stream from moto directly."""
    with FaultProxy(aws.endpoint) as p:
        os.environ["AWS_ENDPOINT_URL"] = p.url
        yield p


def _messages(aws: Aws, stream: str) -> set[str]:
    return {str(x["message"]) for x in stream_lines(aws, stream)}


async def _send(
    s: aiohttp.ClientSession, url: str, tag: str, lines: int = 20
) -> tuple[int, set[str], dict[str, str]]:
    status, _, headers = await post(s, url + "/ingest", ndjson(tag, lines))
    return status, {f"{tag}-{i}" for i in range(lines)}, headers


@pytest.mark.parametrize(
    "rule",
    [
        Rule(target_is("PutRecords"), "throttle", times=3),
        Rule(target_is("PutRecords"), "error500", times=3),
        Rule(target_is("PutRecords"), "delay", times=3, seconds=0.7),
        Rule(target_is("PutRecords"), "reset", times=2),
        Rule(target_is("PutRecords"), "partial", times=4),
    ],
    ids=lambda r: r.action,
)
async def test_every_acknowledged_line_is_in_the_stream_despite_faults(
    aws: Aws, ready: Settings, proxy: FaultProxy, rule: Rule
) -> None:
    proxy.add(rule)
    many = ready.model_copy(update={"record_target_bytes": 2048})  # several records per call
    async with serving(many, create=False) as url, aiohttp.ClientSession() as s:
        results = await asyncio.gather(*(_send(s, url, f"{rule.action}{r}") for r in range(6)))
    assert rule.hits > 0
    assert [status for status, _, _ in results] == [200] * 6
    acknowledged = set().union(*(ids for _, ids, _ in results))
    assert acknowledged <= _messages(aws, ready.stream)


async def test_throttling_past_the_deadline_is_answered_503_with_retry_after(
    aws: Aws, ready: Settings, proxy: FaultProxy
) -> None:
    proxy.add(Rule(target_is("PutRecords"), "throttle"))
    short = ready.model_copy(update={"put_deadline": 1.0})
    async with serving(short, create=False) as url, aiohttp.ClientSession() as s:
        refused = await asyncio.gather(*(_send(s, url, f"t{r}") for r in range(3)))
        assert {status for status, _, _ in refused} == {503}
        assert all(int(h["Retry-After"]) >= 1 for _, _, h in refused)
        proxy.clear()
        status, ids, _ = await _send(s, url, "after")
        assert status == 200
        assert await gauge(s, url, "tideway_ingest_inflight_bytes") == 0
    assert ids <= _messages(aws, ready.stream)


async def test_inflight_bytes_never_pass_the_limit_and_a_full_buffer_answers_503(
    aws: Aws, ready: Settings, proxy: FaultProxy
) -> None:
    proxy.add(Rule(target_is("PutRecords"), "delay", seconds=0.4))
    limit = 160 * 1024
    small = ready.model_copy(update={"max_inflight_bytes": limit})
    samples: list[float] = []
    async with serving(small, create=False) as url, aiohttp.ClientSession() as s:
        done = asyncio.Event()

        async def sample() -> None:
            while not done.is_set():
                samples.append(await gauge(s, url, "tideway_ingest_inflight_bytes"))
                await asyncio.sleep(0.02)

        sampler = asyncio.create_task(sample())
        results = await asyncio.gather(*(_send(s, url, f"m{r}", lines=300) for r in range(16)))
        done.set()
        await sampler
    statuses = [status for status, _, _ in results]
    assert 200 in statuses and 503 in statuses, statuses
    assert all("Retry-After" in h for status, _, h in results if status == 503)
    assert max(samples) <= limit and max(samples) > 0
    acknowledged = set().union(*(ids for status, ids, _ in results if status == 200))
    assert acknowledged <= _messages(aws, ready.stream)
