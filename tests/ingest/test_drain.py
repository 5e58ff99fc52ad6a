"""SIGTERM on a real ``tideway serve`` process with requests in flight (ECS stop)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from service.local import free_port
from service.settings import Settings
from tests.conftest import Aws
from tests.faultproxy import FaultProxy, Rule, target_is
from tests.ingest_support import ndjson, post, stream_lines

TIDEWAY = Path(sys.executable).with_name("tideway")


async def test_sigterm_finishes_inflight_requests_and_exits_zero(aws: Aws, ready: Settings) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with FaultProxy(aws.endpoint) as proxy:
        proxy.add(Rule(target_is("PutRecords"), "delay", seconds=1.0))
        env = aws.env(
            AWS_ENDPOINT_URL=proxy.url,
            TIDEWAY_STREAM=ready.stream,
            TIDEWAY_BUCKET=ready.bucket,
            TIDEWAY_HOST="127.0.0.1",
            TIDEWAY_PORT=str(port),
            TIDEWAY_LINGER_MS="20",
        )
        proc = subprocess.Popen(
            [str(TIDEWAY), "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            async with aiohttp.ClientSession() as s:
                # Two spawned workers start in a few seconds; a loaded 2-core machine has
                # taken over 30.
                for _ in range(1200):
                    try:
                        async with s.get(url + "/readyz") as r:
                            if r.status == 200:
                                break
                    except aiohttp.ClientConnectionError:
                        pass
                    await asyncio.sleep(0.1)
                else:
                    pytest.fail("tideway serve was not ready in 120 s")
                inflight = [
                    asyncio.create_task(post(s, url + "/ingest", ndjson(f"d{r}", 30)))
                    for r in range(8)
                ]
                await asyncio.sleep(0.4)  # the requests are waiting on the delayed PutRecords
                proc.send_signal(signal.SIGTERM)
                await asyncio.sleep(0.2)
                try:
                    status_after, _, _ = await post(s, url + "/ingest", ndjson("late", 1))
                except aiohttp.ClientConnectionError:
                    status_after = 0  # no longer listening
                results = await asyncio.gather(*inflight, return_exceptions=True)
            code = await asyncio.to_thread(proc.wait, 30)
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
    assert code == 0, proc.stderr.read() if proc.stderr else b""
    assert status_after in (0, 503)
    statuses = [r[0] if isinstance(r, tuple) else repr(r) for r in results]
    assert statuses == [200] * 8, statuses
    stored = {x["message"] for x in stream_lines(aws, ready.stream)}
    assert {f"d{r}-{i}" for r in range(8) for i in range(30)} <= stored
    assert "late-0" not in stored
