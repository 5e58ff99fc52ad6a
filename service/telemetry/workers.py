"""What ``/metrics`` shows of several serve worker processes together (I/O: reads /proc).

prometheus_client's multiprocess mode sums the workers' own metrics from files in one
directory, but has no ``process_*`` figures: each worker would report only itself. The
supervisor names each worker's pid in that directory (``worker-<index>.pid``, and its own
as ``worker-supervisor.pid``); any worker's ``/metrics`` then reads every named process's
figures from /proc, as prometheus_client's ``ProcessCollector`` does for one process, with
a ``worker`` label. Summing over ``worker`` gives the task's.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from prometheus_client import CollectorRegistry, multiprocess
from prometheus_client.metrics_core import Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

# prometheus_client's multiprocess mode: each worker process writes its values to files in
# this directory (it must be in the environment before prometheus_client is imported, so the
# supervisor sets it for the workers it starts), and any worker's /metrics sums them.
MULTIPROCESS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
SUPERVISOR = "supervisor"
_PID_FILE = "worker-{}.pid"


def workers_registry(directory: str) -> CollectorRegistry:
    """A registry that reads every serve worker's values from ``directory`` (counters and
    histograms summed over workers, live or exited; gauges as each declares), and the
    ``process_*`` figures of each named process with a ``worker`` label."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    registry.register(WorkerProcesses(directory))
    return registry


def worker_started(worker: int | str, pid: int, directory: str) -> None:
    """Name ``pid`` as serve worker ``worker`` (an index, or ``SUPERVISOR``); a restarted
    worker takes its predecessor's name."""
    path = Path(directory, _PID_FILE.format(worker))
    staged = path.with_suffix(".tmp")
    staged.write_text(str(pid))
    staged.replace(path)  # a reader never sees a half-written pid


def worker_exited(pid: int, directory: str) -> None:
    """Drop an exited worker's live gauges (its counters stay in the sums)."""
    multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]


class WorkerProcesses(Collector):
    """``process_*`` of every process named in ``directory``, labelled ``worker``; a process
    that is gone (between a death and its restart) is left out."""

    def __init__(self, directory: str) -> None:
        self.directory = Path(directory)
        self._readers: dict[int, ProcessCollector] = {}

    def _reader(self, pid: int) -> ProcessCollector:
        reader = self._readers.get(pid)
        if reader is None:
            if len(self._readers) > 64:  # pids of long-gone workers
                self._readers.clear()
            reader = self._readers[pid] = ProcessCollector(pid=lambda: pid, registry=None)
        return reader

    def collect(self) -> Iterable[Metric]:
        merged: dict[str, Metric] = {}
        for path in sorted(self.directory.glob(_PID_FILE.format("*"))):
            worker = path.name.removeprefix("worker-").removesuffix(".pid")
            try:
                pid = int(path.read_text())
            except (OSError, ValueError):
                continue
            for family in self._reader(pid).collect():
                into = merged.setdefault(
                    family.name, Metric(family.name, family.documentation, family.type)
                )
                for sample in family.samples:
                    into.add_sample(sample.name, {**sample.labels, "worker": worker}, sample.value)
        return list(merged.values())
