"""The Replays page against moto: an operator starts a replay of a window of the stream and
watches it finish (rows under the side prefix, progress from the lease table); a replay
waiting on a claim is cancelled from the page, and one still running when the console stops
is cancelled with it; a bad window is refused in one line. (A viewer's refusal: test_pipelines_page.py.)"""

from __future__ import annotations

import asyncio
import re
import time

import aiohttp

from service.repair.claims import ClaimTable
from service.settings import Settings
from tests.conftest import Aws, object_keys, read_table
from tests.console_support import browser_session, console, csrf_of, signed_in

SIDE = "backfill/"


async def until(browser: aiohttp.ClientSession, url: str, state: str) -> str:
    """The Replays page once its newest job is in ``state`` (30 s at most)."""
    async with asyncio.timeout(30):
        while True:
            async with browser.get(url) as resp:
                page = await resp.text()
            if re.search(rf'<table id="jobs">\s*<tr>.*?</tr>\s*<tr class="{state}">', page, re.S):
                return page
            await asyncio.sleep(0.2)


async def test_an_operator_replays_a_window_from_the_page_and_watches_it_finish(
    aws: Aws, ready: Settings
) -> None:
    kinesis = aws.client("kinesis")
    start = time.time() - 5
    for n in range(20):
        line = b'{"message": "again-%d", "service": "api"}' % n
        kinesis.put_record(StreamName=ready.stream, Data=line, PartitionKey=f"k{n}")
    end = time.time() + 5
    async with console(ready) as run, browser_session() as browser:
        url = f"{run.url}/replays"
        page = await signed_in(browser, run, "/replays")
        assert "No replay started here." in page and "No replay progress recorded." in page
        form = {"csrf_token": csrf_of(page), "from": str(end), "to": str(start), "into": SIDE}
        async with browser.post(url, data=form) as resp:
            assert resp.status == 400
            assert '<p class="bad" id="problem">replay: --to is before --from</p>' in (
                await resp.text()
            )
        form |= {"from": "yesterday"}
        async with browser.post(url, data=form) as resp:
            assert resp.status == 400 and "replay: from: &#39;yesterday&#39; is neither" in (
                await resp.text()
            )

        form |= {"from": str(start), "to": str(end)}
        async with browser.post(url, data=form) as resp:
            assert resp.status == 200 and str(resp.url) == url  # 303 back to the page
        page = await until(browser, url, "finished")
        assert "records 20, rows 20" in page
        assert f"{SIDE}: 2 of 2 shards finished" in page
        assert '<meta http-equiv="refresh"' not in page, "nothing runs: no refresh"
    side = read_table(aws, ready.model_copy(update={"prefix": SIDE}))
    assert sorted(side.column("message").to_pylist()) == sorted(f"again-{n}" for n in range(20))
    assert object_keys(aws, ready.bucket, "logs/") == [], "the live table is untouched"


async def test_a_waiting_replay_is_cancelled_from_the_page_or_with_the_console(
    aws: Aws, ready: Settings
) -> None:
    """Another run holds the claim of shard 0 (and beats): the replay waits, shown running
    with a Cancel button; cancelling ends it; a second one ends when the console stops."""
    shard = aws.client("kinesis").list_shards(StreamName=ready.stream)["Shards"][0]["ShardId"]
    held = ready.model_copy(update={"lease_duration": 60.0})
    aws.client("dynamodb").put_item(
        TableName=ready.lease_table,
        Item={
            "shard_id": {"S": ClaimTable.item_key("replay", "held/", shard)},
            "owner": {"S": "another-run"},
            "epoch": {"N": "1"},
            "beats": {"N": "0"},
        },
    )
    async with console(held) as run, browser_session() as browser:
        url = f"{run.url}/replays"
        csrf = csrf_of(await signed_in(browser, run, "/replays"))
        form = {"csrf_token": csrf, "from": "0", "to": "1", "into": "held/", "shards": shard}
        async with browser.post(url, data=form) as resp:
            page = await resp.text()
        assert '<tr class="running">' in page and 'class="cancel"' in page
        assert '<meta http-equiv="refresh" content="2">' in page, "a running replay is watched"
        assert "another-run" in page  # the progress table names the claim's holder
        async with browser.post(url, data=form) as resp:
            assert resp.status == 400 and "a replay into held/ is already running" in (
                await resp.text()
            )
        cancel = {"csrf_token": csrf, "into": "held/"}
        async with browser.post(f"{url}/cancel", data=cancel) as resp:
            assert resp.status == 200
        page = await until(browser, url, "cancelled")
        assert "cancelled; a rerun resumes where it stopped" in page
        async with browser.post(f"{url}/cancel", data=cancel) as resp:
            assert resp.status == 404

        async with browser.post(url, data=form) as resp:
            assert '<tr class="running">' in await resp.text()
    # The console stopped (its context exited, no error): the running replay went with it.
    assert object_keys(aws, ready.bucket, "held/") == []
