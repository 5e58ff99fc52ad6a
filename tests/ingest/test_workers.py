"""``tideway serve`` on every core (issue 16): worker processes share the HTTP and gRPC
ports, /metrics counts all of them (process figures per worker), a worker that dies is
started again, one that cannot start ends the supervisor with one line, and SIGTERM drains
every one of them."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO

import aiohttp
import grpc
import psutil
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)

from service.errors import ServeWorkerError
from service.ingest.grpc_logs import EXPORT_PATH
from service.ingest.workers import MAX_QUICK_DEATHS, supervise, worker_cpus
from service.local import free_port
from service.settings import Settings
from tests.conftest import Aws, drain, lineage_counts, read_table
from tests.ingest.dying_worker import die_at_start
from tests.ingest_support import ndjson, post, stream_lines

TIDEWAY = Path(sys.executable).with_name("tideway")
CONNECTIONS = 20  # per round, all kept open while the round lasts
ROUNDS = 10  # rounds before giving up on one worker ever being served
LINES = 25
DIED = "a serve worker died: starting it again"  # the supervisor's log line


class Serve:
    """A ``tideway serve`` process with two workers, as ECS runs it."""

    def __init__(
        self, proc: subprocess.Popen[bytes], port: int, grpc_port: int, stderr: IO[bytes]
    ) -> None:
        self.proc, self.port, self.grpc_port, self._stderr = proc, port, grpc_port, stderr
        self.url = f"http://127.0.0.1:{port}"

    def workers(self) -> list[psutil.Process]:
        """The live worker processes (not multiprocessing's resource tracker)."""
        workers = []
        for child in psutil.Process(self.proc.pid).children():
            try:
                if "spawn_main" in " ".join(child.cmdline()):
                    workers.append(child)
            except psutil.NoSuchProcess:  # a dead worker (a zombie until reaped)
                pass
        return workers

    def _holding(self, port: int, status: str) -> set[int]:
        held = set()
        for child in self.workers():
            try:
                conns = child.net_connections("tcp")
            except psutil.NoSuchProcess:
                continue
            if any(c.laddr and c.laddr.port == port and c.status == status for c in conns):
                held.add(child.pid)
        return held

    def listening(self, port: int) -> set[int]:
        return self._holding(port, psutil.CONN_LISTEN)

    def serving(self, port: int) -> set[int]:
        """Workers holding an established connection on ``port``."""
        return self._holding(port, psutil.CONN_ESTABLISHED)

    async def all_listening(self, port: int, count: int = 2) -> set[int]:
        """Wait until ``count`` workers listen on ``port`` (each binds it after its start)."""
        for _ in range(600):
            listening = self.listening(port)
            if len(listening) == count and self.proc.poll() is None:
                return listening
            await asyncio.sleep(0.1)
        raise AssertionError(f"never {count} workers listening on {port}: {listening}")

    async def metrics(self) -> str:
        async with aiohttp.ClientSession() as s, s.get(self.url + "/metrics") as r:
            return await r.text()

    async def stop(self) -> tuple[int, str]:
        """SIGTERM, as ECS stops a task; the exit code and stderr."""
        self.proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(self.proc.wait, 60)
        return code, self.stderr()

    def stderr(self) -> str:
        """What the process wrote so far. Read with pread: the process writes through the same
        open file, so moving its offset (seek) would make it overwrite what it wrote."""
        fd = self._stderr.fileno()
        return os.pread(fd, os.fstat(fd).st_size, 0).decode(errors="replace")


@asynccontextmanager
async def _serve(
    aws: Aws, ready: Settings, grpc_port: int = 0, cpus: set[int] | None = None, **extra: str
) -> AsyncIterator[Serve]:
    """Two workers; ``cpus``: the affinity mask the task is started with (as ECS gives it)."""
    port = free_port()
    env = aws.env(
        **extra,
        TIDEWAY_STREAM=ready.stream,
        TIDEWAY_BUCKET=ready.bucket,
        TIDEWAY_HOST="127.0.0.1",
        TIDEWAY_PORT=str(port),
        TIDEWAY_GRPC_PORT=str(grpc_port),
        TIDEWAY_WORKERS="2",
        TIDEWAY_LINGER_MS="20",
    )
    # A file, not a pipe: nobody reads a pipe while the test runs, and a full one would
    # block the workers' logging.
    with tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen(
            [str(TIDEWAY), "serve"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            preexec_fn=None if cpus is None else lambda: os.sched_setaffinity(0, cpus),  # noqa: PLW1509
        )
        try:
            yield Serve(proc, port, grpc_port, stderr)
        finally:
            if proc.poll() is None:
                for child in psutil.Process(proc.pid).children():
                    child.kill()
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()


async def _until_both_served(
    send_round: Callable[[int], Awaitable[set[int]]],
) -> tuple[int, set[int]]:
    """Send rounds of ``CONNECTIONS`` connections until both workers served one (the kernel
    spreads connections by a hash of their addresses) or ``ROUNDS`` rounds; the rounds sent
    and the workers that served."""
    served: set[int] = set()
    rounds = 0
    while len(served) < 2 and rounds < ROUNDS:
        served |= await send_round(rounds)
        rounds += 1
    return rounds, served


async def _http_round(serve: Serve, prefix: str, first: int) -> set[int]:
    """``CONNECTIONS`` requests of ``LINES`` lines, each on its own connection, all 200."""
    sessions = [aiohttp.ClientSession() for _ in range(CONNECTIONS)]
    try:
        answers = await asyncio.gather(
            *(
                post(s, serve.url + "/ingest", ndjson(f"{prefix}{first + r}", LINES))
                for r, s in enumerate(sessions)
            )
        )
        served = serve.serving(serve.port)
    finally:
        for s in sessions:
            await s.close()
    assert [a[0] for a in answers] == [200] * CONNECTIONS, answers
    return served


def _sent(prefix: str, requests: int) -> list[str]:
    return sorted(f"{prefix}{r}-{i}" for r in range(requests) for i in range(LINES))


def _sample(page: str, name: str) -> float:
    found = re.search(rf"^{name} (\S+)$", page, re.MULTILINE)
    assert found, page[:2000]
    return float(found.group(1))


async def test_two_workers_share_the_port_count_together_and_drain_on_sigterm(
    aws: Aws, ready: Settings
) -> None:
    async with _serve(aws, ready) as serve:
        await serve.all_listening(serve.port)
        rounds, served = await _until_both_served(
            lambda n: _http_round(serve, "w", n * CONNECTIONS)
        )
        assert len(served) == 2, f"one worker served every connection of {rounds} rounds"
        requests = rounds * CONNECTIONS
        page = await serve.metrics()
        assert _sample(page, "tideway_ingest_lines_accepted_total") == requests * LINES
        code, stderr = await serve.stop()
    assert code == 0, stderr
    assert sorted(x["message"] for x in stream_lines(aws, ready.stream)) == _sent("w", requests)


def test_one_worker_per_cpu_of_the_mask_is_pinned_to_it_and_others_are_not() -> None:
    assert worker_cpus(2, {5, 3}, pin=True) == (3, 5)
    assert worker_cpus(2, {3, 5}, pin=False) == (None, None)
    assert worker_cpus(3, {3, 5}, pin=True) == (None, None, None)  # more workers than CPUs
    assert worker_cpus(2, {0, 1, 2, 3}, pin=True) == (None, None)  # fewer: kernel places
    assert worker_cpus(1, {0}, pin=True) == (None,)
    assert worker_cpus(2, set(), pin=True) == (None, None)  # no affinity mask (macOS)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to pin to")
async def test_each_worker_runs_on_its_own_cpu_also_after_a_restart(
    aws: Aws, ready: Settings
) -> None:
    cpus = set(sorted(os.sched_getaffinity(0))[:2])
    async with _serve(aws, ready, cpus=cpus) as serve:
        first = await serve.all_listening(serve.port)
        masks = {w.pid: frozenset(w.cpu_affinity()) for w in serve.workers()}
        killed = min(first)
        os.kill(killed, signal.SIGKILL)
        for _ in range(600):
            listening = serve.listening(serve.port)
            if len(listening) == 2 and killed not in listening:
                break
            await asyncio.sleep(0.1)
        (heir,) = listening - first
        heir_mask = frozenset(psutil.Process(heir).cpu_affinity())
        code, stderr = await serve.stop()
    assert code == 0, stderr
    assert sorted(masks.values(), key=min) == [frozenset({c}) for c in sorted(cpus)], masks
    assert heir_mask == masks[killed]


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to pin to")
async def test_workers_are_not_pinned_when_pinning_is_off(aws: Aws, ready: Settings) -> None:
    cpus = set(sorted(os.sched_getaffinity(0))[:2])
    async with _serve(aws, ready, cpus=cpus, TIDEWAY_PIN_WORKERS="false") as serve:
        await serve.all_listening(serve.port)
        masks = [frozenset(w.cpu_affinity()) for w in serve.workers()]
        code, stderr = await serve.stop()
    assert code == 0, stderr
    assert masks == [frozenset(cpus)] * 2


async def test_metrics_show_process_figures_of_every_worker(aws: Aws, ready: Settings) -> None:
    async with _serve(aws, ready) as serve:
        await serve.all_listening(serve.port)
        page = await serve.metrics()
        code, stderr = await serve.stop()
    assert code == 0, stderr
    for name in ("process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds"):
        values = {
            m.group(1): float(m.group(2))
            for m in re.finditer(rf'^{name}{{worker="(\w+)"}} (\S+)$', page, re.MULTILINE)
        }
        assert set(values) == {"0", "1", "supervisor"}, page
        assert all(v > 0 for v in values.values()), (name, values)


async def test_a_killed_worker_is_started_again_while_the_other_keeps_serving(
    aws: Aws, ready: Settings
) -> None:
    async with _serve(aws, ready) as serve:
        first = await serve.all_listening(serve.port)
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        # Until the supervisor has reaped it: connections sent sooner may still be queued on
        # the dying worker's socket and reset with it (seen in CI: /proc had stopped listing
        # the socket, or the worker was already a zombie); agents retry those.
        while DIED not in serve.stderr():
            await asyncio.sleep(0.05)
        # The port keeps answering: the other worker takes every connection meanwhile.
        await _http_round(serve, "during", 0)
        second = await serve.all_listening(serve.port)
        assert victim not in second and len(second & first) == 1
        await _http_round(serve, "after", 0)
        code, stderr = await serve.stop()
    assert code == 0, stderr
    assert DIED in stderr
    stored = sorted(x["message"] for x in stream_lines(aws, ready.stream))
    assert stored == sorted(_sent("after", CONNECTIONS) + _sent("during", CONNECTIONS))


async def test_a_worker_that_cannot_start_ends_the_supervisor_with_one_line(
    ready: Settings,
) -> None:
    # A worker that dies at once, however often it is started (a port another program
    # holds is caught before any worker starts: tests/test_cli.py).
    settings = ready.model_copy(update={"host": "127.0.0.1", "port": 0, "workers": 2})
    with pytest.raises(ServeWorkerError) as caught:
        await supervise(settings, asyncio.Event(), die_at_start)
    message = str(caught.value)
    # The workers' metrics directory is gone with the supervisor, and so is the variable
    # naming it (a later serve in this process would fail to open its files).
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ
    assert message.startswith("serve worker ")
    assert f"died {MAX_QUICK_DEATHS} times in a row" in message
    assert "(last exit code 3)" in message


def _export(body: str) -> bytes:
    request = ExportLogsServiceRequest()
    request.resource_logs.add().scope_logs.add().log_records.add().body.string_value = body
    return request.SerializeToString()


async def _grpc_round(serve: Serve, first: int) -> set[int]:
    """``CONNECTIONS`` exports, each on its own channel, all answered without rejections."""
    channels = [
        grpc.aio.insecure_channel(f"127.0.0.1:{serve.grpc_port}") for _ in range(CONNECTIONS)
    ]
    try:
        answers = await asyncio.gather(
            *(
                c.unary_unary(EXPORT_PATH)(_export(f"grpc {first + n}"), timeout=60)
                for n, c in enumerate(channels)
            )
        )
        served = serve.serving(serve.grpc_port)
    finally:
        for c in channels:
            await c.close()
    rejected = [ExportLogsServiceResponse.FromString(a).partial_success for a in answers]
    assert [r.rejected_log_records for r in rejected] == [0] * CONNECTIONS
    return served


async def test_otlp_grpc_exports_to_two_workers_land_exactly_once(
    aws: Aws, ready: Settings
) -> None:
    async with _serve(aws, ready, grpc_port=free_port()) as serve:
        await serve.all_listening(serve.grpc_port)
        rounds, served = await _until_both_served(lambda n: _grpc_round(serve, n * CONNECTIONS))
        code, stderr = await serve.stop()
    assert code == 0, stderr
    assert len(served) == 2, f"one worker served every channel of {rounds} rounds"
    await drain(ready)
    table = read_table(aws, ready)
    messages = sorted(table.column("message").to_pylist())
    assert messages == sorted(f"grpc {n}" for n in range(rounds * CONNECTIONS))
    assert set(lineage_counts(table).values()) == {1}


async def test_sigterm_while_the_workers_still_start_is_a_clean_exit(
    aws: Aws, ready: Settings
) -> None:
    # ECS may stop a task seconds after starting it: a worker still importing must not die
    # of the forwarded SIGTERM (exit -15, and the supervisor exits 1); it drains instead.
    async with _serve(aws, ready) as serve:
        for _ in range(600):
            if len(serve.workers()) == 2:
                break
            await asyncio.sleep(0.01)
        assert not serve.listening(serve.port), "the workers were already serving"
        code, stderr = await serve.stop()
    assert code == 0, stderr
