"""Load generators for benchmarks/ingest.py, and what they and the machine cost.

Two HTTP/1.1 clients on keep-alive connections to 127.0.0.1, each sending pre-built NDJSON
bodies round-robin and reporting lines/s, p50/p99 request latency and its own CPU:
  python  a lean asyncio-streams client (every request head built before the clock
          starts, head and body written as they are, answers read by Content-Length);
  wrk     Debian's wrk (C, epoll, one thread), driven by a Lua script that returns
          requests pre-built in its ``init`` (benchmarks/install_wrk.sh unpacks it into
          .tools/wrk without a system install). The cheapest honest client: it leaves the
          server the most of the shared cores.
``machine_sample``/``machine_busy`` read the whole machine's CPU time (/proc/stat), so a
run can say how much of the two cores went to processes outside the benchmark.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
WRK_ROOT = ROOT / ".tools" / "wrk"
WRK = WRK_ROOT / "usr" / "bin" / "wrk"
# A request of 1000 lines waits for its records to be in Kinesis: far under this.
_WRK_TIMEOUT = "30s"
_WRK_BODIES = 64  # distinct bodies the Lua script cycles through (~23 MB of requests)

_WRK_SCRIPT = """
local dir, count, reqs, i = "%(dir)s", %(count)d, {}, 0
init = function(args)
  for k = 1, count do
    local f = assert(io.open(dir .. "/" .. k .. ".ndjson", "rb"))
    local body = f:read("*a")
    f:close()
    reqs[k] = wrk.format("POST", "%(path)s",
      {["Content-Type"] = "application/x-ndjson"}, body)
  end
end
request = function()
  i = i %% count + 1
  return reqs[i]
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %%d, "duration_us": %%d, "status_errors": %%d, "socket_errors": %%d,' ..
    ' "p50_us": %%d, "p99_us": %%d}\\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def wrk_available() -> bool:
    return WRK.exists()


def _summary(
    lines: int, nbytes: int, elapsed: float, latencies_ms: tuple[float, float] | None, errors: int
) -> dict[str, Any]:
    return {
        "lines": lines,
        "bytes": nbytes,
        "seconds": round(elapsed, 3),
        "lines_per_s": round(lines / elapsed),
        "mb_per_s": round(nbytes / elapsed / 1e6, 2),
        "p50_ms": round(latencies_ms[0], 2) if latencies_ms else None,
        "p99_ms": round(latencies_ms[1], 2) if latencies_ms else None,
        "errors": errors,
    }


def wrk_load(
    url: str, bodies: list[bytes], per_body: int, *, concurrency: int, seconds: float, core: int
) -> dict[str, Any]:
    """Run wrk (one thread, ``concurrency`` connections, pinned to ``core``) for ``seconds``
    over full bodies of ``per_body`` lines; its CPU time is read from its rusage."""
    parts = urlsplit(url)
    full = [b for b in bodies if b.count(b"\n") + 1 == per_body][:_WRK_BODIES]
    with tempfile.TemporaryDirectory(prefix="tideway-wrk-") as tmp:
        for k, body in enumerate(full, 1):
            Path(tmp, f"{k}.ndjson").write_bytes(body)
        script = Path(tmp, "bodies.lua")
        script.write_text(_WRK_SCRIPT % {"dir": tmp, "count": len(full), "path": parts.path})
        env = {**os.environ, "LD_LIBRARY_PATH": str(WRK_ROOT / "usr/lib/x86_64-linux-gnu")}
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = subprocess.run(
            [
                *(str(WRK), "-t1", f"-c{concurrency}", f"-d{seconds:g}s"),
                *("--timeout", _WRK_TIMEOUT, "-s", str(script), url),
            ],
            env=env,
            capture_output=True,
            check=True,
            preexec_fn=lambda: os.sched_setaffinity(0, {core}),
        )
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    report = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    elapsed = report["duration_us"] / 1e6
    ok = report["requests"] - report["status_errors"]
    mean_body = sum(map(len, full)) / len(full)
    result = _summary(
        ok * per_body,
        round(ok * mean_body),
        elapsed,
        (report["p50_us"] / 1000, report["p99_us"] / 1000),
        report["status_errors"] + report["socket_errors"],
    )
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    result["client_busy"] = round(cpu / elapsed, 2)
    return result


async def python_load(
    url: str, bodies: list[bytes], lines_per_body: int, concurrency: int, seconds: float
) -> dict[str, Any]:
    """Send ``bodies`` round-robin over ``concurrency`` keep-alive connections until all are
    sent or time is up; ``client_busy`` is this process's CPU over the run.

    Each connection is accepted by one serve worker (SO_REUSEPORT hashes connections over
    them), so ``concurrency`` connections spread over the workers the way the kernel does.
    """
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    head = (
        f"POST {parts.path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        "Content-Type: application/x-ndjson\r\nContent-Length: {}\r\n\r\n"
    )
    heads = [head.format(len(body)).encode() for body in bodies]
    latencies: list[float] = []
    sent_lines = sent_bytes = errors = 0
    next_body = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal next_body, sent_lines, sent_bytes, errors
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while next_body < len(bodies) and time.perf_counter() < deadline:
                i = next_body
                next_body += 1
                started = time.perf_counter()
                writer.write(heads[i])
                writer.write(bodies[i])
                await writer.drain()
                answer = await reader.readuntil(b"\r\n\r\n")
                status = int(answer[9:12])
                length = 0
                for line in answer.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                await reader.readexactly(length)
                if status != 200:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - started)
                sent_lines += lines_per_body
                sent_bytes += len(bodies[i])
        finally:
            writer.close()

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    pct = (
        (
            latencies[len(latencies) // 2] * 1000,
            latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        )
        if latencies
        else None
    )
    result = _summary(sent_lines, sent_bytes, elapsed, pct, errors)
    result["client_busy"] = round((time.process_time() - cpu) / elapsed, 2)
    return result


def machine_sample() -> tuple[float, float, float]:
    """(busy, steal, wall) now: CPU seconds of every process on the machine, seconds the
    hypervisor gave the vCPUs to others, and the monotonic clock."""
    import psutil

    t = psutil.cpu_times()
    steal = getattr(t, "steal", 0.0)
    busy = sum(t) - t.idle - getattr(t, "iowait", 0.0) - steal - getattr(t, "guest", 0.0)
    busy -= getattr(t, "guest_nice", 0.0)
    return busy, steal, time.monotonic()


def machine_busy(since: tuple[float, float, float]) -> dict[str, float]:
    """Cores busy (all processes) and cores stolen by the hypervisor since ``since``."""
    busy, steal, wall = machine_sample()
    elapsed = max(1e-9, wall - since[2])
    return {
        "machine_busy": round((busy - since[0]) / elapsed, 2),
        "steal": round((steal - since[1]) / elapsed, 2),
    }
