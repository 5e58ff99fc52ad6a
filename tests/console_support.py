"""Helpers for the console tests: a seeded lease table and dead-letter prefix, the console
running in this process, and ALB-style OIDC tokens signed with a key of our own."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import jwt
import orjson
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from service.aws import aws_clients
from service.console.server import run_console
from service.consume.leases import LeaseTable
from service.consume.progress import ShardProgress
from service.consume.sequence import SHARD_END
from service.settings import Settings

ALB_ARN = (
    "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/tideway/50dc6c495c0c9188"
)
ISSUER = "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_example"
KID = "8f4c1f8e-6d3b-4a41-9b7e-2d0b5f6a1c11"
DEAD_DATE = "dt=2026-11-30"


async def seed_fleet(settings: Settings, shards: int = 6) -> list[str]:
    """A lease table as a fleet leaves it: a parent read to its end with two children, owned
    shards, one with an open intent, one unowned; two worker heartbeats."""
    ids = [f"shardId-{n:012d}" for n in range(shards)]
    async with aws_clients("dynamodb") as aws:
        table = LeaseTable(aws.dynamodb, settings.lease_table)
        await table.ensure_shard(ids[0], ())
        for sid in ids[1:3]:
            await table.ensure_shard(sid, (ids[0],))
        for sid in ids[3:]:
            await table.ensure_shard(sid, ())
        leases, _ = await table.scan()
        parent = await table.acquire(leases[ids[0]], "worker-a")
        await table.checkpoint(ids[0], "worker-a", parent.epoch, SHARD_END)
        for n, sid in enumerate(ids[1:-1]):
            owner = "worker-a" if n % 2 else "worker-b"
            lease = await table.acquire(leases[sid], owner)
            # What the owner writes with its checkpoint: its lag, the time, totals.
            progress = ShardProgress(int(time.time() * 1000), 700 * (n + 1), 12.5, 1000 * n)
            await table.checkpoint(sid, owner, lease.epoch, 49_000_000 + n, progress=progress)
            if n == 1:
                await table.write_intent(sid, owner, lease.epoch, 49_000_100, 49_000_199)
        now_ms = int(time.time() * 1000)
        await table.heartbeat("worker-a", 17, now_ms)
        await table.heartbeat("worker-b", 9, now_ms)
    return ids


def dead_letter_key(settings: Settings, n: int = 0) -> str:
    return f"{settings.prefix}dead-letter/{DEAD_DATE}/{settings.stream}-shardId-000000000001-{n}-{n + 1}.ndjson.gz"


async def seed_dead_letters(settings: Settings) -> str:
    """One dead-letter object of two entries (a truncated gzip and bytes of no format)."""
    entries = [
        {
            "reason": "gzip: truncated stream",
            "kinesis_shard_id": "shardId-000000000001",
            "kinesis_sequence_number": "49000000",
            "arrival_time": "2026-11-30T10:00:00Z",
            "data": base64.b64encode(gzip.compress(b'{"message": "hello"}\n')[:12]).decode(),
        },
        {
            "reason": "avro: no schema for id 7",
            "kinesis_shard_id": "shardId-000000000001",
            "kinesis_sequence_number": "49000001",
            "arrival_time": "2026-11-30T10:00:01Z",
            "data": base64.b64encode(b"\x00\x00\x00\x00\x07\x02hi").decode(),
        },
    ]
    body = gzip.compress(b"".join(orjson.dumps(e) + b"\n" for e in entries))
    key = dead_letter_key(settings)
    async with aws_clients("s3") as aws:
        await aws.s3.put_object(Bucket=settings.bucket, Key=key, Body=body)
    return key


REDRIVEN_MESSAGE = "landed by the console's redrive"


async def seed_redrivable(settings: Settings) -> str:
    """A dead-letter object whose one record today's settings decode (it was refused under a
    smaller decompression limit); its shard's flush is checkpointed (seed_fleet), so a
    redrive lands it."""
    line = orjson.dumps({"message": REDRIVEN_MESSAGE, "service": "api"})
    entry = {
        "reason": "gzip: more than 16 bytes decompressed",
        "kinesis_shard_id": "shardId-000000000001",
        "kinesis_sequence_number": "3",
        "arrival_time": "2026-11-30T10:00:03Z",
        "data": base64.b64encode(gzip.compress(line, mtime=0)).decode(),
    }
    key = dead_letter_key(settings, 2)
    async with aws_clients("s3") as aws:
        await aws.s3.put_object(
            Bucket=settings.bucket, Key=key, Body=gzip.compress(orjson.dumps(entry) + b"\n")
        )
    return key


def browser_session() -> aiohttp.ClientSession:
    # Cookies from 127.0.0.1 are kept, as a browser keeps them (aiohttp drops them by default).
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


def put_emf_metrics(cloudwatch: Any, stream: str, minute: int) -> None:
    """What CloudWatch extracts from the services' EMF lines over the three minutes before
    ``minute`` (moto's CloudWatch Logs extracts nothing): 1,200, 2,400 and 3,600 lines in a
    minute from two serve tasks, half that landed, a largest lag of 1, 2 and 3 s."""
    for k in (1, 2, 3):
        at = datetime.fromtimestamp(minute - 60 * k, UTC)
        data = []
        for role, metric, values in (
            ("serve", "LinesAccepted", (400.0 * k, 800.0 * k)),
            ("consume", "RowsWritten", (600.0 * k,)),
            ("consume", "ConsumerLagMillis", (1000.0 * k, 10.0)),  # Maximum over tasks
        ):
            dims = [{"Name": "Stream", "Value": stream}, {"Name": "Role", "Value": role}]
            data += [
                {"MetricName": metric, "Dimensions": dims, "Timestamp": at, "Value": v}
                for v in values
            ]
        cloudwatch.put_metric_data(Namespace="Tideway", MetricData=data)


async def signed_in(browser: aiohttp.ClientSession, run: RunningConsole, path: str) -> str:
    """Spend the console's sign-in URL in ``browser``; the page at ``path`` afterwards."""
    async with browser.get(run.sign_in) as resp:
        assert resp.status == 200
    async with browser.get(run.url + path) as resp:
        return await resp.text()


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "no CSRF token on the page"
    return found.group(1)


@dataclass
class RunningConsole:
    url: str
    sign_in: str  # the announced line's URL (token mode) or ""
    lines: list[str] = field(default_factory=list)


@contextlib.asynccontextmanager
async def console(settings: Settings) -> AsyncIterator[RunningConsole]:
    """``tideway console`` in this process on a free loopback port."""
    stop = asyncio.Event()
    bound: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    lines: list[str] = []
    task = asyncio.create_task(run_console(settings, stop, lines.append, bound, freeze_heap=False))
    port = await asyncio.wait_for(bound, 30)
    sign_in = next((w for line in lines for w in line.split() if "/login?token=" in w), "")
    try:
        yield RunningConsole(f"http://127.0.0.1:{port}", sign_in, lines)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


@dataclass(frozen=True)
class AlbSigner:
    """Signs tokens as the ALB does (ES256, kid and signer in the header)."""

    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )

    @property
    def public_pem(self) -> bytes:
        return self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def token(
        self,
        *,
        groups: list[str] | None = None,
        ttl: float = 120,
        signer: str = ALB_ARN,
        issuer: str = ISSUER,
        kid: str = KID,
        sub: str = "alice",
    ) -> str:
        exp = int(time.time() + ttl)
        claims: dict[str, Any] = {
            "sub": sub,
            "email": f"{sub}@example.com",
            "exp": exp,
            "iss": issuer,
        }
        if groups is not None:
            claims["cognito:groups"] = groups
        headers = {"kid": kid, "signer": signer, "iss": issuer, "client": "console", "exp": exp}
        return jwt.encode(claims, self.key, algorithm="ES256", headers=headers)


