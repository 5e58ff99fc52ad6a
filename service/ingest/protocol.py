"""The HTTP connection handler of ``serve``: aiohttp's, with two defences it lacks (I/O).

- A request head (request line and headers) must arrive within ``header_timeout`` seconds
  of its first byte, or the connection is closed: a client trickling one header byte at a
  time (slowloris) holds a socket for seconds, not forever. Idle keep-alive connections are
  left to aiohttp's keep-alive timeout, which must outlive the ALB's idle timeout.
- A malformed or oversized head is answered 400 without echoing any of it: aiohttp's own
  answer and log line quote its first bytes, which may be an ``Authorization`` value.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_server import Server

log = logging.getLogger(__name__)


class GuardedRequestHandler(RequestHandler):
    """One connection; see the module docstring for what it adds."""

    header_timeout = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._between_requests = True
        self._head_deadline: asyncio.TimerHandle | None = None

    def data_received(self, data: bytes) -> None:
        before = self._request_count
        super().data_received(data)
        if self._request_count != before:  # a whole head arrived
            self._between_requests = False
            self._disarm()
        elif self._between_requests and self._head_deadline is None and data:
            self._head_deadline = self._loop.call_later(self.header_timeout, self._head_overdue)

    async def _handle_request(self, *args: Any, **kwargs: Any) -> tuple[web.StreamResponse, bool]:
        try:
            return await super()._handle_request(*args, **kwargs)
        finally:
            self._between_requests = True

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _disarm(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_overdue(self) -> None:
        self._head_deadline = None
        log.warning("request head not received in time", extra={"seconds": self.header_timeout})
        self.force_close()
        if self.transport is not None:
            self.transport.close()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)
        log.warning(
            "refused a malformed request head",
            extra={"status": status, "error": type(exc).__name__, "remote": request.remote},
        )
        response = web.Response(status=status, text=f"{status}: malformed request head")
        response.force_close()
        return response


class _GuardedServer(Server):
    header_timeout = 10.0

    def __call__(self) -> RequestHandler:
        handler = GuardedRequestHandler(self, loop=self._loop, **self._kwargs)
        handler.header_timeout = self.header_timeout
        return handler


class GuardedAppRunner(web.AppRunner):
    """``web.AppRunner`` whose connections are GuardedRequestHandlers."""

    def __init__(self, app: web.Application, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._header_timeout = header_timeout

    async def _make_server(self) -> Server:
        server = await super()._make_server()
        server.__class__ = _GuardedServer
        server.header_timeout = self._header_timeout  # type: ignore[attr-defined]
        return server
