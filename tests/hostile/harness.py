"""Runs the hostile corpus against a real ``tideway serve`` subprocess, watching its RSS
(psutil, every 5 ms) and the latency of /healthz asked from a second connection."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp
import orjson
import psutil

from service.local import free_port
from tests.hostile.corpus import MIB, Attack

KEY = "hostile-harness-key"
MB = 1e6


@dataclass
class Outcome:
    attack: str
    status: int
    allowed: bool
    rss_before_mb: float
    rss_peak_mb: float
    rss_growth_mb: float
    bound_mb: float
    healthz_worst_ms: float
    healthz_p99_ms: float
    answer_bytes: int
    healthz_p50_ms: float = 0.0
    healthz_answers: int = 0  # /healthz answers received while the request was in flight
    healthz_all_ok: bool = True  # every /healthz answer was 200

    @property
    def within_bound(self) -> bool:
        return self.rss_growth_mb <= self.bound_mb


class RssWatch:
    """Peak RSS of one process since the last ``reset``, sampled on a thread."""

    def __init__(self, pid: int, every: float = 0.005) -> None:
        self._proc = psutil.Process(pid)
        self._every = every
        self._stop = threading.Event()
        self.peak = self.now()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def now(self) -> int:
        return int(self._proc.memory_info().rss)

    def reset(self) -> int:
        self.peak = current = self.now()
        return current

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            with contextlib.suppress(psutil.Error):
                self.peak = max(self.peak, self.now())

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


@contextlib.asynccontextmanager
async def serve_subprocess(
    env: dict[str, str], command: Sequence[str] = ()
) -> AsyncIterator[tuple[str, int]]:
    """``tideway serve`` as its own process with a key configured; yields (url, pid)."""
    port = free_port()
    digest = hashlib.sha256(KEY.encode()).hexdigest()
    full = {
        **env,
        "TIDEWAY_HOST": "127.0.0.1",
        "TIDEWAY_PORT": str(port),
        "TIDEWAY_API_KEYS": orjson.dumps([digest]).decode(),
        "TIDEWAY_EMF_INTERVAL": "0",
        # The corpus measures one server process (its RSS, its loop): one worker, not one
        # per CPU under a supervisor.
        "TIDEWAY_WORKERS": "1",
    }
    cmd = list(command) or [sys.executable, "-m", "service", "serve"]
    proc = subprocess.Popen(cmd, env=full, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as s:
            for _ in range(300):
                if proc.poll() is not None:
                    raise RuntimeError(f"serve exited: {proc.stderr.read()[-2000:]!r}")  # type: ignore[union-attr]
                with contextlib.suppress(aiohttp.ClientError):
                    async with s.get(url + "/healthz") as r:
                        if r.status == 200:
                            break
                await asyncio.sleep(0.1)
        yield url, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass(frozen=True)
class Probe:
    """One /healthz answer: when it was asked and answered (perf_counter), its status."""

    asked: float
    answered: float
    status: int


async def _healthz(url: str, stop: asyncio.Event, out: list[Probe]) -> None:
    connector = aiohttp.TCPConnector(limit=1)  # its own connection, never the attacker's
    async with aiohttp.ClientSession(connector=connector) as s:
        while not stop.is_set():
            started = time.perf_counter()
            async with s.get(url + "/healthz") as r:
                await r.read()
            out.append(Probe(started, time.perf_counter(), r.status))
            await asyncio.sleep(0.02)


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


async def attack_once(url: str, watch: RssWatch, attack: Attack) -> Outcome:
    before = watch.reset()
    stop = asyncio.Event()
    probes: list[Probe] = []
    probe = asyncio.create_task(_healthz(url, stop, probes))
    await asyncio.sleep(0.05)
    headers = {"Content-Type": attack.content_type, "X-API-Key": KEY, **attack.headers}
    sent = time.perf_counter()
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as s,
        s.request(attack.method, url + attack.path, data=attack.body, headers=headers) as r,
    ):
        answer = await r.read()
        status = r.status
    done = time.perf_counter()
    await asyncio.sleep(0.05)
    stop.set()
    await probe
    latencies = sorted(p.answered - p.asked for p in probes)
    return Outcome(
        attack=attack.name,
        status=status,
        allowed=status in attack.statuses,
        rss_before_mb=round(before / MB, 1),
        rss_peak_mb=round(watch.peak / MB, 1),
        rss_growth_mb=round((watch.peak - before) / MB, 1),
        bound_mb=round((2 * attack.decompressed + 64 * MIB) / MB, 1),
        healthz_worst_ms=round(1000 * max(latencies, default=0.0), 1),
        healthz_p99_ms=round(1000 * _percentile(latencies, 0.99), 1),
        answer_bytes=len(answer),
        healthz_p50_ms=round(1000 * _percentile(latencies, 0.5), 1),
        healthz_answers=sum(sent < p.answered < done for p in probes),
        healthz_all_ok=all(p.status == 200 for p in probes),
    )


async def run_corpus(url: str, pid: int, attacks: Sequence[Attack]) -> list[Outcome]:
    watch = RssWatch(pid)
    try:
        return [await attack_once(url, watch, attack) for attack in attacks]
    finally:
        watch.close()


def write_report(outcomes: Sequence[Outcome], path: Path) -> None:
    path.write_bytes(orjson.dumps([asdict(o) for o in outcomes], option=orjson.OPT_INDENT_2))


def environment_for(base: dict[str, str], stream: str, bucket: str) -> dict[str, str]:
    env = {k: v for k, v in base.items() if not k.startswith("TIDEWAY_")}
    env.update({"TIDEWAY_STREAM": stream, "TIDEWAY_BUCKET": bucket})
    env.setdefault("PYTHONPATH", os.getcwd())
    return env
