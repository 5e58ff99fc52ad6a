"""Read a request body within limits and decompress it without ever passing the limit (I/O).

A decompression bomb is stopped after ``max_decompressed`` output bytes: gzip is inflated
with ``max_length`` steps and zstd through a bounded stream reader, so no allocation ever
exceeds the limit plus one chunk.
"""

from __future__ import annotations

import io
import zlib
from dataclasses import dataclass

import zstandard
from aiohttp import web

from service.errors import RequestError

_CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class BodyLimits:
    max_body: int
    max_decompressed: int
    max_line: int


async def read_body(request: web.Request, limits: BodyLimits) -> bytes:
    """The decompressed body, or RequestError (413 over a limit, 415/400 bad encoding)."""
    declared = request.content_length
    if declared is not None and declared > limits.max_body:
        raise RequestError(
            413, f"body of {declared} bytes exceeds the {limits.max_body} byte limit"
        )
    parts: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(_CHUNK):
        size += len(chunk)
        if size > limits.max_body:
            raise RequestError(413, f"body exceeds the {limits.max_body} byte limit")
        parts.append(chunk)
    raw = b"".join(parts)
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    return decompress(raw, encoding, limits.max_decompressed)


def decompress(raw: bytes, encoding: str, limit: int) -> bytes:
    """Decode a Content-Encoding within ``limit`` output bytes (pure)."""
    if encoding in ("", "identity"):
        if len(raw) > limit:
            raise RequestError(413, f"body exceeds the {limit} byte decompressed limit")
        return raw
    if encoding in ("gzip", "x-gzip", "deflate"):
        return _inflate(raw, limit, wbits=47 if encoding != "deflate" else 15)
    if encoding == "zstd":
        return _unzstd(raw, limit)
    raise RequestError(
        415, f"unsupported Content-Encoding {encoding!r}; use gzip, zstd or identity"
    )


def _inflate(raw: bytes, limit: int, wbits: int) -> bytes:
    inflater = zlib.decompressobj(wbits)
    out = bytearray()
    data = raw
    try:
        while data:
            out += inflater.decompress(data, _CHUNK)
            if len(out) > limit:
                raise RequestError(413, f"decompressed body exceeds the {limit} byte limit")
            data = inflater.unconsumed_tail
            if inflater.eof:
                break
        out += inflater.flush(_CHUNK)
    except zlib.error as exc:
        raise RequestError(400, f"body is not valid gzip: {exc}") from None
    if len(out) > limit:
        raise RequestError(413, f"decompressed body exceeds the {limit} byte limit")
    if not inflater.eof:
        raise RequestError(400, "body is not valid gzip: stream is truncated")
    return bytes(out)


def _unzstd(raw: bytes, limit: int) -> bytes:
    out = bytearray()
    try:
        reader = zstandard.ZstdDecompressor().stream_reader(
            io.BytesIO(raw), read_across_frames=True
        )
        while chunk := reader.read(_CHUNK):
            out += chunk
            if len(out) > limit:
                raise RequestError(413, f"decompressed body exceeds the {limit} byte limit")
    except zstandard.ZstdError as exc:
        raise RequestError(400, f"body is not valid zstd: {exc}") from None
    if raw and not out:
        raise RequestError(400, "body is not valid zstd: no data")
    return bytes(out)
