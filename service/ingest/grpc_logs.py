"""OTLP over gRPC: ``opentelemetry.proto.collector.logs.v1.LogsService/Export`` (I/O).

A grpc.aio server in the event loop of the aiohttp application, sharing its state: the same
API keys (``authorization`` metadata: ``Bearer <key>``, or ``x-api-key``), the same byte
budget, the /v1/logs protobuf walk (``otlp.parse_protobuf``, off the loop), and the same
durability: the answer is sent once every accepted record is in Kinesis, with
``partial_success`` for rejected ones. gRPC decompresses (gzip) itself; its receive limit is
the decompressed body limit, so a message never grows past it.

``grpc.health.v1.Health/Check`` answers SERVING, or fails UNAVAILABLE while draining or
while Kinesis is unreachable; unauthenticated: the load balancer's gRPC health check probes it.
"""

from __future__ import annotations

import logging
import time
from functools import partial
from typing import Any

import grpc

from service.envelope import ContentType
from service.errors import KinesisUnavailableError, ListenError, OverloadedError, RequestError
from service.ingest import otlp
from service.ingest.auth import authenticate, presented_keys
from service.ingest.handling import IngestState, off_loop, store_lines

log = logging.getLogger(__name__)
LOGS_SERVICE = "opentelemetry.proto.collector.logs.v1.LogsService"
HEALTH_SERVICE = "grpc.health.v1.Health"
EXPORT_PATH = f"/{LOGS_SERVICE}/Export"
HEALTH_PATH = f"/{HEALTH_SERVICE}/Check"
# HealthCheckResponse{status: SERVING (1)}, field 1 varint.
_SERVING = b"\x08\x01"
# HTTP status of a refusal -> gRPC status, as OTLP/gRPC prescribes: UNAVAILABLE is the one
# code every exporter retries; a bad request is INVALID_ARGUMENT and dropped.
_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
}
_ROUTE = "grpc " + EXPORT_PATH
_HEADERS = ("Authorization", "X-API-Key", "traceparent", "Idempotency-Key")


class LogsExport:
    """The Export method over an ingest server's state."""

    def __init__(self, state: IngestState) -> None:
        self.state = state

    async def export(self, request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        """Parse, store durably, answer ExportLogsServiceResponse; abort with a status."""
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            return await self._export(request, context)
        except RequestError as exc:
            code = _CODES.get(exc.status, grpc.StatusCode.INVALID_ARGUMENT)
            reason = exc.reason
        except (OverloadedError, KinesisUnavailableError) as exc:
            code, reason = grpc.StatusCode.UNAVAILABLE, str(exc)
        finally:
            metrics = self.state.producer.metrics
            metrics.requests.labels(_ROUTE, code.name).inc()
            metrics.request_seconds.labels(_ROUTE).observe(time.perf_counter() - started)
        await context.abort(code, reason)
        raise AssertionError("abort raises")  # pragma: no cover

    async def _export(self, request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        state = self.state
        if state.draining:
            raise OverloadedError("server is shutting down", retry_after=1.0)
        # gRPC metadata keys are lower case; read as the HTTP headers they stand for.
        sent = {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
        headers = {name: sent.get(name.lower(), "") for name in _HEADERS}
        caller = authenticate(state.settings.api_keys, presented_keys(headers))
        if caller is None:
            raise RequestError(401, "unauthorized")
        state.producer.metrics.bytes_in.inc(len(request))
        with state.budget.reservation() as held, state.producer.arrivals.begin() as arrival:
            held.take(len(request))  # the message gRPC has already read
            limit, max_line = state.max_lines, state.limits.max_line

            def job(body: bytes) -> otlp.OtlpLines:
                held.take(len(body))  # the normalized lines
                return otlp.parse_protobuf(body, max_line, limit)

            parsed = await off_loop(state, partial(job, request))
            rejected = {"otlp_invalid": parsed.rejected} if parsed.rejected else {}
            await store_lines(
                state,
                caller,
                headers,
                parsed.lines,
                rejected,
                ContentType.OTLP,
                "otlp",
                arrival=arrival,
            )
        if parsed.rejected and not parsed.lines:
            raise RequestError(400, "; ".join(parsed.reasons) or "no log records")
        return otlp.export_response(parsed, as_json=False)

    async def health(self, request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        """grpc.health.v1 Check: SERVING when ready; otherwise the call fails UNAVAILABLE,
        which a load balancer's matcher on the gRPC status sees (NOT_SERVING is status 0)."""
        if self.state.draining or not self.state.kinesis_ok:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "not ready")
        return _SERVING


async def start(state: IngestState, host: str, port: int) -> grpc.aio.Server:
    """A started gRPC server on ``host:port`` (messages up to the decompressed body limit)."""
    service = LogsExport(state)
    limit = state.limits.max_decompressed
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", 4 * 1024 * 1024),
            # The other serve workers listen on the same port (the kernel spreads
            # connections over them), as on the HTTP port.
            ("grpc.so_reuseport", 1),
        ]
    )
    # No (de)serializers: the request arrives as bytes and is walked on the wire like
    # /v1/logs, never decoded whole.
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                LOGS_SERVICE, {"Export": grpc.unary_unary_rpc_method_handler(service.export)}
            ),
            grpc.method_handlers_generic_handler(
                HEALTH_SERVICE, {"Check": grpc.unary_unary_rpc_method_handler(service.health)}
            ),
        )
    )
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as exc:  # grpc says only "Failed to bind"
        raise ListenError(
            f"cannot listen on {address} (TIDEWAY_GRPC_PORT): the port is in use or not allowed"
        ) from exc
    await server.start()
    log.info("serving grpc", extra={"port": bound})
    return server
