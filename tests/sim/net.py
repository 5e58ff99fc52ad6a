"""The wire between a node and the AWS models: latency, faults, crashes and pauses.

A call is applied to the model at one virtual instant, between its request and response
transit. A crashed node's calls never arrive or never return (kill -9: nothing after the
crash is written); a paused node's calls wait until it resumes (a zombie: what it sends
after waking up is stale).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from tests.sim.clock import NodeClock
from tests.sim.faults import Injector, client_error, lost_response


class TornDown(ConnectionError):
    """The simulation is over; every call fails at once."""


@dataclass
class Endpoint:
    """One machine's network presence: its clock, and whether it is alive or paused."""

    name: str
    clock: NodeClock = field(default_factory=NodeClock)
    dead: bool = False
    paused_until: float = 0.0
    torn_down: bool = False
    # kill -9 at an await point: after this many more write calls (then before or after
    # the write is applied, ``crash_applied``); None = not scheduled.
    crash_countdown: int | None = None
    crash_applied: bool = False
    # count only S3 uploads toward the crash (kill -9 between upload and checkpoint)
    crash_on_upload: bool = False
    # a pause (zombie) at an await point: after this many more write calls, held unsent
    pause_countdown: int | None = None
    pause_length: float = 0.0
    on_crash: Callable[[Endpoint, str], None] | None = None

    def crash(self, where: str) -> None:
        self.dead = True
        self.crash_countdown = None
        if self.on_crash is not None:
            self.on_crash(self, where)

    async def gate(self, loop: asyncio.AbstractEventLoop) -> None:
        """Returns when this node may move on; never if it has crashed."""
        while True:
            if self.torn_down:
                raise TornDown(self.name)
            if self.dead:
                await loop.create_future()  # kill -9: never answered
            wait = self.paused_until - loop.time()
            if wait <= 0:
                return
            await asyncio.sleep(wait)


@dataclass
class Trace:
    """Every call that reached a model, in order; its hash is the schedule's fingerprint."""

    lines: list[str] = field(default_factory=list)
    recording: bool = True

    def add(self, t: float, text: str) -> None:
        if self.recording:
            self.lines.append(f"{t:.6f} {text}")


class Network:
    def __init__(self, loop: asyncio.AbstractEventLoop, injector: Injector, trace: Trace) -> None:
        self.loop = loop
        self.injector = injector
        self.trace = trace

    async def call(
        self,
        node: Endpoint,
        service: str,
        op: str,
        apply: Callable[[], dict[str, Any]],
        *,
        write: bool,
        key: str = "",
    ) -> dict[str, Any]:
        await node.gate(self.loop)
        fault = self.injector.draw(service, op, write=write)
        t = self.loop.time()
        if fault.kind:
            self.injector.note(
                t,
                f"{node.name} {service}.{op}({key}) {fault.kind}",
                fault.kind,
                node.name,
                t + fault.latency,
            )
        await asyncio.sleep(fault.latency / 2)
        await node.gate(self.loop)
        if fault.error is not None:
            self.trace.add(self.loop.time(), f"{node.name} {op} {key} -> {fault.error[0]}")
            raise client_error(*fault.error, op)
        if write and node.pause_countdown is not None and self.injector.enabled:
            node.pause_countdown -= 1
            if node.pause_countdown <= 0:
                node.pause_countdown = None
                node.paused_until = self.loop.time() + node.pause_length
                self.injector.note(
                    self.loop.time(),
                    f"{node.name} paused {node.pause_length:.1f}s (zombie) at {op}({key})",
                    "pause",
                    node.name,
                    node.paused_until,
                )
                await node.gate(self.loop)
        counts = not node.crash_on_upload or op in ("put_object", "complete_multipart_upload")
        if write and counts and node.crash_countdown is not None and self.injector.enabled:
            node.crash_countdown -= 1
            if node.crash_countdown <= 0:
                if node.crash_applied:
                    self._apply(node, op, key, apply)
                node.crash(f"{op}({key}) {'applied' if node.crash_applied else 'not sent'}")
                await node.gate(self.loop)
        result, error = self._apply(node, op, key, apply)
        if fault.lost:
            if fault.resent:  # botocore's own retry re-sends the applied request
                result, error = self._apply(node, op, key, apply)
            else:
                await asyncio.sleep(fault.latency / 2)
                await node.gate(self.loop)
                raise lost_response(op)
        await asyncio.sleep(fault.latency / 2)
        await node.gate(self.loop)
        if error is not None or result is None:
            raise error or RuntimeError("no result")
        return result

    def _apply(
        self, node: Endpoint, op: str, key: str, apply: Callable[[], dict[str, Any]]
    ) -> tuple[dict[str, Any] | None, ClientError | None]:
        try:
            result = apply()
        except ClientError as exc:
            self.trace.add(
                self.loop.time(), f"{node.name} {op} {key} -> {exc.response['Error']['Code']}"
            )
            return None, exc
        self.trace.add(self.loop.time(), f"{node.name} {op} {key} -> ok {_digest(result)}")
        return result, None


def _digest(result: Any) -> str:
    import hashlib

    return hashlib.blake2b(repr(result).encode(), digest_size=6).hexdigest()
