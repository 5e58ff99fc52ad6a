"""A small fault-injecting reverse proxy between AWS clients and the backend (tests only).

Faults that moto cannot produce come from here: throttling, 5xx, slow answers, connection
resets, partial PutRecords failures, answers lost after success ("lost_answer": the request
reaches the backend and takes effect, then the connection drops without the response),
empty GetRecords pages while records follow ("empty_page": no records, the same iterator
back, and a MillisBehindLatest of 0, missing or positive, as Kinesis may answer), and
"hold" (park a matching request until released,
so a test can SIGKILL a process at an exact point of the protocol).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from service.local import free_port

Matcher = Callable[[str, bytes], bool]  # (X-Amz-Target or path, body) -> applies?


def target_is(*targets: str) -> Matcher:
    """Match AWS JSON-protocol calls by X-Amz-Target suffix, e.g. 'PutRecords'."""
    return lambda target, body: any(target.endswith("." + t) for t in targets)


@dataclass
class Rule:
    match: Matcher
    # throttle | error500 | delay | reset | hold | blackhole | partial | lost_answer | empty_page
    action: str
    times: int = 1_000_000  # how many matching requests it applies to
    probability: float = 1.0
    seconds: float = 0.0  # for delay
    hits: int = 0
    held: threading.Event = field(default_factory=threading.Event)  # set when a request is held
    release: threading.Event = field(default_factory=threading.Event)


class FaultProxy:
    """Runs in its own thread and loop so tests may block freely."""

    def __init__(self, upstream: str, seed: int = 1) -> None:
        self.upstream = upstream.rstrip("/")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.rules: list[Rule] = []
        self.rng = random.Random(seed)
        self.counts: dict[str, int] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    def add(self, rule: Rule) -> Rule:
        self.rules.append(rule)
        return rule

    def clear(self) -> None:
        for rule in self.rules:
            rule.release.set()
        self.rules = []

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.clear()
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _start(self) -> None:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, auto_decompress=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _stop(self) -> None:
        assert self._runner is not None and self._session is not None
        await self._runner.cleanup()
        await self._session.close()

    def _pick(self, target: str, body: bytes) -> Rule | None:
        for rule in self.rules:
            if (
                rule.hits < rule.times
                and rule.match(target, body)
                and self.rng.random() < rule.probability
            ):
                rule.hits += 1
                return rule
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        target = request.headers.get("X-Amz-Target", request.path)
        rule = self._pick(target, body)
        if rule is not None:
            self.counts[rule.action] = self.counts.get(rule.action, 0) + 1
            early = await self._apply(rule, request, body, target)
            if early is not None:
                return early
        return await self._forward(request, body)

    async def _apply(
        self, rule: Rule, request: web.Request, body: bytes, target: str
    ) -> web.StreamResponse | None:
        if rule.action == "throttle":
            return _aws_error(
                400, "ProvisionedThroughputExceededException", "Rate exceeded for shard"
            )
        if rule.action == "error500":
            return _aws_error(500, "InternalFailure", "injected by faultproxy")
        if rule.action == "delay":
            await asyncio.sleep(rule.seconds)
            return None
        if rule.action == "reset":
            transport = request.transport
            if transport is not None:
                transport.abort()
            raise asyncio.CancelledError
        if rule.action == "hold":
            rule.held.set()
            while not rule.release.is_set():
                await asyncio.sleep(0.05)
            return None
        if rule.action == "blackhole":
            # Like hold, but the request never reaches the backend: the process that sent it
            # is killed while it waits, and what it asked for must not happen.
            rule.held.set()
            while not rule.release.is_set():
                await asyncio.sleep(0.05)
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError
        if rule.action == "lost_answer":
            await self._forward(request, body)  # done upstream; the client never hears it
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError
        if rule.action == "empty_page" and target.endswith(".GetRecords"):
            return self._empty_page(body)
        if rule.action == "partial" and target.endswith(".PutRecords"):
            return await self._partial_put(request, body)
        return None

    def _empty_page(self, body: bytes) -> web.Response:
        """A page with no records whose iterator reads the same position again (moto's
        iterators are stateless); the lag says nothing true about what follows."""
        page: dict[str, Any] = {
            "Records": [],
            "NextShardIterator": orjson.loads(body)["ShardIterator"],
        }
        lag = self.rng.choice((0, None, 5000))
        if lag is not None:
            page["MillisBehindLatest"] = lag
        return web.Response(body=orjson.dumps(page), content_type="application/x-amz-json-1.1")

    async def _partial_put(self, request: web.Request, body: bytes) -> web.StreamResponse:
        """Forward a random subset of entries; answer the rest as throttled (not written)."""
        doc = orjson.loads(body)
        entries = doc["Records"]
        keep = [i for i in range(len(entries)) if self.rng.random() < 0.5] or [0]
        forwarded = {**doc, "Records": [entries[i] for i in keep]}
        resp = await self._forward(request, orjson.dumps(forwarded), raw=True)
        assert isinstance(resp, dict)
        results: list[dict[str, Any]] = []
        got = iter(resp["Records"])
        failed = 0
        for i in range(len(entries)):
            if i in keep:
                results.append(next(got))
            else:
                failed += 1
                results.append(
                    {
                        "ErrorCode": "ProvisionedThroughputExceededException",
                        "ErrorMessage": "Rate exceeded (faultproxy)",
                    }
                )
        return web.Response(
            body=orjson.dumps({"FailedRecordCount": failed, "Records": results}),
            content_type="application/x-amz-json-1.1",
        )

    async def _forward(
        self, request: web.Request, body: bytes, *, raw: bool = False
    ) -> web.StreamResponse | dict[str, Any]:
        assert self._session is not None
        headers = {
            k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")
        }
        async with self._session.request(
            request.method, self.upstream + request.path_qs, data=body, headers=headers
        ) as up:
            payload = await up.read()
            if raw:
                return dict(orjson.loads(payload))
            out = web.Response(status=up.status, body=payload)
            for k, v in up.headers.items():
                if k.lower() not in (
                    "content-length",
                    "transfer-encoding",
                    "connection",
                    "content-encoding",
                    "date",
                    "server",
                ):
                    out.headers[k] = v
            if "Content-Encoding" in up.headers:
                out.headers["Content-Encoding"] = up.headers["Content-Encoding"]
            return out


def _aws_error(status: int, code: str, message: str) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps({"__type": code, "message": message}),
        content_type="application/x-amz-json-1.1",
        headers={"x-amzn-ErrorType": code},
    )


@contextlib.contextmanager
def fault_proxy(upstream: str) -> Iterator[FaultProxy]:
    with FaultProxy(upstream) as proxy:
        yield proxy


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def update_item_setting(prefix: bytes) -> Matcher:
    """Match DynamoDB UpdateItem calls whose update expression starts with ``prefix``,
    e.g. b"SET checkpoint" (step 3 of the flush protocol)."""
    return lambda target, body: (
        target.endswith(".UpdateItem")
        and b'"UpdateExpression": "' + prefix in body.replace(b'":"', b'": "')
    )
