"""The ALB's signed ``x-amzn-oidc-data`` token: verification (pure) and its public keys (I/O).

The ALB signs with ES256 and names the key in the header's ``kid``; the public key (PEM) is
at ``https://public-keys.auth.elb.{region}.amazonaws.com/{kid}``. The header also carries
``signer`` (the ALB's ARN), ``iss`` and ``exp``. AWS pads the token's base64 segments with
``=``, which PyJWT accepts; the signature covers the segments exactly as sent.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import aiohttp
import jwt
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from service.console.session import Role
from service.errors import ConsoleAuthError

# A kid is interpolated into a URL: only the characters AWS uses (a UUID), so a forged
# header cannot point the key fetch elsewhere.
_KID = re.compile(r"^[A-Za-z0-9-]{1,128}$")
_LEEWAY_SECONDS = 5


def token_header(token: str) -> dict[str, Any]:
    """The token's header (unverified); raises ConsoleAuthError when it is no ES256 JWT."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise ConsoleAuthError(f"x-amzn-oidc-data is not a JWT: {exc}") from None
    if header.get("alg") != "ES256":
        raise ConsoleAuthError(f"x-amzn-oidc-data: algorithm {header.get('alg')!r}, not ES256")
    if not _KID.match(str(header.get("kid", ""))):
        raise ConsoleAuthError("x-amzn-oidc-data: missing or malformed kid")
    return header


def verify_alb_token(
    token: str,
    key_pem: bytes,
    *,
    now: float,
    signer: str | None = None,
    issuer: str | None = None,
) -> dict[str, Any]:
    """The verified claims of an ALB token; raises ConsoleAuthError naming the failed check.

    Checks the ES256 signature with ``key_pem``, the expiry (header and claims), the
    ``signer`` (the ALB's ARN) and the issuer when those are configured.
    """
    header = token_header(token)
    try:
        key = load_pem_public_key(key_pem)
    except ValueError as exc:
        raise ConsoleAuthError(f"ALB public key {header['kid']} is not a PEM key") from exc
    if not isinstance(key, EllipticCurvePublicKey):
        raise ConsoleAuthError(f"ALB public key {header['kid']} is not an EC key")
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=["ES256"],
            options={"require": ["exp"], "verify_aud": False, "verify_iat": False},
            leeway=_LEEWAY_SECONDS,
        )
    except jwt.ExpiredSignatureError:
        raise ConsoleAuthError("x-amzn-oidc-data has expired") from None
    except jwt.InvalidSignatureError:
        raise ConsoleAuthError("x-amzn-oidc-data: bad signature") from None
    except jwt.PyJWTError as exc:
        raise ConsoleAuthError(f"x-amzn-oidc-data rejected: {exc}") from None
    if "exp" in header and float(header["exp"]) + _LEEWAY_SECONDS < now:
        raise ConsoleAuthError("x-amzn-oidc-data has expired")
    if float(claims["exp"]) + _LEEWAY_SECONDS < now:
        raise ConsoleAuthError("x-amzn-oidc-data has expired")
    if signer is not None and header.get("signer") != signer:
        raise ConsoleAuthError(f"x-amzn-oidc-data: signer {header.get('signer')!r} is not our ALB")
    if issuer is not None:
        seen = claims.get("iss", header.get("iss"))
        if seen != issuer:
            raise ConsoleAuthError(f"x-amzn-oidc-data: issuer {seen!r} is not {issuer!r}")
    return claims


def role_of(claims: Mapping[str, Any], claim: str, operator_value: str) -> Role:
    """Operator when the claim holds ``operator_value`` (a list, or a string of names), else viewer."""
    value = claims.get(claim)
    if isinstance(value, list | tuple):
        names = {str(v) for v in value}
    elif isinstance(value, str):
        names = set(re.split(r"[\s,\[\]\"']+", value)) - {""}
    else:
        names = set()
    return "operator" if operator_value in names else "viewer"


class AlbKeys:
    """The ALB's public keys by kid, fetched once each from the key URL template."""

    def __init__(self, http: aiohttp.ClientSession, url_template: str, region: str | None) -> None:
        self._http = http
        self._template = url_template
        self._region = region or "us-east-1"
        self._keys: dict[str, bytes] = {}

    async def key(self, kid: str) -> bytes:
        """The PEM of ``kid``; raises ConsoleAuthError when the key URL does not give one."""
        if kid in self._keys:
            return self._keys[kid]
        url = self._template.format(region=self._region, kid=kid)
        try:
            async with self._http.get(url, timeout=aiohttp.ClientTimeout(total=5)) as response:
                if response.status != 200:
                    raise ConsoleAuthError(f"ALB public key {kid}: HTTP {response.status}")
                pem = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ConsoleAuthError(f"ALB public key {kid}: {type(exc).__name__}") from None
        # Keys are per kid and never change: a bounded cache is all the rotation needs.
        if len(self._keys) > 64:
            self._keys.clear()
        self._keys[kid] = pem
        return pem
