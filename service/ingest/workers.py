"""``tideway serve`` on every core: one worker process per CPU sharing the port (I/O).

The supervisor holds the port (a bound, never listening SO_REUSEPORT socket, so port 0
resolves once for all workers), starts ``count`` spawned workers that each listen on it
with SO_REUSEPORT (the kernel spreads connections over them) with their own event loop,
Kinesis client, producer identity and ``1/count`` of the in-flight byte budget, and a
shared directory where prometheus_client's multiprocess mode sums their metrics. SIGTERM
is forwarded to every worker, which drains as a single server does; the supervisor exits 0
once all have exited 0. A worker that dies unexpectedly stops the others (ECS replaces the
task): the supervisor never runs with a silently missing worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import tempfile
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.process import BaseProcess

from service.settings import Settings, available_cpus
from service.telemetry.metrics import MULTIPROCESS_DIR_ENV, worker_exited

log = logging.getLogger(__name__)
DEFAULT_PORT = 8080
_POLL = 0.2
# After the workers' own drain (shutdown_grace plus a few seconds of answers), kill.
_EXIT_SLACK = 5.0

# target(settings, threads, metrics_dir): runs one worker until SIGTERM (module level, so
# that the spawn start method can pickle it).
WorkerTarget = Callable[[Settings, int, str], None]


def worker_count(settings: Settings) -> int:
    """``TIDEWAY_WORKERS``, else one per CPU available to this process."""
    return settings.workers or available_cpus()


@contextlib.contextmanager
def _held_port(host: str, port: int) -> Iterator[int]:
    """The port the workers share, kept bound (not listening: it takes no connections)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        yield int(sock.getsockname()[1])


async def supervise(settings: Settings, stop: asyncio.Event, target: WorkerTarget) -> int:
    """Run ``worker_count(settings)`` workers until ``stop``; 0 when every one drained."""
    count = worker_count(settings)
    threads = max(1, available_cpus() // count)
    port = DEFAULT_PORT if settings.port is None else settings.port
    share = max(1, settings.max_inflight_bytes // count)
    with (
        tempfile.TemporaryDirectory(prefix="tideway-metrics-") as metrics_dir,
        _held_port(settings.host, port) as bound,
    ):
        # prometheus_client picks its multiprocess value class at import, from the
        # environment: the spawned workers inherit it from here.
        os.environ[MULTIPROCESS_DIR_ENV] = metrics_dir
        worker_settings = settings.model_copy(
            update={"port": bound, "max_inflight_bytes": share, "workers": 1}
        )
        context = multiprocessing.get_context("spawn")
        workers = [
            context.Process(
                target=target,
                args=(worker_settings, threads, metrics_dir),
                name=f"tideway-serve-{i}",
            )
            for i in range(count)
        ]
        for worker in workers:
            worker.start()
        log.info("serving", extra={"port": bound, "workers": count, "stream": settings.stream})
        while not stop.is_set() and all(w.is_alive() for w in workers):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), _POLL)
        lost = [w.name for w in workers if not w.is_alive()]
        if lost and not stop.is_set():
            log.error("a serve worker exited: stopping the others", extra={"workers": lost})
        codes = await _stop_all(workers, settings.shutdown_grace + _EXIT_SLACK, metrics_dir)
    log.info("drained", extra={"exit_codes": codes})
    return 0 if stop.is_set() and all(code == 0 for code in codes) else 1


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
