"""API keys: accepted keys are configured as SHA-256 digests and compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from aiohttp import web

from service.settings import ApiKey


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent a request: the key's default service, if it has one."""

    service: str = ""


ANONYMOUS = Caller()


def presented_key(request: web.Request) -> str | None:
    """The key from ``Authorization: Bearer``, ``Authorization: ApiKey`` or ``X-API-Key``."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() in ("bearer", "apikey") and value.strip():
        return value.strip()
    key = request.headers.get("X-API-Key", "").strip()
    return key or None


def authenticate(keys: tuple[ApiKey, ...] | None, presented: str | None) -> Caller | None:
    """The caller for ``presented``, or None when keys are configured and it matches none.

    Every configured digest is compared (no early exit), so timing says nothing about which.
    """
    if keys is None:
        return ANONYMOUS
    if presented is None:
        return None
    digest = hashlib.sha256(presented.encode()).hexdigest()
    found: Caller | None = None
    for key in keys:
        if hmac.compare_digest(digest, key.sha256):
            found = Caller(key.service or "")
    return found
