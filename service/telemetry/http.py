"""aiohttp middleware: a SERVER span per request and refused requests by reason class (I/O)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware
from opentelemetry.trace import Status, StatusCode

from service.telemetry.metrics import IngestMetrics
from service.telemetry.tracing import server_span

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def route_of(request: web.Request) -> str:
    """The route template (``/{index}/_bulk``), never the raw path: a closed label set."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def request_telemetry(metrics: IngestMetrics) -> Middleware:
    """The outermost middleware of the ingest app: it sees every final status, including
    errors that escape the inner middlewares (counted as ``internal``, then re-raised)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        route = route_of(request)
        attributes = {"http.request.method": request.method, "http.route": route}
        with server_span(f"{request.method} {route}", request.headers, attributes) as span:
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                metrics.observe_response(exc.status)
                raise
            except Exception:
                metrics.observe_response(500)
                raise
            metrics.observe_response(response.status)
            if span is not None:
                span.set_attribute("http.response.status_code", response.status)
                if response.status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
            return response

    return middleware
