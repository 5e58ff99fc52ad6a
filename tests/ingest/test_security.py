"""Hostile requests are refused cleanly and never harm concurrent good requests."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import tracemalloc
import zlib

import aiohttp
import orjson
import pytest
import zstandard

from service.errors import RequestError
from service.ingest.body import decompress
from service.settings import ApiKey, Settings
from tests.conftest import Aws
from tests.ingest_support import ndjson, post, serving, stream_lines

KEY = "s3cret-key-for-tests"
MIB = 1024 * 1024


def _hardened(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "api_keys": (
                ApiKey(sha256=hashlib.sha256(KEY.encode()).hexdigest(), service="billing"),
            ),
            "max_body_bytes": 256 * 1024,
            "max_decompressed_bytes": 2 * MIB,
            "max_line_bytes": 64 * 1024,
            "body_read_timeout": 1.0,
            "max_decompression_ratio": 50.0,
        }
    )


async def _good(s: aiohttp.ClientSession, url: str, tag: str) -> int:
    status, answer, _ = await post(s, url + "/ingest", ndjson(tag, 5), **{"X-API-Key": KEY})
    assert (status, answer["accepted"]) == (200, 5), answer
    return status


def _gzip_bomb(size: int) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = b"\0" * MIB
    return b"".join([*(c.compress(chunk) for _ in range(size // MIB)), c.flush()])


def _zstd_bomb(size: int) -> bytes:
    return zstandard.ZstdCompressor(level=3).compress(b"\n" * size)


async def test_hostile_requests_are_refused_while_good_ones_succeed(
    aws: Aws, settings: Settings
) -> None:
    hard = _hardened(settings)
    deep = b'{"a": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"
    cases: list[tuple[str, bytes, dict[str, str], int, str]] = [
        ("no key", ndjson("x", 2), {}, 401, "unauthorized"),
        ("wrong key", ndjson("x", 2), {"Authorization": "Bearer nope"}, 401, "unauthorized"),
        ("oversize", b"{}" * 200_000, {"X-API-Key": KEY}, 413, "byte limit"),
        (
            "gzip bomb",
            _gzip_bomb(64 * MIB),
            {"X-API-Key": KEY, "Content-Encoding": "gzip"},
            413,
            "decompress",
        ),
        (
            "zstd bomb",
            _zstd_bomb(64 * MIB),
            {"X-API-Key": KEY, "Content-Encoding": "zstd"},
            413,
            "decompress",
        ),
        (
            "bad gzip",
            b"\x1f\x8b garbage",
            {"X-API-Key": KEY, "Content-Encoding": "gzip"},
            400,
            "gzip",
        ),
        (
            "bad encoding",
            b"{}",
            {"X-API-Key": KEY, "Content-Encoding": "br"},
            415,
            "Content-Encoding",
        ),
        ("deep nesting", deep, {"X-API-Key": KEY}, 400, "nested too deeply"),
        ("invalid utf-8", b'{"message": "\xc3\x28"}', {"X-API-Key": KEY}, 400, "UTF-8"),
    ]
    async with serving(hard) as url, aiohttp.ClientSession() as s:
        for name, body, headers, status, reason in cases:
            results = await asyncio.gather(
                post(s, url + "/ingest", body, **headers), _good(s, url, name.replace(" ", "_"))
            )
            got, answer, _ = results[0]
            assert got == status, (name, answer)
            text = orjson.dumps(answer).decode()
            assert reason in text, (name, text)
            if status == 401:
                assert answer == {"error": "unauthorized"}
        assert await _gauge_zero(s, url)
    lines = stream_lines(aws, hard.stream)
    assert len(lines) == 5 * len(cases)
    assert {x.get("service") for x in lines} == {None}  # the key's service is in the header


async def _gauge_zero(s: aiohttp.ClientSession, url: str) -> bool:
    async with s.get(url + "/metrics", headers={"X-API-Key": KEY}) as r:
        return "tideway_ingest_inflight_bytes 0.0" in await r.text()


async def test_every_way_agents_present_a_key_is_accepted(aws: Aws, settings: Settings) -> None:
    import base64

    b64 = lambda text: base64.b64encode(text.encode()).decode()  # noqa: E731
    async with serving(_hardened(settings)) as url, aiohttp.ClientSession() as s:
        for header in (
            {"Authorization": f"Bearer {KEY}"},
            {"X-API-Key": KEY},
            {"Authorization": f"ApiKey {KEY}"},
            {"Authorization": f"ApiKey {b64('some-id:' + KEY)}"},
            {"Authorization": f"Basic {b64('fluent-bit:' + KEY)}"},
        ):
            status, _, _ = await post(s, url + "/ingest", ndjson("k", 1), **header)
            assert status == 200, header
        for header in (
            {"Authorization": f"Basic {b64(KEY + ':wrong')}"},
            {"Authorization": f"ApiKey {b64('id:wrong')}"},
            {"Authorization": "Basic !!!"},
        ):
            status, _, headers = await post(s, url + "/_bulk", b"{}", **header)
            assert status == 401 and headers["X-Elastic-Product"] == "Elasticsearch", header


async def test_slow_loris_body_gets_408_without_blocking_others(
    aws: Aws, settings: Settings
) -> None:
    async with serving(_hardened(settings)) as url, aiohttp.ClientSession() as s:
        port = int(url.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /ingest HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\n"
            b"X-API-Key: " + KEY.encode() + b"\r\nContent-Length: 100000\r\n\r\n"
        )
        await writer.drain()

        async def trickle() -> bytes:
            for _ in range(30):
                writer.write(b"{")
                await writer.drain()
                await asyncio.sleep(0.1)
                if reader.at_eof():
                    break
            return await asyncio.wait_for(reader.read(4096), 5)

        slow = asyncio.create_task(trickle())
        for i in range(5):  # answered while the slow client is still trickling
            assert await _good(s, url, f"fast{i}") == 200
        answer = await slow
        assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
        writer.close()


def test_a_bomb_never_allocates_past_the_limit() -> None:
    limit = 8 * MIB
    for encoding, bomb in (("gzip", _gzip_bomb(256 * MIB)), ("zstd", _zstd_bomb(256 * MIB))):
        tracemalloc.start()
        with pytest.raises(RequestError) as refused:
            decompress(bomb, encoding, limit)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert refused.value.status == 413
        assert peak < limit + 2 * MIB, (encoding, peak)
    with pytest.raises(RequestError, match="ratio"):
        decompress(gzip.compress(b"a" * 4 * MIB), "gzip", limit, max_ratio=100)
    assert decompress(gzip.compress(b"a" * 4 * MIB), "gzip", limit) == b"a" * 4 * MIB


async def test_otlp_deep_nesting_and_garbage_are_refused(aws: Aws, settings: Settings) -> None:
    def ld(field: int, inner: bytes) -> bytes:
        """A length-delimited protobuf field (protobuf refuses to build what we want to send)."""
        n, out = len(inner), bytearray([field << 3 | 2])
        while True:
            out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
            n >>= 7
            if not n:
                return bytes(out) + inner

    body = ld(1, b"leaf")  # AnyValue.string_value
    for _ in range(200):
        body = ld(5, ld(1, body))  # AnyValue.array_value.values[0]
    # resource_logs[0].scope_logs[0].log_records[0].body
    request = ld(1, ld(2, ld(2, ld(5, body))))
    deep_json = (
        b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"body": '
        + b'{"arrayValue": {"values": [' * 300
        + b"{}"
        + b"]}}" * 300
        + b"}]}]}]}"
    )
    async with serving(_hardened(settings)) as url, aiohttp.ClientSession() as s:
        for body, ctype in (
            (request, "application/x-protobuf"),
            (deep_json, "application/json"),
            (b"\xff" * 100, "application/x-protobuf"),
        ):
            results = await asyncio.gather(
                post(s, url + "/v1/logs", body, ctype, **{"X-API-Key": KEY}), _good(s, url, "otlp")
            )
            assert results[0][0] == 400, results[0]
