"""The aiohttp application of ``tideway serve``: the /ingest and OTLP/HTTP routes, health
and metrics, and the assembly of every route family (service/ingest/handling.py holds what
they share; elastic_http.py and hec_http.py their own routes)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial

from aiohttp import hdrs, web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.envelope import ContentType
from service.errors import RequestError
from service.ingest import elastic_http, hec_http, otlp
from service.ingest.handling import (
    STATE,
    IngestState,
    charge_lines,
    errors_and_auth,
    is_blank,
    json_text,
    off_loop,
    parse_inline,
    receive,
    store,
)
from service.ingest.lines import (
    ParsedLines,
    body_shape,
    count_byte,
    parse_json,
    parse_ndjson,
    parse_text,
)
from service.telemetry.http import request_telemetry

log = logging.getLogger(__name__)


_PARSERS: dict[str, tuple[Callable[[bytes, int, int], ParsedLines], ContentType]] = {
    "application/x-ndjson": (parse_ndjson, ContentType.NDJSON),
    "application/ndjson": (parse_ndjson, ContentType.NDJSON),
    "application/jsonl": (parse_ndjson, ContentType.NDJSON),
    "application/json": (parse_json, ContentType.JSON),
    "text/plain": (parse_text, ContentType.TEXT),
}
_SHAPES = {
    "json": _PARSERS["application/json"],
    "ndjson": _PARSERS["application/x-ndjson"],
    "text": _PARSERS["text/plain"],
}
# Labels that say nothing about the body: no header at all, and libcurl's default for a POST
# (syslog-ng http() without headers, curl -d). Their bodies are sniffed (docs/http-api.md).
_UNLABELLED = "application/x-www-form-urlencoded"


def _ingest_mime(request: web.Request) -> str:
    """The body's label, "" when it has none; 415 for a label /ingest cannot read."""
    if hdrs.CONTENT_TYPE not in request.headers:
        return ""
    mime = request.content_type.lower()
    if mime not in _PARSERS and mime != _UNLABELLED:
        raise RequestError(
            415,
            f"unsupported Content-Type {mime!r}; use application/x-ndjson, application/json "
            "or text/plain",
        )
    return mime


def _ingest_parser(
    mime: str, body: bytes, max_line: int
) -> tuple[Callable[[bytes, int, int], ParsedLines], ContentType]:
    """The parser of a labelled body, except that ``application/json`` holding several JSON
    lines is NDJSON and an unlabelled body is sniffed (lines.body_shape)."""
    if mime in _PARSERS and mime != "application/json":
        return _PARSERS[mime]
    return _SHAPES[body_shape(body, max_line, declared_json=mime == "application/json")]


def _items_at_most(mime: str, body: bytes, newlines: int) -> int:
    """The most lines or JSON elements ``body`` may hold: what bounds the work of parsing it
    (a body that may be one JSON array holds up to an element per comma)."""
    if mime in _PARSERS and mime != "application/json":
        return newlines + 1
    return newlines + 1 + count_byte(body, b",")


async def ingest(request: web.Request) -> web.StreamResponse:
    """POST /ingest: NDJSON, a JSON array or object, or text; per-line errors."""
    state = request.app[STATE]
    mime = _ingest_mime(request)
    with state.budget.reservation() as held:
        body = await receive(request, held)
        limit, max_line = state.max_lines, state.limits.max_line
        # Counted once, on the loop, only for a body that may be parsed there.
        newlines = count_byte(body, b"\n") if parse_inline(body, 0) else None

        def job(body: bytes) -> tuple[ParsedLines, ContentType]:
            if is_blank(body):
                raise RequestError(400, "empty body: send at least one log line")
            parse, ctype = _ingest_parser(mime, body, max_line)
            if ctype is ContentType.JSON:
                charge_lines(held, body, limit, b"{")
            else:
                charge_lines(held, body, limit, count=newlines)
            return parse(body, max_line, limit), ctype

        if newlines is not None and parse_inline(body, _items_at_most(mime, body, newlines)):
            parsed, ctype = job(body)
        else:
            parsed, ctype = await off_loop(state, partial(job, body))
        del body
        await store(request, parsed.lines, parsed.rejected_by_reason, ctype, "http")
    status = 400 if parsed.rejected and not parsed.lines else 200
    return web.json_response(parsed.answer(), status=status, dumps=json_text)


async def otlp_logs(request: web.Request) -> web.StreamResponse:
    """POST /v1/logs: OTLP/HTTP ExportLogsServiceRequest, protobuf or JSON."""
    state = request.app[STATE]
    mime = request.content_type.lower()
    if mime not in ("application/x-protobuf", "application/json"):
        raise RequestError(
            415,
            f"unsupported Content-Type {mime!r}; use application/x-protobuf or application/json",
        )
    as_json = mime == "application/json"
    with state.budget.reservation() as held:
        body = await receive(request, held)
        limit, max_line = state.max_lines, state.limits.max_line

        def job(body: bytes) -> otlp.OtlpLines:
            if as_json:  # decoded whole: each "{" becomes a dict and a message
                held.take(len(body) + otlp.json_objects(body) * otlp.JSON_OBJECT_COST)
                return otlp.parse_json(body, max_line)
            held.take(len(body))  # the normalized lines
            return otlp.parse_protobuf(body, max_line, limit)

        parsed = await off_loop(state, partial(job, body))
        del body
        rejected = {"otlp_invalid": parsed.rejected} if parsed.rejected else {}
        await store(request, parsed.lines, rejected, ContentType.OTLP, "otlp")
    if parsed.rejected and not parsed.lines:
        raise RequestError(400, "; ".join(parsed.reasons) or "no log records")
    return web.Response(
        body=otlp.export_response(parsed, as_json),
        content_type="application/json" if as_json else "application/x-protobuf",
    )


async def healthz(request: web.Request) -> web.StreamResponse:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    if state.draining:
        return web.json_response({"ready": False, "reason": "draining"}, status=503)
    if not state.kinesis_ok:
        return web.json_response({"ready": False, "reason": "kinesis unreachable"}, status=503)
    return web.json_response({"ready": True})


async def metrics_page(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    registry = state.exposition or state.producer.metrics.registry
    return web.Response(
        body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


def build_app(state: IngestState) -> web.Application:
    """The ingest application; ``client_max_size`` is ours to enforce, so aiohttp's is lifted."""
    app = web.Application(
        middlewares=[request_telemetry(state.producer.metrics), errors_and_auth],
        client_max_size=state.limits.max_body + 1,
    )
    app[STATE] = state
    app.router.add_post("/ingest", ingest)
    app.router.add_post("/v1/logs", otlp_logs)
    elastic_http.add_routes(app)
    hec_http.add_routes(app)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_page)
    return app
