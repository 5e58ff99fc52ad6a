"""The console against moto: pages from a seeded lease table and dead-letter prefix, the
one-time sign-in, the refusals, the ALB's OIDC mode with a local key URL, and tideway status."""

from __future__ import annotations

import re

import aiohttp
import orjson
import pytest

from service.cli import main
from service.settings import Settings
from tests.console_support import (
    ALB_ARN,
    DEAD_DATE,
    ISSUER,
    KID,
    AlbSigner,
    browser_session,
    console,
    csrf_of,
    key_server,
    seed_dead_letters,
    seed_fleet,
    worker_status,
)


async def test_token_sign_in_shows_live_pages_and_refuses_what_it_must(ready: Settings) -> None:
    ids = await seed_fleet(ready)
    key = await seed_dead_letters(ready)
    async with worker_status({ids[1]: 1500}) as worker:
        # One worker answers /status, one is down: lag from the first, the second named.
        fleet = ready.model_copy(update={"console_workers": (worker, "http://127.0.0.1:9")})
        await browse_and_be_refused(fleet, ids, key)


async def browse_and_be_refused(ready: Settings, ids: list[str], key: str) -> None:
    async with console(ready) as run, aiohttp.ClientSession() as anonymous:
        assert run.sign_in.startswith(f"{run.url}/login?token=")
        async with anonymous.get(f"{run.url}/shards") as resp:
            assert resp.status == 401
        async with anonymous.get(f"{run.url}/healthz") as resp:
            assert resp.status == 200

        async with browser_session() as browser:
            async with browser.get(run.sign_in) as resp:
                assert resp.status == 200 and str(resp.url) == f"{run.url}/"
                home = await resp.text()
            assert 'id="shard-count">6<' in home and "worker-a" in home
            assert "unreachable: ClientConnectorError" in home
            assert "<td>42</td>" in home  # the reachable worker's rounds
            assert ">Shards</a>" in home and ">Dead letters</a>" in home
            assert "<h2>Tables</h2>" in home and "hive layout: no commits" in home
            async with browser.get(run.sign_in) as resp:
                assert resp.status == 403, "the sign-in token works once"

            async with browser.get(f"{run.url}/shards") as resp:
                shards = await resp.text()
            rows = re.findall(r"<tr class=\"([a-z-]+)\"><td>(shardId-\d+)</td>", shards)
            assert [sid for _, sid in rows] == ids
            assert dict((sid, state) for state, sid in rows)[ids[0]] == "finished"
            assert f"{ids[1]}, {ids[2]}" in shards  # the parent's children
            assert "49000100…49000199" in shards  # the open intent
            assert f"<td>{ids[1]}</td><td>worker-b</td><td>1</td>" in shards
            assert "<td>1500 ms</td>" in shards  # lag from the worker's /status

            async with browser.get(f"{run.url}/shards?q=unowned") as resp:
                assert re.findall(r"<td>(shardId-\d+)</td>", await resp.text()) == [ids[-1]]

            async with browser.get(f"{run.url}/dead-letters") as resp:
                dead = await resp.text()
            assert DEAD_DATE in dead and "gzip: truncated stream" in dead
            assert "avro: no schema for id 7" in dead
            async with browser.get(
                f"{run.url}/dead-letters", params={"date": DEAD_DATE, "reason": "avro"}
            ) as resp:
                only = await resp.text()
            assert "49000001" in only and "49000000" not in only

            async with browser.get(
                f"{run.url}/dead-letters/record", params={"key": key, "index": "0"}
            ) as resp:
                record = await resp.text()
            assert "gzip: truncated stream" in record and "decode today" in record
            async with browser.get(
                f"{run.url}/dead-letters/record", params={"key": "logs/x.parquet"}
            ) as resp:
                assert resp.status == 400

            post = f"{run.url}/dead-letters/redrive"
            async with browser.post(post, data={"keys": key}) as resp:
                assert resp.status == 403 and "CSRF" in await resp.text()
            async with browser.post(post, data={"keys": key, "csrf_token": "forged"}) as resp:
                assert resp.status == 403
            async with anonymous.post(
                post, data={"keys": key, "csrf_token": csrf_of(dead)}
            ) as resp:
                assert resp.status == 401
            async with browser.post(
                post, data={"keys": "logs/x.parquet", "csrf_token": csrf_of(dead)}
            ) as resp:
                assert resp.status == 400, "only dead-letter objects are redriven"


