"""The Pipelines page against moto: the stored document's versions and text, the operator's
editor that validates with the consumers' loader and stores a new version as
``tideway pipelines put`` does, a bad document refused in one line, a viewer who edits
nothing (on the Replays page either)."""

from __future__ import annotations

import html
import re

from service.aws import aws_clients
from service.consume.reload import store_document, stored_document
from service.pipeline.config import PipelineConfigError, load_pipelines
from service.settings import Settings
from tests.console_support import browser_session, console, csrf_of, signed_in

ROUTES = '[[pipeline]]\nname = "api"\nmatch = \'service == "api"\'\nparse = "json"\n'
BAD = '[[pipeline]]\nname = "Api Logs"\n'


async def stored(settings: Settings) -> str | None:
    async with aws_clients("dynamodb") as aws:
        return await stored_document(aws.dynamodb, settings.lease_table)


def shown(page: str, tag: str) -> str:
    """The text of the page's first ``tag`` element, as the browser shows it."""
    found = re.search(rf"<{tag}[^>]*>(.*?)</{tag}>", page, re.S)
    assert found, f"no <{tag}> on the page"
    text = html.unescape(found.group(1))
    return text.removeprefix("\n") if tag in ("pre", "textarea") else text  # as HTML parses


def reason_of(document: str) -> str:
    try:
        load_pipelines(document)
    except PipelineConfigError as exc:
        return str(exc)
    raise AssertionError("the document loads")


async def test_an_operator_stores_a_new_version_and_a_bad_one_is_refused_in_one_line(
    ready: Settings,
) -> None:
    async with console(ready) as run, browser_session() as browser:
        url = f"{run.url}/pipelines"
        page = await signed_in(browser, run, "/pipelines")
        assert "No document stored" in page and 'id="editor"' in page
        csrf = csrf_of(page)

        async with browser.post(url, data={"csrf_token": csrf, "document": BAD}) as resp:
            assert resp.status == 400
            page = await resp.text()
        refused = f'<p class="bad" id="refused">Refused, nothing stored: {reason_of(BAD)}</p>'
        assert html.unescape(refused) in html.unescape(page)
        assert shown(page, "textarea") == BAD, "the draft stays in the editor"
        assert await stored(ready) is None

        # A browser sends the textarea with CRLF line ends; the stored text has LF.
        typed = ROUTES.replace("\n", "\r\n")
        async with browser.post(url, data={"csrf_token": csrf, "document": typed}) as resp:
            assert resp.status == 200 and resp.url.path == "/pipelines"  # 303 to the page
            page = await resp.text()
        version = load_pipelines(ROUTES).version
        assert f'id="stored-now">Stored version {version}.' in page
        assert f'<b id="version">{version}</b>' in page
        assert shown(page, "pre") == ROUTES
        assert await stored(ready) == ROUTES

        async with browser.post(url, data={"csrf_token": csrf, "document": BAD}) as resp:
            assert resp.status == 400
        assert await stored(ready) == ROUTES, "a refused document keeps the last good one"

        newer = ROUTES + 'redact = ["email"]\n'
        async with browser.post(url, data={"csrf_token": csrf, "document": newer}) as resp:
            page = await resp.text()
        rows = re.findall(r'<td class="seq">(\w+)</td><td>(.*?)</td>', page)
        older = re.search(r'href="/pipelines\?at=(\d+)"', page)
        assert [v for v, _ in rows] == [load_pipelines(newer).version, version]
        assert rows[0][1] == "current" and older, "newest first, the older one can be loaded"
        async with browser.get(url, params={"at": older.group(1)}) as resp:
            page = await resp.text()
        assert shown(page, "textarea") == ROUTES and f"(version {version} of" in page
        async with browser.get(url, params={"at": "1"}) as resp:
            assert resp.status == 404
        async with browser.post(url, data={"document": ROUTES + "\n"}) as resp:
            assert resp.status == 403 and "CSRF" in await resp.text()


async def test_a_viewer_reads_pipelines_and_replays_but_changes_neither(ready: Settings) -> None:
    async with aws_clients("dynamodb") as aws:
        await store_document(aws.dynamodb, ready.lease_table, ROUTES)
    viewer = ready.model_copy(update={"console_local_role": "viewer"})
    async with console(viewer) as run, browser_session() as browser:
        page = await signed_in(browser, run, "/pipelines")
        assert load_pipelines(ROUTES).version in page
        assert 'id="editor"' not in page and "needs operator rights" in page
        form = {"csrf_token": "any", "document": BAD}
        async with browser.post(f"{run.url}/pipelines", data=form) as resp:
            assert resp.status == 403 and "operator rights" in await resp.text()

        async with browser.get(f"{run.url}/replays") as resp:
            page = await resp.text()
        assert 'id="start"' not in page and "needs operator rights" in page
        form = {"csrf_token": "any", "from": "0", "to": "1", "into": "backfill/"}
        async with browser.post(f"{run.url}/replays", data=form) as resp:
            assert resp.status == 403 and "operator rights" in await resp.text()
        async with browser.get(f"{run.url}/replays") as resp:
            assert "No replay started here." in await resp.text()
    assert await stored(ready) == ROUTES
