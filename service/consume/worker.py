"""The lease coordinator of one consumer process (I/O): heartbeat, discover shards, compute
the assignment, acquire, hand off and release leases, and run one ShardConsumer per lease.

Safety never depends on this module's timing: every write a shard consumer makes is fenced
by (owner, epoch) in the lease table (leases.py, shard.py). Timing here only decides how
fast work moves: a dead worker's shards are taken once its heartbeat expires, a leaving
worker's shards as soon as it releases them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from service.consume.assign import assign
from service.consume.leases import FROM_START, SHARD_END, LeaseTable, ShardLease, WorkerBeat
from service.consume.shard import Outcome, ShardConsumer, ShardContext
from service.errors import LeaseLostError, TidewayError

log = logging.getLogger(__name__)
STOP_GRACE = 25.0  # seconds for final flushes after SIGTERM (DESIGN: exit within 30 s)
DRAIN_MAX_FAILED_ROUNDS = 10  # --drain exits non-zero instead of retrying forever


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
    leaving_workers: list[str] = field(default_factory=list)
    shards: dict[str, ShardInfo] = field(default_factory=dict)
    leases: dict[str, ShardLease] = field(default_factory=dict)
    assignment: dict[str, str] = field(default_factory=dict)
    done: set[str] = field(default_factory=set)
    leaving: bool = False
    last_round_failed: bool = False
    rounds: int = 0
    failed_rounds: int = 0
    last_error: str | None = None


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
            # moto never ends a closed shard's iterator nor names its children; a closed
            # shard is one whose range has an EndingSequenceNumber (DESIGN §8).
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


def initial_checkpoint(
    info: ShardInfo, leases: dict[str, ShardLease], start_kind: str
) -> str | None:
    """Where a shard first seen now starts, whatever the configured start position.

    A child of a shard the fleet tracks starts at its first record: records written to it
    while its parents were still being read must not be skipped by LATEST or AT_TIMESTAMP
    (KCL does the same). With LATEST, a shard already closed when first seen has nothing
    new to give and is finished at once. Otherwise None: the configured position applies.
    """
    if any(p in leases for p in info.parents):
        return FROM_START
    if info.closed and start_kind == "LATEST":
        return SHARD_END
    return None


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
        self.lease_duration = lease_duration
        self.lease_ms = int(lease_duration * 1000)
        self.poll = min(1.0, lease_duration / 5)
        self.memory_budget = memory_budget
        self.drain = drain
        self.state = WorkerState(ctx.worker_id)
        self._running: dict[str, _Running] = {}
        self._cooldown: dict[str, float] = {}
        self._failures: dict[str, int] = {}
        self._beat_at: float | None = None  # monotonic time of the last heartbeat that landed
        self.ready = asyncio.Event()

    def budget_share(self) -> int:
        return self.memory_budget // max(1, len(self._running))

    @property
    def lag_ms(self) -> int:
        return max((r.consumer.millis_behind for r in self._running.values()), default=0)

    @property
    def running(self) -> dict[str, ShardConsumer]:
        return {sid: r.consumer for sid, r in self._running.items()}

    async def run(self, stop: asyncio.Event) -> None:
        me = self.ctx.worker_id
        failures = 0
        gave_up = ""
        try:
            async with asyncio.TaskGroup() as tg:
                while not stop.is_set():
                    ok = await self._guarded_round(tg)
                    failures = 0 if ok else failures + 1
                    if self.drain and failures >= DRAIN_MAX_FAILED_ROUNDS:
                        gave_up = (
                            f"drain gave up after {failures} failed rounds: {self.state.last_error}"
                        )
                        break
                    if ok:
                        self.ready.set()
                        if self.drain and self._drained():
                            break
                    wait = self.poll if ok else min(self.poll * 2, self.lease_duration / 2)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), wait)
                await self._leave()
            if gave_up:  # raised outside the TaskGroup so callers see it unwrapped
                raise TidewayError(gave_up)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.table.remove_worker(me), self.lease_duration)
            log.info("worker stopped", extra={"worker_id": me})

    async def _guarded_round(self, tg: asyncio.TaskGroup) -> bool:
        """One round; a failure (DynamoDB or Kinesis unreachable, throttled, slow) is logged
        and retried next round, never fatal. A round may not outlive a lease."""
        self.state.rounds += 1
        try:
            await asyncio.wait_for(self._round(tg), self.lease_duration)
        except Exception as exc:
            self.state.failed_rounds += 1
            self.state.last_round_failed = True
            self.ctx.metrics.count_error("lease_round", exc)
            self.state.last_error = f"{type(exc).__name__}: {exc}"[:300]
            log.warning("lease round failed", extra={"error": self.state.last_error})
            self._fence_if_expired()
            return False
        self.state.last_round_failed = False
        return True

    def _fence_if_expired(self) -> None:
        """Without a heartbeat for a lease duration, others may own our shards: stop them.

        Not needed for safety (their writes are fenced) but it ends wasted reads and uploads
        and makes a partitioned worker quiet until it can reach the table again.
        """
        if self._beat_at is None or not self._running:
            return
        if time.monotonic() - self._beat_at > self.lease_duration - self.poll:
            log.warning(
                "heartbeat expired; stopping every shard", extra={"shards": len(self._running)}
            )
            for run in self._running.values():
                run.stop.set()

    async def _leave(self) -> None:
        """Graceful exit: tell the fleet we are leaving (others stop assigning us shards, but
        wait for ours), flush, checkpoint and release every shard, then drop the heartbeat."""
        self.state.leaving = True
        if not self.drain:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    self.table.heartbeat(
                        self.ctx.worker_id, int(time.time() * 1000) + self.lease_ms, leaving=True
                    ),
                    self.poll,
                )
        await self._stop_all()

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
        sent = time.monotonic()
        now_ms = int(time.time() * 1000)
        await self.table.heartbeat(me, now_ms + self.lease_ms, leaving=self.state.leaving)
        self._beat_at = sent
        shards = await list_shards(self.ctx.kinesis, self.ctx.stream)
        leases, beats = await self.table.scan()
        missing = [info for sid, info in shards.items() if sid not in leases]
        for info in missing:
            first = initial_checkpoint(info, leases, self.ctx.start.kind)
            await self.table.ensure_shard(info.shard_id, info.parents, first)
        if missing:
            leases, beats = await self.table.scan()
        alive = live_workers(beats, now_ms) | {me}
        leaving = {w for w, b in beats.items() if b.leaving and w != me}
        assignable = sorted(alive - leaving - ({me} if self.state.leaving else set()))
        ready = [s for s in ready_shards(shards, leases) if s not in self.state.done]
        if self.drain:
            desired = dict.fromkeys(ready, me)
        else:
            desired = assign(ready, assignable, {s: leases[s].owner for s in ready})
        st = self.state
        st.shards, st.leases, st.assignment = shards, leases, desired
        st.live_workers, st.leaving_workers = sorted(alive), sorted(leaving)
        self._hand_off(shards, leases, desired)
        for sid in sorted(ready):
            if desired.get(sid) == me and sid not in self._running:
                await self._try_acquire(tg, leases[sid], shards[sid], alive)
        await self._release_strays(leases, desired)
        loop_now = asyncio.get_running_loop().time()
        opened = [
            r.consumer.buffer.opened_at
            for r in self._running.values()
            if r.consumer.buffer.opened_at is not None
        ]
        self.ctx.metrics.observe_worker(
            leases=len(self._running),
            lag_ms=self.lag_ms,
            oldest_unflushed_s=max((loop_now - t for t in opened), default=0.0),
        )

    def _hand_off(
        self, shards: dict[str, ShardInfo], leases: dict[str, ShardLease], desired: dict[str, str]
    ) -> None:
        """Stop consumers whose lease is gone or assigned elsewhere (judged on this scan)."""
        me = self.ctx.worker_id
        for sid, run in self._running.items():
            if sid in shards:
                # A shard open when acquired may have been closed by a reshard since.
                run.consumer.closed = shards[sid].closed
            lease = leases.get(sid)
            lost = lease is None or lease.owner != me or lease.epoch != run.consumer.epoch
            if lost or desired.get(sid) != me:
                run.stop.set()  # the consumer flushes (fenced), then we release

    async def _release_strays(self, leases: dict[str, ShardLease], desired: dict[str, str]) -> None:
        """Release leases the table says are ours but no consumer runs (a round cancelled
        mid-acquire, a failed release): otherwise their next owner would wait for us forever."""
        me = self.ctx.worker_id
        for sid, lease in leases.items():
            if lease.owner != me or sid in self._running or desired.get(sid) == me:
                continue
            if lease.finished:
                continue
            with contextlib.suppress(LeaseLostError):
                await self.table.release(sid, me, lease.epoch)
                log.info("stray lease released", extra={"shard_id": sid, "epoch": lease.epoch})

    async def _try_acquire(
        self, tg: asyncio.TaskGroup, lease: ShardLease, info: ShardInfo, alive: set[str]
    ) -> None:
        me = self.ctx.worker_id
        if lease.owner not in (None, me) and lease.owner in alive:
            return  # its owner is alive; it hands the shard off when it sees the assignment
        if self._cooldown.get(lease.shard_id, 0.0) > time.monotonic():
            return
        try:
            fresh = await self.table.acquire(lease, me)
        except LeaseLostError:
            return
        self.ctx.metrics.observe_acquired(lease.owner, me)
        log.info(
            "lease acquired",
            extra={
                "shard_id": lease.shard_id,
                "epoch": fresh.epoch,
                "from": lease.owner,
                "checkpoint": fresh.checkpoint,
                "intent": fresh.intent_last is not None,
            },
        )
        consumer = ShardConsumer(
            self.ctx, fresh, fresh.epoch, closed=info.closed, budget_share=self.budget_share
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
                    log.info("lease released", extra={"shard_id": sid, "outcome": outcome.value})
            self._failures.pop(sid, None)
            return outcome
        except Exception as exc:
            # Never a crash loop: give the shard up, back off, and let the next round (here or
            # elsewhere) acquire it again and replay any open intent.
            self.ctx.metrics.count_error("shard_consumer", exc)
            failures = self._failures[sid] = self._failures.get(sid, 0) + 1
            self._cooldown[sid] = time.monotonic() + min(60.0, 2.0 ** min(failures, 6))
            log.exception("shard consumer failed", extra={"shard_id": sid, "failures": failures})
            with contextlib.suppress(Exception):
                await self.table.release(sid, self.ctx.worker_id, consumer.epoch)
            return Outcome.LOST
        finally:
            self._running.pop(sid, None)

    async def _stop_all(self) -> None:
        """Final flushes, bounded so the process exits inside the ECS stop timeout; a flush cut
        short leaves its intent open and the next owner replays it (nothing is lost)."""
        for run in self._running.values():
            run.stop.set()
        tasks = [r.task for r in self._running.values()]
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=STOP_GRACE)
        if late:
            log.warning("final flushes cut short at the stop deadline", extra={"shards": len(late)})
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)


def live_workers(beats: dict[str, WorkerBeat], now_ms: int) -> set[str]:
    """Workers whose heartbeat has not expired at ``now_ms`` (wall clock, epoch ms)."""
    return {w for w, b in beats.items() if b.expires_at_ms > now_ms}