async def test_behind_the_alb_the_signed_header_decides_who_may_do_what(ready: Settings) -> None:
    await seed_fleet(ready)
    key = await seed_dead_letters(ready)
    alb = AlbSigner()
    async with key_server({KID: alb.public_pem}) as key_url:
        oidc = ready.model_copy(
            update={
                "console_auth": "oidc",
                "console_oidc_key_url": key_url,
                "console_oidc_signer": ALB_ARN,
                "console_oidc_issuer": ISSUER,
                "console_base_path": "/console",  # the ALB's path rule, as deploy/ routes it
            }
        )
        async with console(oidc) as run, aiohttp.ClientSession() as http:
            site = f"{run.url}/console"
            assert run.sign_in == "", "no sign-in URL behind the ALB"
            operator = {"x-amzn-oidc-data": alb.token(groups=["tideway-operators"])}
            viewer = {"x-amzn-oidc-data": alb.token(groups=["readers"], sub="bob")}
            async with http.get(f"{site}/shards") as resp:
                assert resp.status == 401
            async with http.get(f"{site}/login", params={"token": "x"}) as resp:
                assert resp.status == 403
            forged = {"x-amzn-oidc-data": AlbSigner().token(groups=["tideway-operators"])}
            async with http.get(f"{site}/shards", headers=forged) as resp:
                assert resp.status == 401 and "bad signature" in await resp.text()
            async with http.get(f"{site}/dead-letters", headers=viewer) as resp:
                page = await resp.text()
                assert resp.status == 200 and 'id="role">viewer<' in page
            post = f"{site}/dead-letters/redrive"
            data = {"keys": key, "csrf_token": csrf_of(page)}
            async with http.post(post, data=data, headers=viewer) as resp:
                assert resp.status == 403
            async with http.get(f"{site}/dead-letters", headers=operator) as resp:
                page = await resp.text()
                assert 'id="role">operator<' in page and 'id="redrive"' in page
                assert (
                    'href="/console/shards"' in page
                    and 'action="/console/dead-letters/redrive"' in page
                )
            async with http.get(f"{site}/healthz") as resp:
                assert resp.status == 200, "the ALB's health check needs no sign-in"
            async with http.post(post, data={"keys": key}, headers=operator) as resp:
                assert resp.status == 403, "CSRF is checked for operators too"
            data = {"keys": key, "csrf_token": csrf_of(page)}
            async with http.post(post, data=data, headers=operator) as resp:
                assert resp.status not in (401, 403), "an operator with the token gets through"


def test_tideway_status_prints_the_shard_table_and_json(
    ready: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncio

    ids = asyncio.run(seed_fleet(ready))
    monkeypatch.setenv("TIDEWAY_STREAM", ready.stream)
    monkeypatch.setenv("TIDEWAY_BUCKET", ready.bucket)
    assert main(["status"]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[1].startswith("6 shards: 3 reading, 1 open intent, 1 unowned")
    assert sum(line.startswith("shardId-") for line in text.splitlines()) == 6
    assert main(["status", "--json"]) == 0
    doc = orjson.loads(capsys.readouterr().out)
    assert [s["shard_id"] for s in doc["shards"]] == ids
    assert doc["shards"][0]["children"] == ids[1:3]


async def test_status_watch_redraws_until_stopped(ready: Settings) -> None:
    import asyncio

    from service.console.top import CLEAR, status

    await seed_fleet(ready, shards=2)
    stop = asyncio.Event()
    frames: list[str] = []

    def write(text: str) -> None:
        frames.append(text)
        if len(frames) == 2:
            stop.set()

    await asyncio.wait_for(status(ready, stop, write, watch=0.05), 30)
    assert len(frames) == 2
    assert all(f.startswith(CLEAR) and "2 shards:" in f for f in frames)


def test_tideway_console_takes_a_port_and_announces_a_one_time_url() -> None:
    from service.cli import _parser
    from service.console.server import sign_in_url

    assert _parser().parse_args(["console", "--port", "0"]).port == 0
    assert sign_in_url("0.0.0.0", 8081, "t") == "http://127.0.0.1:8081/login?token=t"
    assert sign_in_url("10.0.0.5", 9000, "t", "/console") == (
        "http://10.0.0.5:9000/console/login?token=t"
    )
