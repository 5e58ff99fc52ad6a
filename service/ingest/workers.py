"""``tideway serve`` on every core: one worker process per CPU sharing the port (I/O).

The supervisor holds the port (a bound, never listening SO_REUSEPORT socket, so port 0
resolves once for all workers), starts ``count`` spawned workers that each listen on it
with SO_REUSEPORT (the kernel spreads connections over them) with their own event loop,
Kinesis client, producer identity and ``1/count`` of the in-flight byte budget, and a
shared directory where prometheus_client's multiprocess mode sums their metrics. SIGTERM
is forwarded to every worker, which drains as a single server does; the supervisor exits 0
once all have exited 0.

A worker that dies unexpectedly is started again in its place, after a jittered backoff
that doubles while the deaths come soon after start; ``MAX_QUICK_DEATHS`` of those in a row
(a worker that cannot start: a port taken, a broken setting) stop the others and raise
``ServeWorkerError``, so the task fails with one line instead of crash-looping silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import random
import signal
import socket
import tempfile
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.context import SpawnContext
from multiprocessing.process import BaseProcess

from service.errors import ListenError, ServeWorkerError
from service.settings import Settings, available_cpus, cpu_mask
from service.telemetry.workers import (
    MULTIPROCESS_DIR_ENV,
    SUPERVISOR,
    worker_exited,
    worker_started,
)

log = logging.getLogger(__name__)
DEFAULT_PORT = 8080
_POLL = 0.2
# After the workers' own drain (shutdown_grace plus a few seconds of answers), kill.
_EXIT_SLACK = 5.0
# A worker that dies sooner than this after its start died starting (spawn and imports
# take 1-3 s, but up to 20 s were seen on an overloaded core); its restarts back off, and
# MAX_QUICK_DEATHS in a row end it.
QUICK_DEATH_SECONDS = 60.0
MAX_QUICK_DEATHS = 5
_BACKOFF_FIRST = 0.25
_BACKOFF_MAX = 5.0

# target(settings, threads, metrics_dir): runs one worker until SIGTERM (module level, so
# that the spawn start method can pickle it).
WorkerTarget = Callable[[Settings, int, str], None]


def worker_count(settings: Settings) -> int:
    """``TIDEWAY_WORKERS``, else one per CPU available to this process."""
    return settings.workers or available_cpus()


def worker_cpus(count: int, allowed: Collection[int], pin: bool) -> tuple[int | None, ...]:
    """The CPU each of ``count`` workers is pinned to (None: not pinned). Only with exactly
    one worker per CPU of the affinity mask: then the scheduler has nothing to balance and
    a worker that migrates only pays for cold caches. With more workers than CPUs, or a
    task limited by a CPU quota rather than a mask, the kernel places them as it sees fit."""
    cpus = sorted(allowed)
    if not pin or count < 2 or count != len(cpus):
        return (None,) * count
    return tuple(cpus)


@contextlib.contextmanager
def _held_port(host: str, port: int, setting: str) -> Iterator[int]:
    """A port the workers share, kept bound (not listening: it takes no connections). A
    port another program holds stops the start here, with one line naming ``setting``,
    instead of every worker dying on it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ListenError(
                f"cannot listen on {host}:{port} ({setting}): {exc.strerror}"
            ) from exc
        yield int(sock.getsockname()[1])


@contextlib.contextmanager
def _environ(name: str, value: str) -> Iterator[None]:
    """``name=value`` in this process's environment, the previous value restored after."""
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def restart_delay(quick_deaths: int) -> float:
    """Seconds before starting a worker again after its ``quick_deaths``-th quick death in a
    row (0 after a death that was not quick): doubling from 0.25 s up to 5 s, jittered."""
    if quick_deaths == 0:
        return 0.0
    ceiling: float = min(_BACKOFF_MAX, _BACKOFF_FIRST * 2.0 ** (quick_deaths - 1))
    return ceiling * random.uniform(0.5, 1.0)


@dataclass
class _Slot:
    """One of the ``count`` worker places: its current process and how it has been dying."""

    index: int
    process: BaseProcess
    started: float
    quick_deaths: int = 0
    restart_at: float | None = None


