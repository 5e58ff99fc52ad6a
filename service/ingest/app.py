"""The aiohttp application of ``tideway serve``: routes, auth, limits, answers (I/O).

Every refusal is answered in the dialect of the route it hit, so each agent can report it:
JSON ``{"error": reason}`` on ``/ingest``, a google.rpc.Status on ``/v1/logs`` (OTLP/HTTP),
Elasticsearch's error object on the Elasticsearch routes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TypeVar

import orjson
from aiohttp import hdrs, web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from service.envelope import ContentType
from service.errors import KinesisUnavailableError, OverloadedError, RequestError
from service.ingest import elastic, hec, otlp
from service.ingest.auth import Caller, authenticate, presented_keys
from service.ingest.body import BodyLimits, read_body
from service.ingest.budget import ByteBudget, Reservation
from service.ingest.lines import (
    LINE_OVERHEAD,
    ParsedLines,
    body_shape,
    parse_json,
    parse_ndjson,
    parse_text,
)
from service.ingest.packer import Header
from service.ingest.producer import Producer
from service.settings import Settings
from service.telemetry.http import request_telemetry
from service.telemetry.tracing import current_traceparent

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# /metrics is not among them: with keys configured it needs one like every other route.
PUBLIC_PATHS = frozenset(
    {"/healthz", "/readyz", "/services/collector/health", "/services/collector/health/1.0"}
)
# Template and ILM bodies are acknowledged and dropped: a few KB in practice.
_SETUP_BODY_LIMIT = 64 * 1024
ES_PRODUCT = {"X-Elastic-Product": "Elasticsearch"}
# HTTP status -> google.rpc.Code, for OTLP error bodies.
_GRPC_CODES = {400: 3, 401: 16, 408: 4, 413: 8, 415: 3, 429: 8, 503: 14}


@dataclass
class IngestState:
    """Shared by every request of one server."""

    settings: Settings
    producer: Producer
    limits: BodyLimits
    max_lines: int = 1 << 62
    # Where bodies are decompressed and parsed, off the event loop (None: the loop's default).
    pool: Executor | None = None
    draining: bool = False
    kinesis_ok: bool = True
    started: float = field(default_factory=time.monotonic)
    # What /metrics shows when several workers share the port: all of them (None: this one).
    exposition: CollectorRegistry | None = None

    @property
    def budget(self) -> ByteBudget:
        return self.producer.budget


STATE: web.AppKey[IngestState] = web.AppKey("state", IngestState)
CALLER: web.RequestKey[Caller] = web.RequestKey("caller", Caller)


def _family(path: str) -> str:
    if path == "/v1/logs":
        return "otlp"
    if path.startswith(hec.PREFIX):
        return "hec"
    if path in ("/", "/_license", "/_xpack", "/_cluster/health") or path.endswith("/_bulk"):
        return "es"
    if path.startswith(("/_index_template/", "/_ilm/policy/")):
        return "es"
    return "json"


def _is_otlp_json(request: web.Request) -> bool:
    return request.content_type.lower() == "application/json"


def refusal(request: web.Request, status: int, reason: str, **headers: str) -> web.Response:
    """An error answer in the dialect of the route; 401 never says why."""
    family = _family(request.path)
    if family == "hec":
        presented = bool(presented_keys(request.headers))
        status, body = hec.error_body(status, reason, key_presented=presented)
        return web.json_response(body, status=status, headers=headers or None, dumps=_dumps)
    if family == "otlp":
        as_json = _is_otlp_json(request)
        return web.Response(
            status=status,
            body=otlp.status_body(_GRPC_CODES.get(status, 2), reason, as_json),
            content_type="application/json" if as_json else "application/x-protobuf",
            headers=headers or None,
        )
    if family == "es":
        kind = {401: "security_exception", 429: "es_rejected_execution_exception"}
        body = elastic.error_body(status, kind.get(status, "illegal_argument_exception"), reason)
        return web.json_response(body, status=status, headers=headers or None, dumps=_dumps)
    return web.json_response(
        {"error": reason}, status=status, headers=headers or None, dumps=_dumps
    )


def _dumps(value: object) -> str:
    return orjson.dumps(value).decode()


@web.middleware
async def errors_and_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse while draining, authenticate, time and count every request; map refusals."""
    state = request.app[STATE]
    metrics = state.producer.metrics
    resource = request.match_info.route.resource
    route = resource.canonical if resource else "unmatched"
    started = time.perf_counter()
    response: web.StreamResponse
    try:
        if request.path not in PUBLIC_PATHS:
            request[CALLER] = _admit(state, request)
        response = await handler(request)
    except RequestError as exc:
        response = refusal(request, exc.status, exc.reason)
    except OverloadedError as exc:
        # Elasticsearch agents retry 429 (es_rejected_execution_exception) with backoff.
        status = 429 if _family(request.path) == "es" else 503
        retry = str(max(1, round(exc.retry_after)))
        response = refusal(request, status, exc.reason, **{"Retry-After": retry})
    except KinesisUnavailableError as exc:
        response = refusal(request, 503, str(exc), **{"Retry-After": "2"})
    except web.HTTPException as exc:
        if _family(request.path) == "es" or exc.status == 404:
            exc.headers.update(ES_PRODUCT)
        raise
    if state.draining:
        response.headers["Connection"] = "close"
    if _family(request.path) == "es":
        response.headers.update(ES_PRODUCT)
    metrics.requests.labels(route, str(response.status)).inc()
    metrics.request_seconds.labels(route).observe(time.perf_counter() - started)
    return response