@contextlib.asynccontextmanager
async def local_server(app: web.Application) -> AsyncIterator[str]:
    """``app`` on a free loopback port; yields its base URL."""
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def key_server(keys: dict[str, bytes]) -> AsyncIterator[str]:
    """A local stand-in for the ALB's public-key endpoint; yields the key URL template."""

    async def get(request: web.Request) -> web.Response:
        pem = keys.get(request.match_info["kid"])
        return web.Response(body=pem) if pem else web.Response(status=404)

    app = web.Application()
    app.router.add_get("/{kid}", get)
    async with local_server(app) as url:
        yield url + "/{kid}"


@contextlib.asynccontextmanager
async def worker_status(shard_lags: dict[str, int]) -> AsyncIterator[str]:
    """A consume worker's /status (the fields the console reads); yields its base URL."""
    doc = {
        "worker_id": "worker-a",
        "ready": True,
        "lag_ms": max(shard_lags.values()),
        "rounds": 42,
        "last_error": None,
        "shards": {sid: {"here": {"millis_behind": lag}} for sid, lag in shard_lags.items()},
    }

    async def get(request: web.Request) -> web.Response:
        return web.json_response(doc)

    app = web.Application()
    app.router.add_get("/status", get)
    async with local_server(app) as url:
        yield url
