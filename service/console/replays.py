"""The Replays page (I/O): every replay's progress from the lease table, the replays this
console runs, and the operator's start and cancel."""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

from aiohttp import web

from service.console.guard import PRINCIPAL
from service.console.page import CONSOLE, render
from service.errors import TidewayError
from service.repair.replay import Window, parse_instant, replay_progress

log = logging.getLogger(__name__)


async def replays(request: web.Request) -> web.StreamResponse:
    return await _page(request)


async def _page(
    request: web.Request, status: int = 200, problem: str = "", form: Any = None
) -> web.StreamResponse:
    c = request.app[CONSOLE]
    progress = await replay_progress(c.dynamodb, c.settings)
    prefixes: dict[str, dict[str, int]] = defaultdict(lambda: {"shards": 0, "finished": 0})
    for p in progress:
        prefixes[p.into]["shards"] += 1
        prefixes[p.into]["finished"] += p.finished
    return render(
        request,
        "replays.html",
        status=status,
        title="Replays",
        page="replays",
        jobs=c.replays.jobs,
        refresh=c.replays.running,
        progress=progress,
        prefixes=sorted(prefixes.items()),
        problem=problem,
        form=form or {},
    )


async def start_replay(request: web.Request) -> web.StreamResponse:
    """POST: start a replay of the form's window (the guard let only an operator in)."""
    c = request.app[CONSOLE]
    form = await request.post()
    try:
        window = Window(
            _instant(form, "from"),
            _instant(form, "to"),
            str(form.get("into", "")).strip(),
            tuple(s for s in str(form.get("shards", "")).replace(",", " ").split() if s),
        )
        c.replays.start(window, request[PRINCIPAL].subject)
    except TidewayError as exc:
        return await _page(request, 400, str(exc), form)
    raise web.HTTPSeeOther(c.settings.console_base_path + "/replays")


async def cancel_replay(request: web.Request) -> web.StreamResponse:
    """POST: cancel the running replay into the form's ``into``."""
    c = request.app[CONSOLE]
    into = str((await request.post()).get("into", ""))
    if not c.replays.cancel(into):
        return await _page(request, 404, f"no replay into {into!r} is running in this console")
    log.info("console: replay into %s cancelled by %s", into, request[PRINCIPAL].subject)
    raise web.HTTPSeeOther(c.settings.console_base_path + "/replays")


def _instant(form: Any, name: str) -> float:
    value = str(form.get(name, "")).strip()
    if not value:
        raise TidewayError(f"replay: {name}: give a time (RFC 3339 or epoch seconds)")
    try:
        return parse_instant(value)
    except TidewayError as exc:
        raise TidewayError(f"replay: {name}: {exc}") from None
