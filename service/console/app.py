"""The console's routes (I/O): pages rendered on the server from the lease table, the
workers' /status and the dead-letter prefix; the redrive action (operators only). The
Replays and Pipelines pages live in replays.py and pipelines.py."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from service.console.charts import charts_json, overview_charts
from service.console.guard import PRINCIPAL
from service.console.inspect import inspect_entry
from service.console.page import CONSOLE, Console, render
from service.console.pipelines import pipelines, store_pipelines
from service.console.replays import cancel_replay, replays, start_replay
from service.console.rows import shard_rows_html
from service.console.sampler import record
from service.console.session import SESSION_COOKIE, SESSION_SECONDS, Principal
from service.console.shards import ShardView, filter_rows
from service.console.sources import MAX_OPENED, WorkerStatus, scan_fleet
from service.console.tables import TableView, overview_tables, with_checkpoints
from service.errors import TidewayError
from service.repair.redrive import RedriveReport, redrive

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
PAGE_ROWS = 1000
OVERVIEW_DAYS = 7


async def _fleet(c: Console) -> tuple[ShardView, list[WorkerStatus], float]:
    """The shard view (workers' lags included), the workers' /status, and the ms it took.
    The read is also a sample of the charts' history when the last is an interval old."""
    started = time.perf_counter()
    fleet = await scan_fleet(c.dynamodb, c.settings.lease_table, c.http, c.settings.console_workers)
    now_ms = int(time.time() * 1000)
    last = c.history.samples[-1].at_ms if c.history.samples else 0
    if now_ms - last >= c.settings.console_sample_interval * 1000:
        record(c.history, fleet, now_ms)
    return fleet.view, fleet.statuses, (time.perf_counter() - started) * 1000


async def overview(request: web.Request) -> web.StreamResponse:
    c = request.app[CONSOLE]
    (view, statuses, read_ms), (cw, cw_problem) = await asyncio.gather(_fleet(c), c.metrics.read())
    charts = overview_charts(cw, c.history, c.settings.console_sample_interval)
    dead = []
    for date in (await c.dead.dates())[:OVERVIEW_DAYS]:
        objects, more = await c.dead.objects(date)
        dead.append(
            {
                "date": date,
                "objects": len(objects),
                "more": more,
                "bytes": sum(o.size for o in objects),
            }
        )
    tables: list[TableView] = []
    tables_problem = ""
    if c.settings.table_format == "iceberg":
        tables, tables_problem = await overview_tables(c.settings, c.s3)
        checkpoints = {r.shard_id: r.checkpoint for r in view.shards}
        tables = [with_checkpoints(t, checkpoints) for t in tables]
    return render(
        request,
        "overview.html",
        title="Overview",
        page="overview",
        summary=view.summary(),
        workers=view.workers,
        statuses=statuses,
        dead=dead,
        table=c.settings.lease_table,
        table_format=c.settings.table_format,
        tables=tables,
        tables_problem=tables_problem,
        read_ms=read_ms,
        charts=charts,
        charts_data=charts_json(charts),
        cw_problem=cw_problem,
    )


async def shards(request: web.Request) -> web.StreamResponse:
    c = request.app[CONSOLE]
    view, _, read_ms = await _fleet(c)
    q = request.query.get("q", "")
    rows = filter_rows(view.shards, q)
    pages = max(1, -(-len(rows) // PAGE_ROWS))
    try:
        page_no = min(pages, max(1, int(request.query.get("page", "1"))))
    except ValueError:
        raise web.HTTPBadRequest(text="page: a whole number, from 1") from None
    shown = rows[(page_no - 1) * PAGE_ROWS : page_no * PAGE_ROWS]
    return render(
        request,
        "shards.html",
        title="Shards",
        page="shards",
        rows_html=shard_rows_html(shown),
        shown=len(shown),
        total=len(view.shards),
        q=q,
        page_no=page_no,
        pages=pages,
        table=c.settings.lease_table,
        read_ms=read_ms,
    )


async def dead_letters(request: web.Request) -> web.StreamResponse:
    c = request.app[CONSOLE]
    dead = c.dead
    dates = await dead.dates()
    date = request.query.get("date") or (dates[0] if dates else "")
    if date and date not in dates:
        raise web.HTTPNotFound(text=f"no dead letters for {date!r}")
    reason = request.query.get("reason", "").strip()
    objects, more = await dead.objects(date) if date else ([], False)
    opened = objects[:MAX_OPENED]
    contents = await asyncio.gather(*(dead.entries(o.key) for o in opened))
    rows: list[dict[str, Any]] = []
    reasons: dict[str, int] = {}
    for obj, entries in zip(opened, contents, strict=True):
        first = True
        for index, entry in enumerate(entries):
            why = entry.get("reason", "?") if isinstance(entry, dict) else "unreadable line"
            reasons[str(why)] = reasons.get(str(why), 0) + 1
            if reason and reason.lower() not in str(why).lower():
                continue
            fields = entry if isinstance(entry, dict) else {}
            rows.append(
                {
                    "key": obj.key,
                    "name": obj.key.rpartition("/")[2] if first else "",
                    "first": first,
                    "index": index,
                    "shard": fields.get("kinesis_shard_id", ""),
                    "seq": fields.get("kinesis_sequence_number", ""),
                    "reason": why,
                    "arrival": fields.get("arrival_time", ""),
                }
            )
            first = False
    return render(
        request,
        "dead_letters.html",
        title="Dead letters",
        page="dead",
        dates=dates,
        date=date,
        reason=reason,
        reasons=sorted(reasons.items(), key=lambda kv: -kv[1]),
        objects=objects,
        more=more,
        opened=len(opened),
        entries=rows,
    )


async def dead_letter_record(request: web.Request) -> web.StreamResponse:
    c = request.app[CONSOLE]
    key = request.query.get("key", "")
    if not c.dead.owns(key):
        raise web.HTTPBadRequest(text=f"key: {key!r} is not a dead-letter object of this bucket")
    try:
        index = int(request.query.get("index", "0"))
    except ValueError:
        raise web.HTTPBadRequest(text="index: a whole number, from 0") from None
    try:
        entries = await c.dead.entries(key)
    except c.s3.exceptions.NoSuchKey:
        raise web.HTTPNotFound(text=f"no object {key}") from None
    ins, problem = None, ""
    entry = entries[index] if 0 <= index < len(entries) else None
    if entry is None:
        problem = f"the object holds {len(entries)} entries; there is no #{index}"
    elif isinstance(entry, str):
        problem = f"entry #{index} is not a JSON object: {entry[:200]}"
    else:
        ins = inspect_entry(entry, c.decoders)
    return render(
        request,
        "record.html",
        title="Dead letter",
        page="dead",
        key=key,
        index=index,
        ins=ins,
        problem=problem,
    )


def _report_rows(report: RedriveReport) -> list[tuple[str, Any]]:
    return list(dataclasses.asdict(report).items())


async def redrive_action(request: web.Request) -> web.StreamResponse:
    """POST: redrive the chosen dead-letter objects (the guard let only an operator in)."""
    c = request.app[CONSOLE]
    keys = [str(k) for k in (await request.post()).getall("keys", [])]
    if not keys:
        raise web.HTTPBadRequest(text="keys: choose at least one dead-letter object")
    bad = [k for k in keys if not c.dead.owns(k)]
    if bad:
        raise web.HTTPBadRequest(text=f"keys: {bad[0]!r} is not a dead-letter object")
    log.info("console: redrive of %d objects by %s", len(keys), request[PRINCIPAL].subject)
    problem, rows = "", []
    try:
        rows = _report_rows(await redrive(c.settings, keys=keys))
    except TidewayError as exc:  # e.g. a claim lost midway: one line, the rerun resumes
        problem = str(exc)
    return render(
        request,
        "redrive.html",
        status=500 if problem else 200,
        title="Redrive",
        page="dead",
        keys=keys,
        report=rows,
        problem=problem,
    )


async def login(request: web.Request) -> web.StreamResponse:
    """GET /login?token=…: spend the one-time token, set the session cookie, go home."""
    c = request.app[CONSOLE]
    if c.login is None or not c.login.redeem(request.query.get("token")):
        return web.Response(status=403, text="403: this sign-in token is wrong or already used\n")
    principal = Principal("local", c.settings.console_local_role)
    base = c.settings.console_base_path
    response = web.HTTPFound(base + "/")
    response.set_cookie(
        SESSION_COOKIE,
        c.guard.sessions.issue(principal, time.time()),
        max_age=SESSION_SECONDS,
        httponly=True,
        samesite="Strict",
        path=base or "/",
        secure=request.secure,
    )
    log.info("console: signed in with the one-time token as %s", principal.role)
    return response


async def healthz(request: web.Request) -> web.StreamResponse:
    return web.json_response({"status": "ok"})


@web.middleware
async def _headers(request: web.Request, handler: Any) -> web.StreamResponse:
    response: web.StreamResponse = await handler(request)
    response.headers.setdefault(
        "Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'"
    )
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    return response


def build_console(console: Console) -> web.Application:
    """The console's routes under ``console_base_path`` (the ALB's path rule, e.g. /console)."""
    base = console.settings.console_base_path
    app = web.Application(middlewares=[_headers, console.guard.middleware])
    app[CONSOLE] = console
    app.router.add_get(base + "/", overview)
    app.router.add_get(base + "/shards", shards)
    app.router.add_get(base + "/dead-letters", dead_letters)
    app.router.add_get(base + "/dead-letters/record", dead_letter_record)
    app.router.add_post(base + "/dead-letters/redrive", redrive_action)
    app.router.add_get(base + "/replays", replays)
    app.router.add_post(base + "/replays", start_replay)
    app.router.add_post(base + "/replays/cancel", cancel_replay)
    app.router.add_get(base + "/pipelines", pipelines)
    app.router.add_post(base + "/pipelines", store_pipelines)
    app.router.add_get(base + "/login", login)
    app.router.add_get(base + "/healthz", healthz)
    app.router.add_static(base + "/static/", STATIC)
    if base:
        app.router.add_get(base, _to_home)
    return app


async def _to_home(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound(request.app[CONSOLE].settings.console_base_path + "/")
