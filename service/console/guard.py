"""The console's door (I/O around session.py and oidc.py): who the request is, and whether
it may do what it asks.

Every request gets a Principal or an answer of 401; every POST needs an operator and the
CSRF token of that operator, whatever the configuration: there is no open mode.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from service.console.oidc import AlbKeys, role_of, token_header, verify_alb_token
from service.console.session import SESSION_COOKIE, Principal, Sessions
from service.errors import ConsoleAuthError
from service.settings import Settings

log = logging.getLogger(__name__)
OIDC_HEADER = "x-amzn-oidc-data"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
PUBLIC_PATHS = frozenset({"/healthz", "/login"})
PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("principal", Principal)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Guard:
    """Authenticates requests (the ALB's token, or our session cookie) and checks POSTs."""

    def __init__(self, settings: Settings, sessions: Sessions, keys: AlbKeys | None) -> None:
        self._settings = settings
        self.sessions = sessions
        self._keys = keys

    async def principal(self, request: web.Request) -> Principal:
        """Who sent ``request``; raises ConsoleAuthError naming why nobody is recognised."""
        if self._settings.console_auth == "oidc":
            return await self._from_alb(request)
        found = self.sessions.read(request.cookies.get(SESSION_COOKIE), time.time())
        if found is None:
            raise ConsoleAuthError("not signed in: open the sign-in URL printed at start")
        return found

    async def _from_alb(self, request: web.Request) -> Principal:
        token = request.headers.get(OIDC_HEADER)
        if not token:
            raise ConsoleAuthError(f"no {OIDC_HEADER} header: reach the console through the ALB")
        assert self._keys is not None
        kid = str(token_header(token)["kid"])
        claims = verify_alb_token(
            token,
            await self._keys.key(kid),
            now=time.time(),
            signer=self._settings.console_oidc_signer,
            issuer=self._settings.console_oidc_issuer,
        )
        role = role_of(
            claims, self._settings.console_operator_claim, self._settings.console_operator_value
        )
        return Principal(str(claims.get("sub") or claims.get("email") or "unknown"), role)

    async def check_post(self, request: web.Request, principal: Principal) -> None:
        """Raise HTTPForbidden unless an operator sent the POST with their CSRF token."""
        if not principal.operator:
            raise web.HTTPForbidden(
                text="operator rights needed: this console is read-only for you"
            )
        token = request.headers.get(CSRF_HEADER)
        if token is None and request.content_type in (
            "application/x-www-form-urlencoded",
            "multipart/form-data",
        ):
            token = str((await request.post()).get(CSRF_FIELD) or "") or None
        if not self.sessions.csrf_ok(principal, token):
            raise web.HTTPForbidden(text="missing or wrong CSRF token: reload the page and retry")

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path.removeprefix(self._settings.console_base_path)
        if path in PUBLIC_PATHS or path.startswith("/static/") or not path:
            return await handler(request)
        try:
            principal = await self.principal(request)
        except ConsoleAuthError as exc:
            log.info("console: refused %s %s: %s", request.method, request.path, exc.reason)
            return web.Response(status=401, text=f"401: {exc.reason}\n")
        if request.method not in ("GET", "HEAD"):
            await self.check_post(request, principal)
            log.info("console: %s %s by %s", request.method, request.path, principal.subject)
        request[PRINCIPAL] = principal
        return await handler(request)
