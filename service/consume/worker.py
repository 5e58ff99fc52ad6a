"""The coordinator of one consumer process (I/O): each round it discovers shards, computes
the assignment, hands off, takes and releases leases, and runs one ShardConsumer per lease.
Discovery and readiness are pure (discovery.py); taking and releasing is the LeaseTaker's
(taker.py); the heartbeat is the LeaseRenewer's (renewer.py).

Safety never depends on this module's timing: every write a shard consumer makes is fenced
by (owner, epoch) in the lease table (leases.py, shard.py). Timing here only decides how
fast work moves: a dead worker's shards are taken once its heartbeat expires, a leaving
worker's shards as soon as it releases them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from service.consume.assign import assign
from service.consume.budget import MemoryBudget
from service.consume.committer import ElectedCommitter
from service.consume.context import ShardContext
from service.consume.discovery import ShardInfo, initial_checkpoint, ready_shards
from service.consume.leases import LeaseTable, ShardLease
from service.consume.liveness import Liveness
from service.consume.reader import list_shards
from service.consume.renewer import LeaseRenewer
from service.consume.shard import Outcome, ShardConsumer
from service.consume.taker import LeaseTaker
from service.errors import TidewayError

log = logging.getLogger(__name__)
STOP_GRACE = 25.0  # seconds for final flushes after SIGTERM (DESIGN: exit within 30 s)
DRAIN_MAX_FAILED_ROUNDS = 10  # --drain exits non-zero instead of retrying forever


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


class ConsumerWorker:
    """Runs until ``stop`` is set (or, with ``drain``, until every shard is read to its tip)."""

    def __init__(
        self,
        ctx: ShardContext,
        *,
        lease_duration: float,
        memory_budget: int,
        drain: bool = False,
        on_committer_held: Callable[[bool], None] | None = None,
    ) -> None:
        self.ctx = ctx
        self.table: LeaseTable = ctx.leases
        self.lease_duration = lease_duration
        self.poll = min(1.0, lease_duration / 5)
        self.memory_budget = memory_budget
        self.budget = MemoryBudget(memory_budget)
        self.drain = drain
        self.state = WorkerState(ctx.worker_id)
        self._running: dict[str, _Running] = {}
        self._cooldown: dict[str, float] = {}
        self._failures: dict[str, int] = {}
        self.renewer = LeaseRenewer(
            self.table, ctx.worker_id, lease_duration, ctx.wall_clock, lambda: self.lag_ms
        )
        self.liveness = Liveness(lease_duration)
        self.taker = LeaseTaker(self.table, ctx.worker_id, ctx.metrics)
        self.ready = asyncio.Event()
        # The table's elected committer (committer.py): every worker runs one; the one
        # holding the committer item commits the flushes the others hand off.
        self.committer: ElectedCommitter | None = None
        if ctx.handoff is not None and ctx.table is not None:
            self.committer = ElectedCommitter(
                ctx.handoff,
                ctx.table,
                ctx.s3,
                ctx.worker_id,
                fresh=lambda: not self.renewer.expired(self.poll),
                on_held=on_committer_held,
            )

    def budget_share(self) -> int:
        """One running shard's share of the budget replays leave free."""
        return self.budget.share(len(self._running))

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
        heartbeat_done = asyncio.Event()
        try:
            async with asyncio.TaskGroup() as tg:
                # The heartbeat is its own task: it flows while flushes run and while the
                # final flushes of a SIGTERM drain, and stops only after every shard is released.
                tg.create_task(self.renewer.run(heartbeat_done), name="heartbeat")
                if self.committer is not None:  # commits until the last shard is released
                    tg.create_task(self.committer.run(heartbeat_done), name="committer")
                try:
                    while not stop.is_set():
                        ok = await self._guarded_round(tg)
                        failures = 0 if ok else failures + 1
                        if self.drain and failures >= DRAIN_MAX_FAILED_ROUNDS:
                            gave_up = f"drain gave up after {failures} failed rounds: "
                            gave_up += str(self.state.last_error)
                            break
                        if ok:
                            self.ready.set()
                            if self.drain and self._drained():
                                break
                        wait = self.poll if ok else min(self.poll * 2, self.lease_duration / 2)
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(stop.wait(), wait)
                    await self._leave()
                finally:
                    heartbeat_done.set()
            if gave_up:  # raised outside the TaskGroup so callers see it unwrapped
                raise TidewayError(gave_up)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.renewer.remove(), self.lease_duration)
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
        self._fence_if_expired()
        return True

    def _fence_if_expired(self) -> None:
        """Without a heartbeat for a lease duration, others may own our shards: stop them.

        Not needed for safety (their writes are fenced) but it ends wasted reads and uploads
        and makes a partitioned worker quiet until it can reach the table again.
        """
        if self._running and self.renewer.expired(self.poll):
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
            self.renewer.leave()
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
        if self.ctx.live is not None:
            await self.ctx.live.refresh_if_due(asyncio.get_running_loop().time())
        shards = await list_shards(self.ctx.kinesis, self.ctx.stream)
        leases, beats = await self.table.scan()
        missing = [info for sid, info in shards.items() if sid not in leases]
        for info in missing:
            first = initial_checkpoint(info, leases, self.ctx.start.kind)
            await self.table.ensure_shard(info.shard_id, info.parents, first)
        if missing:
            leases, beats = await self.table.scan()
        alive = self.liveness.observe(beats, asyncio.get_running_loop().time()) | {me}
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
        if self.committer is not None:
            self.committer.observe(alive, assignable)
        self._hand_off(shards, leases, desired)
        for sid in sorted(ready):
            if desired.get(sid) == me and sid not in self._running:
                await self._try_acquire(tg, leases[sid], shards[sid], alive)
        await self.taker.release_strays(leases, desired, self._running)
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
                run.consumer.ending = shards[sid].ending_sequence
            lease = leases.get(sid)
            lost = lease is None or lease.owner != me or lease.epoch != run.consumer.epoch
            if lost or desired.get(sid) != me:
                run.stop.set()  # the consumer flushes (fenced), then we release

    async def _try_acquire(
        self, tg: asyncio.TaskGroup, lease: ShardLease, info: ShardInfo, alive: set[str]
    ) -> None:
        # A live owner hands the shard off itself when it sees the assignment.
        if not self.taker.may_take(lease, alive):
            return
        if self._cooldown.get(lease.shard_id, 0.0) > asyncio.get_running_loop().time():
            return
        # LATEST is resolved to a time recorded in the lease, so an heir of a shard never
        # checkpointed starts where the first owner did, not at its own "latest".
        latest = lease.checkpoint is None and self.ctx.start.kind == "LATEST"
        start_at = int(self.ctx.wall_clock() * 1000) if latest else None
        fresh = await self.taker.take(lease, start_at_ms=start_at)
        if fresh is None:
            return
        consumer = ShardConsumer(
            self.ctx,
            fresh,
            fresh.epoch,
            closed=info.closed,
            budget_share=self.budget_share,
            ending=info.ending_sequence,
            budget=self.budget,
            alive=lambda: not self.renewer.expired(self.poll),
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
                await self.taker.release(sid, consumer.epoch, outcome.value)
            self._failures.pop(sid, None)
            return outcome
        except Exception as exc:
            # Never a crash loop: give the shard up, back off, and let the next round (here or
            # elsewhere) acquire it again and replay any open intent.
            self.ctx.metrics.count_error("shard_consumer", exc)
            failures = self._failures[sid] = self._failures.get(sid, 0) + 1
            backoff = min(60.0, 2.0 ** min(failures, 6))
            self._cooldown[sid] = asyncio.get_running_loop().time() + backoff
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
