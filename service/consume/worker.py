"""The lease coordinator of one consumer process (I/O): heartbeat, discover shards, compute
the assignment, acquire, hand off and release leases, and run one ShardConsumer per lease."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from service.consume.assign import assign
from service.consume.leases import LeaseTable, ShardLease, WorkerBeat
from service.consume.shard import Outcome, ShardConsumer, ShardContext
from service.errors import LeaseLostError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ShardInfo:
    shard_id: str
    parents: tuple[str, ...]
    closed: bool


@dataclass
class _Running:
    consumer: ShardConsumer
    stop: asyncio.Event
    task: asyncio.Task[Outcome]


@dataclass
class WorkerState:
    """What /status shows: leases held, lag, and the last assignment round."""

    worker_id: str
    live_workers: list[str] = field(default_factory=list)
    shards: dict[str, ShardInfo] = field(default_factory=dict)
    leases: dict[str, ShardLease] = field(default_factory=dict)
    done: set[str] = field(default_factory=set)


async def list_shards(kinesis: Any, stream: str) -> dict[str, ShardInfo]:
    """Every shard of the stream with its parents and whether it is closed."""
    shards: dict[str, ShardInfo] = {}
    kwargs: dict[str, Any] = {"StreamName": stream}
    while True:
        resp = await kinesis.list_shards(**kwargs)
        for s in resp["Shards"]:
            parents = tuple(
                p for p in (s.get("ParentShardId"), s.get("AdjacentParentShardId")) if p
            )
            closed = "EndingSequenceNumber" in s.get("SequenceNumberRange", {})
            shards[s["ShardId"]] = ShardInfo(s["ShardId"], parents, closed)
        token = resp.get("NextToken")
        if not token:
            return shards
        kwargs = {"NextToken": token}


def ready_shards(shards: dict[str, ShardInfo], leases: dict[str, ShardLease]) -> list[str]:
    """Unfinished shards whose parents are finished (or gone from the stream): parents first."""
    out = []
    for sid, info in shards.items():
        lease = leases.get(sid)
        if lease is None or lease.finished:
            continue
        if all(p not in shards or (p in leases and leases[p].finished) for p in info.parents):
            out.append(sid)
    return out


class ConsumerWorker:
    """Runs until ``stop`` is set (or, with ``drain``, until every shard is read to its tip)."""

    def __init__(
        self,
        ctx: ShardContext,
        *,
        lease_duration: float,
        memory_budget: int,
        drain: bool = False,
    ) -> None:
        self.ctx = ctx
        self.table: LeaseTable = ctx.leases
        self.lease_ms = int(lease_duration * 1000)
        self.poll = min(1.0, lease_duration / 5)
        self.memory_budget = memory_budget
        self.drain = drain
        self.state = WorkerState(ctx.worker_id)
        self._running: dict[str, _Running] = {}
        self._cooldown: dict[str, float] = {}
        self._failures: dict[str, int] = {}
        self.ready = asyncio.Event()

    def budget_share(self) -> int:
        return self.memory_budget // max(1, len(self._running))

    @property
    def lag_ms(self) -> int:
        return max((r.consumer.millis_behind for r in self._running.values()), default=0)

    async def run(self, stop: asyncio.Event) -> None:
        me = self.ctx.worker_id
        try:
            async with asyncio.TaskGroup() as tg:
                while not stop.is_set():
                    await self._round(tg)
                    self.ready.set()
                    if self.drain and self._drained():
                        break
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), self.poll)
                await self._stop_all()
        finally:
            with contextlib.suppress(Exception):
                await self.table.remove_worker(me)
            log.info("worker stopped", extra={"worker_id": me})

    def _drained(self) -> bool:
        shards, leases = self.state.shards, self.state.leases
        pending = [
            s
            for s in shards
            if s not in self.state.done and not (s in leases and leases[s].finished)
        ]
        return not pending and not self._running

    async def _round(self, tg: asyncio.TaskGroup) -> None:
        me = self.ctx.worker_id
        now_ms = int(time.time() * 1000)
        await self.table.heartbeat(me, now_ms + self.lease_ms)
        shards = await list_shards(self.ctx.kinesis, self.ctx.stream)
        for info in shards.values():
            if info.shard_id not in self.state.leases:
                await self.table.ensure_shard(info.shard_id, info.parents)
        leases, beats = await self.table.scan()
        live = sorted(_live(beats, now_ms) | {me})
        self.state.shards, self.state.leases, self.state.live_workers = shards, leases, live
        ready = [s for s in ready_shards(shards, leases) if s not in self.state.done]
        desired = {s: me for s in ready} if self.drain else assign(ready, live)
        # Hand-offs and losses first, judged on this scan (before this round's acquisitions).
        for sid, run in list(self._running.items()):
            lease = leases.get(sid)
            lost = lease is None or lease.owner != me or lease.epoch != run.consumer.epoch
            if lost or desired.get(sid) != me:
                run.stop.set()  # the consumer flushes (fenced), then we release
        for sid in sorted(ready):
            if desired.get(sid) == me and sid not in self._running:
                await self._try_acquire(tg, leases[sid], shards[sid], set(live))
        self.ctx.metrics.leases_held.set(len(self._running))
        self.ctx.metrics.millis_behind.set(self.lag_ms)

    async def _try_acquire(
        self, tg: asyncio.TaskGroup, lease: ShardLease, info: ShardInfo, live: set[str]
    ) -> None:
        me = self.ctx.worker_id
        if lease.owner not in (None, me) and lease.owner in live:
            return  # its owner is alive; it hands the shard off when it sees the assignment
        if self._cooldown.get(lease.shard_id, 0.0) > time.monotonic():
            return
        try:
            epoch = await self.table.acquire(lease, me)
        except LeaseLostError:
            return
        self.ctx.metrics.takeovers.inc()
        log.info(
            "lease acquired",
            extra={"shard_id": lease.shard_id, "epoch": epoch, "from": lease.owner},
        )
        consumer = ShardConsumer(
            self.ctx, lease, epoch, closed=info.closed, budget_share=self.budget_share
        )
        stop = asyncio.Event()
        task = tg.create_task(self._consume(consumer, stop), name=f"shard-{lease.shard_id}")
        self._running[lease.shard_id] = _Running(consumer, stop, task)

    async def _consume(self, consumer: ShardConsumer, stop: asyncio.Event) -> Outcome:
        sid = consumer.shard_id
        try:
            outcome = await consumer.run(stop, drain=self.drain)
            if outcome in (Outcome.AT_TIP, Outcome.FINISHED):
                self.state.done.add(sid)
            if outcome is not Outcome.LOST:
                with contextlib.suppress(LeaseLostError):
                    await self.table.release(sid, self.ctx.worker_id, consumer.epoch)
                    self.ctx.metrics.handoffs.inc()
            self._failures.pop(sid, None)
            return outcome
        except Exception:
            # Never a crash loop: give the shard up, back off, and let the next round (here or
            # elsewhere) acquire it again and replay any open intent.
            failures = self._failures[sid] = self._failures.get(sid, 0) + 1
            self._cooldown[sid] = time.monotonic() + min(60.0, 2.0**failures)
            log.exception("shard consumer failed", extra={"shard_id": sid, "failures": failures})
            with contextlib.suppress(Exception):
                await self.table.release(sid, self.ctx.worker_id, consumer.epoch)
            return Outcome.LOST
        finally:
            self._running.pop(sid, None)

    async def _stop_all(self) -> None:
        for run in self._running.values():
            run.stop.set()
        tasks = [r.task for r in self._running.values()]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


def _live(beats: dict[str, WorkerBeat], now_ms: int) -> set[str]:
    return {w for w, b in beats.items() if b.expires_at_ms > now_ms}
