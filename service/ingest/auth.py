"""API keys: accepted keys are configured as SHA-256 digests and compared in constant time.

A key may be presented the ways agents can send it: ``Authorization: Bearer <key>`` (or
Splunk HEC's ``Splunk <key>``),
``X-API-Key: <key>``, Elasticsearch's ``Authorization: ApiKey <base64(id:key)>`` (or the bare
key), and ``Authorization: Basic <base64(user:key)>`` where the password is the key and the
user name is ignored (Fluent Bit ``HTTP_Passwd``, Vector and Filebeat basic auth).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

from service.settings import ApiKey


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent a request: the key's default service, if it has one, and the key's configured
    digest (its identity, empty when the server is open)."""

    service: str = ""
    key: str = ""


ANONYMOUS = Caller()


def presented_keys(headers: Mapping[str, str]) -> tuple[str, ...]:
    """Every reading of the request's credentials that could be the key (at most two)."""
    found: list[str] = []
    scheme, _, value = headers.get("Authorization", "").strip().partition(" ")
    value = value.strip()
    scheme = scheme.lower()
    if value and scheme in ("bearer", "splunk"):
        found.append(value)
    elif value and scheme == "apikey":
        found.append(value)
        pair = _b64_pair(value)
        if pair is not None:
            found.append(pair[1])
    elif value and scheme == "basic":
        pair = _b64_pair(value)
        if pair is not None:
            found.append(pair[1])
    key = headers.get("X-API-Key", "").strip()
    if key:
        found.append(key)
    return tuple(k for k in found if k)


def _b64_pair(value: str) -> tuple[str, str] | None:
    try:
        text = base64.b64decode(value, validate=True).decode()
    except (ValueError, UnicodeDecodeError):  # binascii.Error, or a non-ASCII header
        return None
    first, sep, second = text.partition(":")
    return (first, second) if sep else None


def authenticate(keys: tuple[ApiKey, ...] | None, presented: tuple[str, ...]) -> Caller | None:
    """The caller for the first matching presented key, or None when keys are configured and
    none matches.

    Every configured digest is compared with every candidate (no early exit), so timing says
    nothing about which key matched or how close a guess was.
    """
    if keys is None:
        return ANONYMOUS
    found: Caller | None = None
    for candidate in presented:
        # Header bytes that are not UTF-8 reach us as surrogates; hash the bytes as sent
        # (they match no key) rather than fail with an unauthenticated 500.
        digest = hashlib.sha256(candidate.encode("utf-8", "surrogateescape")).hexdigest()
        for key in keys:
            if hmac.compare_digest(digest, key.sha256) and found is None:
                found = Caller(key.service or "", key.sha256)
    return found
