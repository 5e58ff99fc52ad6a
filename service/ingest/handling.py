"""What every ingest route shares (I/O): the server's state, auth and refusals in each
route's dialect, reading a body within the budget, parsing off the loop, and storing the
lines durably (the 200 only once they are in Kinesis).

Every refusal is answered in the dialect of the route it hit, so each agent can report it:
JSON ``{"error": reason}`` on ``/ingest``, a google.rpc.Status on ``/v1/logs`` (OTLP/HTTP),
Elasticsearch's error object on the Elasticsearch routes, HEC's codes on the HEC routes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

import orjson
from aiohttp import hdrs, web
from prometheus_client import CollectorRegistry

from service.envelope import ContentType
from service.errors import KinesisUnavailableError, OverloadedError, RequestError
from service.ingest import elastic, hec, otlp
from service.ingest.arrivals import Arrival
from service.ingest.auth import Caller, authenticate, presented_keys
from service.ingest.body import BodyLimits, read_body
from service.ingest.budget import ByteBudget, Reservation
from service.ingest.lineblock import LineBlock
from service.ingest.lines import LINE_OVERHEAD, count_byte
from service.ingest.packer import Header
from service.ingest.producer import Producer
from service.ingest.redaction import redact_lines
from service.settings import Settings
from service.telemetry.tracing import current_traceparent

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# /metrics is not among them: with keys configured it needs one like every other route.
PUBLIC_PATHS = frozenset(
    {"/healthz", "/readyz", "/services/collector/health", "/services/collector/health/1.0"}
)
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
    # TIDEWAY_INGEST_REDACT: detectors every accepted line goes through before Kinesis.
    redact: tuple[str, ...] = ()

    @property
    def budget(self) -> ByteBudget:
        return self.producer.budget


STATE: web.AppKey[IngestState] = web.AppKey("state", IngestState)
CALLER: web.RequestKey[Caller] = web.RequestKey("caller", Caller)
ARRIVAL: web.RequestKey[Arrival] = web.RequestKey("arrival", Arrival)


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
        return web.json_response(body, status=status, headers=headers or None, dumps=json_text)
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
        return web.json_response(body, status=status, headers=headers or None, dumps=json_text)
    return web.json_response(
        {"error": reason}, status=status, headers=headers or None, dumps=json_text
    )


def json_text(value: object) -> str:
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


async def _handled(
    state: IngestState, request: web.Request, handler: Handler
) -> web.StreamResponse:
    """The handler's answer. A POST counts among the producer's arrivals from here until its
    lines are packed: a held PutRecords call waits for those only (ingest/arrivals.py)."""
    if request.method != hdrs.METH_POST:
        return await handler(request)
    with state.producer.arrivals.begin() as arrival:
        request[ARRIVAL] = arrival
        return await handler(request)


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


# A body of at most INLINE_BYTES and INLINE_ITEMS lines (or JSON elements) is parsed on the
# event loop: the hop to the parse pool and back, and the GIL hand-overs it brings, cost
# about as much CPU as the C scanner's pass over 1,000 valid lines (issue 13), while the
# worst such body (1,024 lines each refused by orjson) holds the loop for ~8 ms on the shared
# 2-core machine (docs/security.md). Past ~1,000 lines the hop costs under 0.1 us a line, so
# bigger bodies are parsed on the pool (issue 15).
INLINE_BYTES = 512 * 1024
INLINE_ITEMS = 1024


def parse_inline(body: bytes, items: int) -> bool:
    """Whether ``body``, holding at most ``items`` lines or elements, is parsed on the loop."""
    return len(body) <= INLINE_BYTES and items <= INLINE_ITEMS


def charge_lines(
    held: Reservation,
    body: bytes,
    max_lines: int,
    marker: bytes = b"\n",
    count: int | None = None,
) -> None:
    """Reserve what parsing ``body`` really costs: its bytes once more (the lines) and a
    per-line overhead for at most ``max_lines`` lines (one ``marker`` each at most);
    ``count`` is how often ``marker`` occurs, when the caller knows it already."""
    found = count_byte(body, marker) if count is None else count
    held.take(len(body) + min(found + 1, max_lines) * LINE_OVERHEAD)


def is_blank(body: bytes) -> bool:
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
    await store_lines(
        request.app[STATE],
        caller,
        request.headers,
        lines,
        rejected,
        ctype,
        source,
        arrival=request.get(ARRIVAL),
    )


async def store_lines(  # noqa: PLR0917
    state: IngestState,
    caller: Caller,
    headers: Mapping[str, str],
    lines: Sequence[bytes],
    rejected: dict[str, int],
    ctype: ContentType,
    source: str,
    *,
    arrival: Arrival | None = None,
) -> None:
    """``store`` for any transport: ``headers`` (case-insensitive) may hold ``traceparent``
    and ``Idempotency-Key``; ``arrival`` is the request's count in the producer's arrivals."""
    metrics = state.producer.metrics
    for kind, count in rejected.items():
        metrics.lines_rejected.labels(kind).inc(count)
    if not lines:
        return
    header = Header(ctype, source, caller.service)
    traceparent = current_traceparent(headers.get("traceparent", ""))
    key = idempotency_key(headers)
    idempotency = (caller.key, key) if key else None
    with state.budget.reservation() as held:
        if state.redact:
            # A redacted block is a second copy of the lines' bytes while they are sent.
            held.take(lines.nbytes if isinstance(lines, LineBlock) else sum(map(len, lines)))
            lines = await _redacted(state, lines)
        await state.producer.submit(
            lines, header, traceparent, idempotency=idempotency, arrival=arrival
        )
    metrics.lines_accepted.inc(len(lines))


async def _redacted(state: IngestState, lines: Sequence[bytes]) -> Sequence[bytes]:
    job = partial(redact_lines, lines, state.redact)
    return job() if len(lines) <= INLINE_ITEMS else await off_loop(state, job)


def idempotency_key(headers: Mapping[str, str]) -> str:
    """The request's ``Idempotency-Key`` (empty if none); 400 unless 1-255 visible ASCII."""
    key = headers.get("Idempotency-Key", "")
    if key and (len(key) > 255 or not key.isascii() or not key.isprintable()):
        raise RequestError(400, "Idempotency-Key must be 1 to 255 printable ASCII characters")
    return key
