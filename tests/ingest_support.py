"""Helpers for the ingest tests: run ``serve`` with chosen settings, read the stream back."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson

from service import envelope
from service.ingest.server import serve
from service.resources import setup
from service.settings import Settings
from tests.conftest import Aws


@contextlib.asynccontextmanager
async def serving(settings: Settings, *, create: bool = True) -> AsyncIterator[str]:
    """``tideway serve`` in this process with ``settings``; yields its base URL."""
    if create:
        await setup(settings)
    stop = asyncio.Event()
    bound: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(settings, stop, bound))
    port = await asyncio.wait_for(bound, 30)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


def stream_records(aws: Aws, stream: str) -> dict[str, list[bytes]]:
    """Every record of every shard, by shard id (boto3 against the backend, not the proxy)."""
    kinesis = aws.client("kinesis")
    out: dict[str, list[bytes]] = {}
    for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
        it = kinesis.get_shard_iterator(
            StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        records: list[bytes] = []
        while it:
            resp = kinesis.get_records(ShardIterator=it, Limit=10_000)
            records.extend(r["Data"] for r in resp["Records"])
            if not resp["Records"]:
                break
            it = resp.get("NextShardIterator")
        out[shard["ShardId"]] = records
    return out


def stream_lines(aws: Aws, stream: str) -> list[dict[str, Any]]:
    """Every line of every envelope in the stream, decoded."""
    lines: list[dict[str, Any]] = []
    for records in stream_records(aws, stream).values():
        for data in records:
            env = envelope.decode(data)
            lines.extend(orjson.loads(x) for x in env.payload.split(b"\n"))
    return lines


def ndjson(prefix: str, count: int, **extra: Any) -> bytes:
    return b"\n".join(
        orjson.dumps({"message": f"{prefix}-{i}", "n": i, **extra}) for i in range(count)
    )


async def post(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    ctype: str = "application/x-ndjson",
    **headers: str,
) -> tuple[int, Any, dict[str, str]]:
    """POST and return (status, parsed JSON body or raw bytes, headers)."""
    async with session.post(url, data=body, headers={"Content-Type": ctype, **headers}) as r:
        raw = await r.read()
        try:
            parsed: Any = orjson.loads(raw)
        except orjson.JSONDecodeError:
            parsed = raw
        return r.status, parsed, dict(r.headers)


async def gauge(session: aiohttp.ClientSession, url: str, name: str) -> float:
    async with session.get(url + "/metrics") as r:
        text = await r.text()
    match = re.search(rf"^{name} ([0-9.e+]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def post_body(
    url: str, body: bytes, ctype: str, encoding: str | None = None
) -> tuple[int, dict[str, object]]:
    """POST one body with its content type (and encoding); (status, parsed JSON answer)."""
    headers = {"Content-Type": ctype}
    if encoding:
        headers["Content-Encoding"] = encoding
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers=headers) as resp,
    ):
        return resp.status, await resp.json()