class _Workers:
    """The worker processes of one supervisor, each started again when it dies."""

    def __init__(
        self,
        context: SpawnContext,
        target: WorkerTarget,
        args: tuple[Settings, int, str],
        cpus: Sequence[int | None],
    ) -> None:
        self.context, self.target, self.args = context, target, args
        self.metrics_dir = args[2]
        self.cpus = cpus
        loop = asyncio.get_running_loop()
        self.slots = [_Slot(i, self._start(i), loop.time()) for i in range(len(cpus))]

    def _start(self, index: int) -> BaseProcess:
        process = self.context.Process(
            target=self.target, args=self.args, name=f"tideway-serve-{index}"
        )
        process.start()
        if process.pid is not None:
            worker_started(index, process.pid, self.metrics_dir)
            self._pin(index, process.pid)
        return process

    def _pin(self, index: int, pid: int) -> None:
        """Worker ``index`` onto its CPU (before its imports are done; the threads it starts
        later inherit the mask). A refusal (a CPU gone offline) leaves it unpinned."""
        cpu = self.cpus[index]
        if cpu is None:
            return
        try:
            os.sched_setaffinity(pid, {cpu})
        except OSError as exc:
            log.warning(
                "serve worker not pinned", extra={"worker": index, "cpu": cpu, "error": str(exc)}
            )

    @property
    def processes(self) -> list[BaseProcess]:
        """The current workers (not a dead one waiting for its restart)."""
        return [slot.process for slot in self.slots if slot.restart_at is None]

    def tend(self, now: float) -> None:
        """Notice dead workers and start due replacements; ``ServeWorkerError`` when one
        died ``MAX_QUICK_DEATHS`` times in a row soon after its start."""
        for slot in self.slots:
            if slot.restart_at is None and not slot.process.is_alive():
                self._died(slot, now)
            if slot.restart_at is not None and now >= slot.restart_at:
                slot.process, slot.started, slot.restart_at = self._start(slot.index), now, None
                log.info("serve worker started again", extra={"worker": slot.index})

    def _died(self, slot: _Slot, now: float) -> None:
        process = slot.process
        if process.pid is not None:
            worker_exited(process.pid, self.metrics_dir)
        quick = now - slot.started < QUICK_DEATH_SECONDS
        slot.quick_deaths = slot.quick_deaths + 1 if quick else 0
        if slot.quick_deaths >= MAX_QUICK_DEATHS:
            raise ServeWorkerError(
                f"serve worker {slot.index} died {slot.quick_deaths} times in a row within "
                f"{QUICK_DEATH_SECONDS:g} s of starting (last exit code {process.exitcode}); "
                "its log above says why"
            )
        delay = restart_delay(slot.quick_deaths)
        slot.restart_at = now + delay
        log.error(
            "a serve worker died: starting it again",
            extra={"worker": slot.index, "exit_code": process.exitcode, "delay_s": delay},
        )


async def supervise(settings: Settings, stop: asyncio.Event, target: WorkerTarget) -> int:
    """Run ``worker_count(settings)`` workers until ``stop``, starting again any that dies;
    0 when every one drained. Raises ``ServeWorkerError`` (after stopping the others) when a
    worker keeps dying at start."""
    count = worker_count(settings)
    threads = max(1, available_cpus() // count)
    port = DEFAULT_PORT if settings.port is None else settings.port
    share = max(1, settings.max_inflight_bytes // count)
    loop = asyncio.get_running_loop()
    with (
        tempfile.TemporaryDirectory(prefix="tideway-metrics-") as metrics_dir,
        _held_port(settings.host, port, "TIDEWAY_PORT") as bound,
        contextlib.ExitStack() as held,
    ):
        if settings.grpc_port:
            held.enter_context(_held_port(settings.host, settings.grpc_port, "TIDEWAY_GRPC_PORT"))
        # prometheus_client picks its multiprocess value class at import, from the
        # environment: the spawned workers inherit it from here (until the directory goes).
        held.enter_context(_environ(MULTIPROCESS_DIR_ENV, metrics_dir))
        worker_started(SUPERVISOR, os.getpid(), metrics_dir)
        worker_settings = settings.model_copy(
            update={"port": bound, "max_inflight_bytes": share, "workers": 1}
        )
        workers = _Workers(
            multiprocessing.get_context("spawn"),
            target,
            (worker_settings, threads, metrics_dir),
            worker_cpus(count, cpu_mask(), settings.pin_workers),
        )
        log.info("serving", extra={"port": bound, "workers": count, "stream": settings.stream})
        try:
            while not stop.is_set():
                workers.tend(loop.time())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), _POLL)
        finally:
            grace = settings.shutdown_grace + _EXIT_SLACK
            codes = await _stop_all(workers.processes, grace, metrics_dir)
    log.info("drained", extra={"exit_codes": codes})
    # -SIGTERM: the default action ran, so the worker had not yet installed its drain
    # handler (it was still importing, ECS stopped the task at once): it served nothing.
    return 0 if all(code in (0, -signal.SIGTERM) for code in codes) else 1


async def _stop_all(workers: Sequence[BaseProcess], grace: float, metrics_dir: str) -> list[int]:
    """SIGTERM to every live worker, wait up to ``grace`` seconds, kill what is left; exit codes."""
    for worker in workers:
        if worker.is_alive() and worker.pid is not None:
            os.kill(worker.pid, signal.SIGTERM)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    for worker in workers:
        await asyncio.to_thread(worker.join, max(0.0, deadline - loop.time()))
        if worker.is_alive():
            log.error("a serve worker did not drain in time", extra={"worker": worker.name})
            worker.kill()
            await asyncio.to_thread(worker.join)
        if worker.pid is not None:
            worker_exited(worker.pid, metrics_dir)
    return [worker.exitcode if worker.exitcode is not None else -1 for worker in workers]
