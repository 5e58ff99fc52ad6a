"""``tideway serve`` on every core (issue 16): worker processes share the port, /metrics
counts all of them, and SIGTERM drains every one of them."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import psutil

from service.local import free_port
from service.settings import Settings
from tests.conftest import Aws
from tests.ingest_support import ndjson, post, stream_lines

TIDEWAY = Path(sys.executable).with_name("tideway")
REQUESTS = 40
LINES = 25


async def _ready(url: str) -> None:
    async with aiohttp.ClientSession() as s:
        for _ in range(200):
            try:
                async with s.get(url + "/readyz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError("serve never became ready")


def _workers(pid: int) -> list[psutil.Process]:
    """The worker processes of ``pid`` (not multiprocessing's resource tracker)."""
    return [c for c in psutil.Process(pid).children() if "spawn_main" in " ".join(c.cmdline())]


def _serving_workers(pid: int, port: int) -> set[int]:
    """Worker processes of ``pid`` holding an established connection on ``port``."""
    return {
        child.pid
        for child in _workers(pid)
        if any(
            c.laddr and c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED
            for c in child.net_connections("tcp")
        )
    }


async def test_two_workers_share_the_port_count_together_and_drain_on_sigterm(
    aws: Aws, ready: Settings
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = aws.env(
        TIDEWAY_STREAM=ready.stream,
        TIDEWAY_BUCKET=ready.bucket,
        TIDEWAY_HOST="127.0.0.1",
        TIDEWAY_PORT=str(port),
        TIDEWAY_WORKERS="2",
        TIDEWAY_LINGER_MS="20",
    )
    proc = subprocess.Popen(
        [str(TIDEWAY), "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        await _ready(url)
        assert len(_workers(proc.pid)) == 2
        # One connection per request, all kept open: the kernel spreads them over both.
        sessions = [aiohttp.ClientSession() for _ in range(REQUESTS)]
        try:
            answers = await asyncio.gather(
                *(post(s, url + "/ingest", ndjson(f"w{r}", LINES)) for r, s in enumerate(sessions))
            )
            serving = _serving_workers(proc.pid, port)
        finally:
            for s in sessions:
                await s.close()
        assert [a[0] for a in answers] == [200] * REQUESTS
        assert len(serving) == 2, serving
        async with aiohttp.ClientSession() as s, s.get(url + "/metrics") as r:
            page = await r.text()
        accepted = re.search(r"^tideway_ingest_lines_accepted_total (\S+)$", page, re.MULTILINE)
        assert accepted and float(accepted.group(1)) == REQUESTS * LINES, page[:2000]
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 30)
        took = time.monotonic() - signalled
    finally:
        if proc.poll() is None:
            for child in psutil.Process(proc.pid).children():
                child.kill()
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    assert code == 0, proc.stderr.read() if proc.stderr else b""
    assert took < 30
    stored = [x["message"] for x in stream_lines(aws, ready.stream)]
    assert sorted(stored) == sorted(f"w{r}-{i}" for r in range(REQUESTS) for i in range(LINES))
