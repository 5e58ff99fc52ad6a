"""Medium and low findings of issue 15 (items 5 and 6): what a hostile client sees."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import logging

import aiohttp
import pytest
import zstandard

from service.errors import SettingsError
from service.settings import ApiKey, Settings
from tests.conftest import Aws
from tests.ingest_support import ndjson, post, serving, stream_lines

KEY = "hardening-test-key"
SECRET = "Bearer sk-live-0123456789abcdef"


def _keyed(settings: Settings, **update: object) -> Settings:
    digest = hashlib.sha256(KEY.encode()).hexdigest()
    return settings.model_copy(update={"api_keys": (ApiKey(sha256=digest),), **update})


async def _raw(url: str, request: bytes, wait: float = 5.0) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(request)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), wait)
    finally:
        writer.close()


async def test_every_member_of_a_multi_member_gzip_lands(aws: Aws, settings: Settings) -> None:
    body = gzip.compress(ndjson("a", 3) + b"\n") + gzip.compress(ndjson("b", 4))
    async with serving(settings) as url, aiohttp.ClientSession() as s:
        status, answer, _ = await post(s, url + "/ingest", body, **{"Content-Encoding": "gzip"})
        assert (status, answer["accepted"]) == (200, 7)
        for encoding, bad in [
            ("gzip", gzip.compress(ndjson("c", 2)) + b"trailing garbage"),
            ("zstd", zstandard.ZstdCompressor().compress(ndjson("d", 2)) + b"garbage"),
        ]:
            status, answer, _ = await post(
                s, url + "/ingest", bad, **{"Content-Encoding": encoding}
            )
            assert status == 400, (encoding, answer)
    assert sorted(x["message"] for x in stream_lines(aws, settings.stream)) == sorted(
        [f"a-{i}" for i in range(3)] + [f"b-{i}" for i in range(4)]
    )


async def test_template_and_ilm_puts_are_read_within_a_small_limit(settings: Settings) -> None:
    async with serving(settings) as url, aiohttp.ClientSession() as s:
        for path in ("/_index_template/logs", "/_ilm/policy/logs"):
            async with s.put(url + path, data=b"{}") as r:
                assert r.status == 200
            async with s.put(url + path, data=b" " * (1024 * 1024)) as r:
                assert r.status == 413 and r.headers["X-Elastic-Product"] == "Elasticsearch"


async def test_a_key_that_is_not_utf8_is_unauthorized_not_a_crash(settings: Settings) -> None:
    async with serving(_keyed(settings)) as url:
        answer = await _raw(
            url,
            b"POST /ingest HTTP/1.1\r\nHost: x\r\nX-API-Key: \xff\xfe\xc3\x28\r\n"
            b"Content-Type: application/x-ndjson\r\nContent-Length: 7\r\n"
            b'Connection: close\r\n\r\n{"a":1}',
        )
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert b"Traceback" not in answer


async def test_metrics_need_the_key_when_keys_are_configured(settings: Settings) -> None:
    async with serving(_keyed(settings)) as url, aiohttp.ClientSession() as s:
        async with s.get(url + "/metrics") as r:
            assert r.status == 401
        async with s.get(url + "/metrics", headers={"X-API-Key": KEY}) as r:
            assert r.status == 200 and "tideway_ingest" in await r.text()
        async with s.get(url + "/healthz") as r:
            assert r.status == 200


def test_api_keys_of_null_or_empty_are_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TIDEWAY_STREAM", "s")
    monkeypatch.setenv("TIDEWAY_BUCKET", "bucket")
    for value in ("null", "", "[]"):
        monkeypatch.setenv("TIDEWAY_API_KEYS", value)
        with pytest.raises(SettingsError, match="TIDEWAY_API_KEYS"):
            Settings.load(None)
    monkeypatch.delenv("TIDEWAY_API_KEYS")
    assert Settings.load(None).api_keys is None


async def test_no_keys_is_a_loud_warning_at_start(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        async with serving(settings):
            pass
    assert any(
        "TIDEWAY_API_KEYS" in r.getMessage() and r.levelno >= logging.WARNING
        for r in caplog.records
    )


async def test_bulk_index_and_id_are_checked_per_item(aws: Aws, settings: Settings) -> None:
    long_index = "i" * 300
    body = b"\n".join(
        [
            b'{"index":{"_index":"%s"}}' % long_index.encode(),
            b'{"message":"long index"}',
            b'{"index":{"_id":"%s"}}' % (b"d" * 600),
            b'{"message":"long id"}',
            b'{"index":{"_index":"app"}}',
            b'{"message":"override","_index":"other"}',
            b'{"index":{"_index":"app"}}',
            b'{"message":"fine"}',
        ]
    )
    async with serving(settings) as url, aiohttp.ClientSession() as s:
        status, answer, _ = await post(s, url + "/logs/_bulk", body)
    assert status == 200 and answer["errors"] is True
    statuses = [next(iter(i.values()))["status"] for i in answer["items"]]
    assert statuses == [400, 400, 400, 201]
    assert len(answer["items"][0]["index"]["_index"]) <= 255
    assert "metadata field" in answer["items"][2]["index"]["error"]["reason"]
    landed = stream_lines(aws, settings.stream)
    assert [(x["message"], x["_index"]) for x in landed] == [("fine", "app")]


async def test_an_oversized_header_is_refused_without_echoing_it(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    value = SECRET + "x" * 9000
    with caplog.at_level(logging.DEBUG):
        async with serving(settings) as url:
            answer = await _raw(
                url,
                f"GET /healthz HTTP/1.1\r\nHost: x\r\nAuthorization: {value}\r\n\r\n".encode(),
            )
    assert answer.startswith(b"HTTP/1.") and b" 400 " in answer[:20], answer[:200]
    assert b"sk-live" not in answer
    assert not any(
        "sk-live" in r.getMessage() or "sk-live" in str(r.exc_info) for r in caplog.records
    )


async def test_a_trickled_request_head_is_cut_off(settings: Settings) -> None:
    quick = settings.model_copy(update={"header_read_timeout": 0.5})
    async with serving(quick) as url:
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        closed_after = None
        loop = asyncio.get_running_loop()
        started = loop.time()
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        try:
            for _ in range(40):  # one header byte every 0.1 s: 4 s if never cut
                writer.write(b"a")
                await writer.drain()
                await asyncio.sleep(0.1)
                if reader.at_eof() or writer.is_closing():
                    break
                try:
                    if await asyncio.wait_for(reader.read(1), 0.01) == b"":
                        break
                except TimeoutError:
                    continue
            closed_after = loop.time() - started
        except (ConnectionError, OSError):
            closed_after = loop.time() - started
        finally:
            writer.close()
    assert closed_after is not None and closed_after < 2.0, closed_after
