"""Replays started from the console (I/O): each runs ``service.repair.replay.replay`` as a
task of one TaskGroup that the console's lifecycle owns, so stopping the console cancels
them (a cancelled replay resumes on a rerun: its progress is in the lease table)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Literal

from service.errors import TidewayError
from service.repair.replay import ReplayReport, Window, check_window, replay
from service.settings import Settings

log = logging.getLogger(__name__)
State = Literal["running", "finished", "failed", "cancelled"]
KEPT_ENDED = 50
RunReplay = Callable[[Settings, Window], Awaitable[ReplayReport]]


@dataclass
class ReplayJob:
    """One replay this console started: who asked, and how it ended (``outcome``)."""

    window: Window
    started_by: str
    state: State = "running"
    outcome: str = ""
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class ReplayJobs:
    """The console's replays, newest first; at most one running per ``--into`` prefix."""

    def __init__(self, settings: Settings, group: asyncio.TaskGroup, run: RunReplay) -> None:
        self._settings, self._group, self._run = settings, group, run
        self.jobs: list[ReplayJob] = []

    @property
    def running(self) -> bool:
        return any(job.state == "running" for job in self.jobs)

    def start(self, window: Window, started_by: str) -> ReplayJob:
        """Start replaying ``window``; TidewayError (one line) when it cannot be replayed
        or a replay into the same prefix is still running here."""
        check_window(self._settings, window)
        if any(j.state == "running" and j.window.into == window.into for j in self.jobs):
            raise TidewayError(f"replay: a replay into {window.into} is already running")
        job = ReplayJob(window, started_by)
        job.task = self._group.create_task(self._watch(job))
        self.jobs.insert(0, job)
        ended = [j for j in self.jobs if j.state != "running"]
        for old in ended[KEPT_ENDED:]:  # the page lists what ended lately, not forever
            self.jobs.remove(old)
        log.info("console: replay %s into %s by %s", window.name, window.into, started_by)
        return job

    def cancel(self, into: str) -> bool:
        """Cancel the running replay into ``into``; False when none runs."""
        found = False
        for job in self.jobs:
            if job.state == "running" and job.window.into == into and job.task is not None:
                job.task.cancel()
                found = True
        return found

    def cancel_all(self) -> None:
        for job in self.jobs:
            if job.state == "running" and job.task is not None:
                job.task.cancel()

    async def _watch(self, job: ReplayJob) -> None:
        # A failed replay must not stop the group (and the console): its reason is kept.
        try:
            report = await self._run(self._settings, job.window)
        except asyncio.CancelledError:
            job.state, job.outcome = "cancelled", "cancelled; a rerun resumes where it stopped"
            raise
        except TidewayError as exc:
            job.state, job.outcome = "failed", str(exc)
        except Exception as exc:  # surfaced on the page and in the log, the console stays up
            log.exception("console: replay into %s failed", job.window.into)
            job.state, job.outcome = "failed", f"{type(exc).__name__}: {exc}"
        else:
            job.state = "finished"
            job.outcome = ", ".join(f"{k} {v}" for k, v in dataclasses.asdict(report).items())


@asynccontextmanager
async def replay_jobs(settings: Settings, run: RunReplay = replay) -> AsyncIterator[ReplayJobs]:
    """The console's replays; on exit every running one is cancelled and awaited."""
    async with asyncio.TaskGroup() as group:
        jobs = ReplayJobs(settings, group, run)
        try:
            yield jobs
        finally:
            jobs.cancel_all()