def _admit(state: IngestState, request: web.Request) -> Caller:
    """The caller, or a refusal: 503 while draining, 401 (without detail) for a bad key."""
    if state.draining:
        raise OverloadedError("server is shutting down", retry_after=1.0)
    caller = authenticate(state.settings.api_keys, presented_keys(request.headers))
    if caller is None:
        raise RequestError(401, "unauthorized")
    return caller


async def receive(request: web.Request, held: Reservation) -> bytes:
    """The decompressed body within every limit, counted in the metrics."""
    state = request.app[STATE]
    body = await read_body(request, state.limits, held, state.pool)
    state.producer.metrics.bytes_in.inc(request.content_length or len(body))
    return body


T = TypeVar("T")


async def off_loop(state: IngestState, job: Callable[[], T]) -> T:
    """Run CPU-bound ``job`` on the parse pool, so /healthz and other requests keep being
    answered (a 16 MiB body of "1\n" once held the loop for 7 s, issue 15)."""
    return await asyncio.get_running_loop().run_in_executor(state.pool, job)


def charge_lines(held: Reservation, body: bytes, max_lines: int, marker: bytes = b"\n") -> None:
    """Reserve what parsing ``body`` really costs: its bytes once more (the lines) and a
    per-line overhead for at most ``max_lines`` lines (one ``marker`` each at most)."""
    lines = min(body.count(marker) + 1, max_lines)
    held.take(len(body) + lines * LINE_OVERHEAD)


def _blank(body: bytes) -> bool:
    return not body or body.isspace()  # body.strip() would copy 64 MiB to say the same


async def store(
    request: web.Request,
    lines: Sequence[bytes],
    rejected: dict[str, int],
    ctype: ContentType,
    source: str,
) -> None:
    """Send the accepted lines and return once they are durable in Kinesis."""
    caller: Caller = request.get(CALLER) or Caller()
    await store_lines(request.app[STATE], caller, request.headers, lines, rejected, ctype, source)


async def store_lines(  # noqa: PLR0917
    state: IngestState,
    caller: Caller,
    headers: Mapping[str, str],
    lines: Sequence[bytes],
    rejected: dict[str, int],
    ctype: ContentType,
    source: str,
) -> None:
    """``store`` for any transport: ``headers`` (case-insensitive) may hold ``traceparent``
    and ``Idempotency-Key``."""
    metrics = state.producer.metrics
    for kind, count in rejected.items():
        metrics.lines_rejected.labels(kind).inc(count)
    if not lines:
        return
    header = Header(ctype, source, caller.service)
    traceparent = current_traceparent(headers.get("traceparent", ""))
    key = idempotency_key(headers)
    idempotency = (caller.key, key) if key else None
    await state.producer.submit(lines, header, traceparent, idempotency=idempotency)
    metrics.lines_accepted.inc(len(lines))


def idempotency_key(headers: Mapping[str, str]) -> str:
    """The request's ``Idempotency-Key`` (empty if none); 400 unless 1-255 visible ASCII."""
    key = headers.get("Idempotency-Key", "")
    if key and (len(key) > 255 or not key.isascii() or not key.isprintable()):
        raise RequestError(400, "Idempotency-Key must be 1 to 255 printable ASCII characters")
    return key


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


async def ingest(request: web.Request) -> web.StreamResponse:
    """POST /ingest: NDJSON, a JSON array or object, or text; per-line errors."""
    state = request.app[STATE]
    mime = _ingest_mime(request)
    with state.budget.reservation() as held:
        body = await receive(request, held)
        limit, max_line = state.max_lines, state.limits.max_line

        def job(body: bytes) -> tuple[ParsedLines, ContentType]:
            if _blank(body):
                raise RequestError(400, "empty body: send at least one log line")
            parse, ctype = _ingest_parser(mime, body, max_line)
            charge_lines(held, body, limit, b"{" if ctype is ContentType.JSON else b"\n")
            return parse(body, max_line, limit), ctype

        parsed, ctype = await off_loop(state, partial(job, body))
        del body
        await store(request, parsed.lines, parsed.rejected_by_reason, ctype, "http")
    status = 400 if parsed.rejected and not parsed.lines else 200
    return web.json_response(parsed.answer(), status=status, dumps=_dumps)


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
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_page)
    return app
