"""The aiohttp application of ``tideway serve``: routes, auth, limits, answers (I/O)."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.envelope import ContentType
from service.errors import KinesisUnavailableError, OverloadedError, RequestError
from service.ingest.auth import Caller, authenticate, presented_key
from service.ingest.body import BodyLimits, read_body
from service.ingest.lines import ParsedLines, parse_json, parse_ndjson, parse_text
from service.ingest.packer import Header
from service.ingest.producer import Producer
from service.settings import Settings

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


@dataclass
class IngestState:
    """Shared by every request of one server."""

    settings: Settings
    producer: Producer
    limits: BodyLimits
    draining: bool = False
    kinesis_ok: bool = True
    started: float = field(default_factory=time.monotonic)


STATE: web.AppKey[IngestState] = web.AppKey("state", IngestState)
CALLER: web.RequestKey[Caller] = web.RequestKey("caller", Caller)


def json_error(status: int, reason: str, **headers: str) -> web.Response:
    return web.json_response({"error": reason}, status=status, headers=headers or None)


@web.middleware
async def errors_and_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Authenticate, time and count every request; map refusals to precise JSON answers."""
    state = request.app[STATE]
    metrics = state.producer.metrics
    route = (
        request.match_info.route.resource.canonical
        if request.match_info.route.resource
        else "unmatched"
    )
    started = time.perf_counter()
    try:
        if request.path not in PUBLIC_PATHS and request.method != "GET":
            caller = authenticate(state.settings.api_keys, presented_key(request))
            if caller is None:
                raise web.HTTPUnauthorized(
                    text='{"error":"unauthorized"}', content_type="application/json"
                )
            request[CALLER] = caller
        response = await handler(request)
    except RequestError as exc:
        response = json_error(exc.status, exc.reason)
    except OverloadedError as exc:
        response = json_error(
            503, exc.reason, **{"Retry-After": str(max(1, round(exc.retry_after)))}
        )
    except KinesisUnavailableError as exc:
        response = json_error(503, str(exc), **{"Retry-After": "2"})
    except web.HTTPException as exc:
        response = exc
    metrics.requests.labels(route, str(response.status)).inc()
    metrics.request_seconds.labels(route).observe(time.perf_counter() - started)
    return response


_PARSERS: dict[str, tuple[Callable[[bytes, int], ParsedLines], ContentType]] = {
    "application/x-ndjson": (parse_ndjson, ContentType.NDJSON),
    "application/ndjson": (parse_ndjson, ContentType.NDJSON),
    "application/jsonl": (parse_ndjson, ContentType.NDJSON),
    "application/json": (parse_json, ContentType.JSON),
    "text/plain": (parse_text, ContentType.TEXT),
}


async def store(request: web.Request, parsed: ParsedLines, ctype: ContentType, source: str) -> None:
    """Send the accepted lines and return once they are durable in Kinesis."""
    state = request.app[STATE]
    metrics = state.producer.metrics
    for kind, count in parsed.rejected_by_reason.items():
        metrics.lines_rejected.labels(kind).inc(count)
    if not parsed.lines:
        return
    caller: Caller = request.get(CALLER) or Caller()
    header = Header(ctype, source, caller.service)
    await state.producer.submit(parsed.lines, header, request.headers.get("traceparent", ""))
    metrics.lines_accepted.inc(len(parsed.lines))


def lines_answer(parsed: ParsedLines) -> web.Response:
    """200 with counts; 400 when there were lines and every one was invalid."""
    status = 400 if parsed.rejected and not parsed.lines else 200
    return web.json_response(parsed.answer(), status=status)


async def ingest(request: web.Request) -> web.StreamResponse:
    """POST /ingest: NDJSON, a JSON array or object, or text; per-line errors."""
    state = request.app[STATE]
    if state.draining:
        raise OverloadedError("server is shutting down", retry_after=1.0)
    mime = request.content_type.lower()
    if mime not in _PARSERS:
        raise RequestError(
            415,
            f"unsupported Content-Type {mime!r}; use application/x-ndjson, application/json or text/plain",
        )
    body = await read_body(request, state.limits)
    state.producer.metrics.bytes_in.inc(request.content_length or len(body))
    if not body.strip():
        raise RequestError(400, "empty body: send at least one log line")
    parse, ctype = _PARSERS[mime]
    parsed = parse(body, state.limits.max_line)
    await store(request, parsed, ctype, "http")
    return lines_answer(parsed)


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
    registry = request.app[STATE].producer.metrics.registry
    return web.Response(
        body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


def build_app(state: IngestState, extra_routes: list[Any] | None = None) -> web.Application:
    """The ingest application; ``client_max_size`` is ours to enforce, so aiohttp's is lifted."""
    app = web.Application(middlewares=[errors_and_auth], client_max_size=state.limits.max_body + 1)
    app[STATE] = state
    app.router.add_post("/ingest", ingest)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_page)
    for route in extra_routes or []:
        app.router.add_route(*route)
    return app
