"""The Elasticsearch routes of ``serve`` (I/O): ``_bulk`` and the setup probes Filebeat,
Logstash and Vector make with default settings (service/ingest/elastic.py parses)."""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import replace
from functools import partial

import orjson
from aiohttp import web

from service.envelope import ContentType
from service.ingest import elastic
from service.ingest.body import read_body
from service.ingest.handling import STATE, charge_lines, off_loop, receive, store

log = logging.getLogger(__name__)
# Template and ILM bodies are acknowledged and dropped: a few KB in practice.
_SETUP_BODY_LIMIT = 64 * 1024


def _es_content_type(request: web.Request) -> str:
    """Mirror the client's compatibility mode the way Elasticsearch does."""
    accept = request.headers.get("Accept", "")
    if "compatible-with=" in accept:
        version = accept.rpartition("compatible-with=")[2].strip()[:1]
        if version.isdigit():
            return f"application/vnd.elasticsearch+json;compatible-with={version}"
    return "application/json"


def _es_json(request: web.Request, body: object, status: int = 200) -> web.Response:
    response = web.Response(body=orjson.dumps(body), status=status)
    response.headers["Content-Type"] = _es_content_type(request)
    return response


async def es_bulk(request: web.Request) -> web.StreamResponse:
    """POST|PUT /_bulk and /{index}/_bulk: index and create actions, answered per item."""
    state = request.app[STATE]
    started = time.perf_counter()
    with state.budget.reservation() as held:
        body = await receive(request, held)
        index, limit, max_line = (
            request.match_info.get("index", ""),
            state.max_lines,
            state.limits.max_line,
        )

        def job(body: bytes) -> elastic.BulkItems:
            charge_lines(held, body, 2 * limit + 1)
            return elastic.parse_bulk(body, index, max_line, os.urandom(6).hex(), limit)

        items = await off_loop(state, partial(job, body))
        del body
        await store(
            request, items.lines, items.rejected_by_reason, ContentType.ES_BULK, "elasticsearch"
        )
    took = round((time.perf_counter() - started) * 1000)
    # Written a piece at a time: the answer to 500,000 actions is tens of MB.
    response = web.StreamResponse()
    response.content_type = _es_content_type(request)
    await response.prepare(request)
    for part in elastic.bulk_answer_parts(items, took):
        await response.write(part)
    await response.write_eof()
    return response


async def es_root(request: web.Request) -> web.StreamResponse:
    """GET / as Elasticsearch answers it (agents read ``version.number``)."""
    settings = request.app[STATE].settings
    return _es_json(
        request,
        elastic.root_info(settings.es_version, settings.es_cluster_name, socket.gethostname()),
    )


async def es_license(request: web.Request) -> web.StreamResponse:
    """GET /_license: Logstash and Beats ask before their first bulk."""
    return _es_json(
        request,
        {"license": {"status": "active", "type": "basic", "mode": "basic", "uid": "tideway"}},
    )


async def es_index_template(request: web.Request) -> web.StreamResponse:
    """GET/HEAD /_index_template/{name}: Filebeat and Logstash load a template unless one
    exists; Tideway has no indices, so every template "exists" and nothing is loaded."""
    name = request.match_info["name"]
    return _es_json(request, {"index_templates": [{"name": name, "index_template": {}}]})


async def es_ilm_policy(request: web.Request) -> web.StreamResponse:
    """GET /_ilm/policy/{name}: Beats check their lifecycle policy before the first bulk."""
    return _es_json(request, {request.match_info["name"]: {"version": 1, "policy": {}}})


async def es_acknowledged(request: web.Request) -> web.StreamResponse:
    """PUT of a template or policy: acknowledged, with nothing to store (S3 is the index).
    Read within a small limit and the byte budget (60 parallel 16 MiB PUTs once took 1.3 GB)."""
    state = request.app[STATE]
    limits = replace(
        state.limits, max_body=_SETUP_BODY_LIMIT, max_decompressed=16 * _SETUP_BODY_LIMIT
    )
    with state.budget.reservation() as held:
        await read_body(request, limits, held, state.pool)
    return _es_json(request, {"acknowledged": True})


async def es_cluster_health(request: web.Request) -> web.StreamResponse:
    """GET /_cluster/health: Vector's default healthcheck."""
    state = request.app[STATE]
    status = "green" if state.kinesis_ok and not state.draining else "red"
    return _es_json(request, {"cluster_name": state.settings.es_cluster_name, "status": status})


async def es_xpack(request: web.Request) -> web.StreamResponse:
    """GET /_xpack: feature probe of Beats and Logstash (ILM reported available)."""
    return _es_json(request, {"features": {"ilm": {"available": True, "enabled": True}}})


async def _elastic_product(request: web.Request, response: web.StreamResponse) -> None:
    # DESIGN §10: every response carries it, so Elasticsearch clients accept even 404s.
    response.headers["X-Elastic-Product"] = "Elasticsearch"


def add_routes(app: web.Application) -> None:
    """The Elasticsearch subset's routes, and X-Elastic-Product on every response."""
    app.router.add_get("/", es_root)
    app.router.add_get("/_license", es_license)
    app.router.add_get("/_xpack", es_xpack)
    app.router.add_get("/_cluster/health", es_cluster_health)
    app.router.add_get("/_index_template/{name}", es_index_template)
    app.router.add_put("/_index_template/{name}", es_acknowledged)
    app.router.add_get("/_ilm/policy/{name}", es_ilm_policy)
    app.router.add_put("/_ilm/policy/{name}", es_acknowledged)
    app.on_response_prepare.append(_elastic_product)
    for method in ("POST", "PUT"):
        app.router.add_route(method, "/_bulk", es_bulk)
        app.router.add_route(method, "/{index}/_bulk", es_bulk)
