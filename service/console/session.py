"""Who is asking (pure): roles, signed session cookies, CSRF tokens, the one-time sign-in token.

No clock and no randomness of its own: ``now`` and the secrets come from the caller.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from typing import Literal

import orjson

Role = Literal["viewer", "operator"]
SESSION_COOKIE = "tideway_console"
SESSION_SECONDS = 12 * 3600


@dataclass(frozen=True, slots=True)
class Principal:
    """A signed-in person: ``subject`` names them (the IdP's ``sub``, or "local")."""

    subject: str
    role: Role

    @property
    def operator(self) -> bool:
        return self.role == "operator"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Sessions:
    """HMAC-signed session cookies and the CSRF token bound to each principal."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def _mac(self, purpose: str, body: bytes) -> str:
        return _b64(
            hmac.new(self._secret, purpose.encode() + b"\0" + body, hashlib.sha256).digest()
        )

    def issue(self, principal: Principal, now: float) -> str:
        """A cookie value naming ``principal`` until ``now + SESSION_SECONDS``."""
        body = orjson.dumps(
            {"sub": principal.subject, "role": principal.role, "exp": int(now) + SESSION_SECONDS}
        )
        return f"{_b64(body)}.{self._mac('session', body)}"

    def read(self, cookie: str | None, now: float) -> Principal | None:
        """The principal of a cookie we signed and that has not expired, else None."""
        if not cookie or "." not in cookie:
            return None
        body_text, _, mac = cookie.partition(".")
        try:
            body = _unb64(body_text)
        except ValueError:
            return None
        if not hmac.compare_digest(mac, self._mac("session", body)):
            return None
        fields = orjson.loads(body)
        if fields.get("exp", 0) <= now or fields.get("role") not in ("viewer", "operator"):
            return None
        return Principal(str(fields["sub"]), fields["role"])

    def csrf_token(self, principal: Principal) -> str:
        """The token every POST of ``principal`` must carry (a synchronizer token)."""
        return self._mac("csrf", f"{principal.subject}\0{principal.role}".encode())

    def csrf_ok(self, principal: Principal, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(str(token), self.csrf_token(principal))


class LoginToken:
    """The one-time token of the printed sign-in URL: the first redeem wins, then it is spent."""

    def __init__(self, token: str) -> None:
        self._token: str | None = token

    @property
    def pending(self) -> str | None:
        return self._token

    def redeem(self, offered: str | None) -> bool:
        if self._token is None or not offered:
            return False
        if not hmac.compare_digest(offered.encode(), self._token.encode()):
            return False
        self._token = None
        return True
