"""Splunk HTTP Event Collector routes of ``tideway serve`` (I/O): the same keys, limits, byte
budget and durability as ``/ingest`` (200 only once every event is in Kinesis), answered in
HEC's dialect. Parsing and answer bodies are pure, in ``service.ingest.hec``.

Acknowledgements are synchronous: a 200 means durable. A request naming a channel
(``X-Splunk-Request-Channel`` or ``?channel=``) gets an ``ackId`` for senders that run with
useACK, and ``/services/collector/ack`` reports every id asked about as acknowledged.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import replace
from functools import partial

import orjson
from aiohttp import web

from service.envelope import ContentType
from service.ingest import hec
from service.ingest.body import read_body
from service.ingest.handling import STATE, charge_lines, off_loop, receive, store

# HEC ackIds, per process: an ack is only a formality here (a 200 meant durable).
_ACK_IDS = itertools.count()
# An ack query is a short list of ids.
_ACK_BODY_LIMIT = 64 * 1024


def _dumps(value: object) -> str:
    return orjson.dumps(value).decode()


async def hec_event(request: web.Request) -> web.StreamResponse:
    """POST /services/collector[/event[/1.0]]: concatenated HEC event objects."""
    return await _hec(request, hec.parse_events, b"{")


async def hec_raw(request: web.Request) -> web.StreamResponse:
    """POST /services/collector/raw[/1.0]: lines of text, metadata from the query string."""
    return await _hec(request, hec.parse_raw, b"\n")


async def _hec(
    request: web.Request,
    parse: Callable[[bytes, int, int, Mapping[str, str]], hec.HecLines],
    marker: bytes,
) -> web.StreamResponse:
    """Parse, store durably, then answer as HEC does (an ``ackId`` when a channel is named)."""
    state = request.app[STATE]
    meta = hec.query_meta(request.query)
    try:
        with state.budget.reservation() as held:
            body = await receive(request, held)
            limit, max_line = state.max_lines, state.limits.max_line

            def job(body: bytes) -> hec.HecLines:
                charge_lines(held, body, limit, marker)
                return parse(body, max_line, limit, meta)

            parsed = await off_loop(state, partial(job, body))
            del body
            await store(request, parsed.lines, {}, ContentType.NDJSON, "hec")
    except hec.HecError as exc:
        state.producer.metrics.lines_rejected.labels("hec_invalid").inc()
        return web.json_response(hec.hec_error_body(exc), status=exc.status, dumps=_dumps)
    answer: dict[str, object] = dict(hec.SUCCESS)
    if hec.channel(request.headers, request.query):
        answer["ackId"] = next(_ACK_IDS)
    return web.json_response(answer, dumps=_dumps)


async def hec_ack(request: web.Request) -> web.StreamResponse:
    """POST /services/collector/ack: every id is acknowledged (a 200 meant durable)."""
    state = request.app[STATE]
    limits = replace(state.limits, max_body=_ACK_BODY_LIMIT, max_decompressed=_ACK_BODY_LIMIT)
    with state.budget.reservation() as held:
        body = await read_body(request, limits, held, state.pool)
    try:
        return web.json_response(hec.ack_answer(body), dumps=_dumps)
    except hec.HecError as exc:
        return web.json_response(hec.hec_error_body(exc), status=exc.status, dumps=_dumps)


async def hec_health(request: web.Request) -> web.StreamResponse:
    """GET /services/collector/health: 200 code 17, or 503 code 18 while not ready."""
    state = request.app[STATE]
    if state.draining or not state.kinesis_ok:
        return web.json_response(hec.UNHEALTHY, status=503, dumps=_dumps)
    return web.json_response(hec.HEALTHY, dumps=_dumps)


def add_routes(app: web.Application) -> None:
    """Register the HEC routes on the ingest application."""
    for path in ("", "/event", "/event/1.0"):
        app.router.add_post(hec.PREFIX + path, hec_event)
    for path in ("/raw", "/raw/1.0"):
        app.router.add_post(hec.PREFIX + path, hec_raw)
    app.router.add_post(hec.PREFIX + "/ack", hec_ack)
    for path in ("/health", "/health/1.0"):
        app.router.add_get(hec.PREFIX + path, hec_health)
