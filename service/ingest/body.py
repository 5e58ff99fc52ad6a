"""Read a request body within limits and decompress it without ever passing them (I/O).

A decompression bomb is stopped after ``max_decompressed`` output bytes, or as soon as the
output grows past ``max_ratio`` times the compressed size: gzip is inflated with
``max_length`` steps and zstd through a bounded stream reader, so no allocation exceeds the
limit plus one chunk. Every byte held is drawn from the server's byte budget first.
"""

from __future__ import annotations

import asyncio
import io
import zlib
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import partial

import zstandard
from aiohttp import web

from service.errors import RequestError
from service.ingest.budget import Reservation

_CHUNK = 64 * 1024
# Small bodies may compress extremely well (a few repeated lines); judge the ratio once the
# output passes this. Once 1 MiB, it let a 1 KB gzip of "x\n" * 524288 through (issue 15).
_RATIO_FLOOR = 64 * 1024


@dataclass(frozen=True, slots=True)
class BodyLimits:
    max_body: int
    max_decompressed: int
    max_line: int
    max_ratio: float = 200.0
    read_timeout: float = 30.0


async def read_body(
    request: web.Request, limits: BodyLimits, held: Reservation, pool: Executor | None = None
) -> bytes:
    """The decompressed body, or RequestError (413 over a limit, 408 too slow, 415/400 bad
    encoding) or OverloadedError (the byte budget is full). Decompression runs on ``pool``
    (the loop's default executor if None): 64 MiB of output is ~0.2 s of CPU."""
    declared = request.content_length
    if declared is not None and declared > limits.max_body:
        raise RequestError(
            413, f"body of {declared} bytes exceeds the {limits.max_body} byte limit"
        )
    parts: list[bytes] = []
    size = 0
    try:
        # A client that trickles its body holds one coroutine, never the loop; past the
        # timeout it is answered 408 and its buffer given back.
        async with asyncio.timeout(limits.read_timeout):
            async for chunk in request.content.iter_chunked(_CHUNK):
                size += len(chunk)
                if size > limits.max_body:
                    raise RequestError(413, f"body exceeds the {limits.max_body} byte limit")
                held.take(len(chunk))
                parts.append(chunk)
    except TimeoutError:
        raise RequestError(408, f"body not received within {limits.read_timeout:g} s") from None
    raw = b"".join(parts)
    parts.clear()
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return decompress(raw, encoding, limits.max_decompressed)
    job = partial(decompress, raw, encoding, limits.max_decompressed, limits.max_ratio, held.take)
    return await asyncio.get_running_loop().run_in_executor(pool, job)


def decompress(
    raw: bytes,
    encoding: str,
    limit: int,
    max_ratio: float = float("inf"),
    grow: Callable[[int], None] | None = None,
) -> bytes:
    """Decode a Content-Encoding within ``limit`` output bytes and ``max_ratio``; ``grow`` is
    called with each output increment before it is kept (it may raise to refuse)."""
    if encoding in ("", "identity"):
        if len(raw) > limit:
            raise RequestError(413, f"body exceeds the {limit} byte decompressed limit")
        return raw
    guard = _Guard(len(raw), limit, max_ratio, grow)
    if encoding in ("gzip", "x-gzip", "deflate"):
        return _inflate(raw, guard, wbits=47 if encoding != "deflate" else 15)
    if encoding == "zstd":
        return _unzstd(raw, guard)
    raise RequestError(
        415, f"unsupported Content-Encoding {encoding!r}; use gzip, zstd or identity"
    )


class _Guard:
    """Checks every output increment against the size limit, the ratio and the budget."""

    __slots__ = ("compressed", "grow", "limit", "max_ratio", "size")

    def __init__(
        self, compressed: int, limit: int, max_ratio: float, grow: Callable[[int], None] | None
    ) -> None:
        self.compressed = max(1, compressed)
        self.limit = limit
        self.max_ratio = max_ratio
        self.grow = grow
        self.size = 0

    def add(self, n: int) -> None:
        self.size += n
        if self.size > self.limit:
            raise RequestError(413, f"decompressed body exceeds the {self.limit} byte limit")
        if self.size > _RATIO_FLOOR and self.size > self.max_ratio * self.compressed:
            raise RequestError(
                413,
                f"decompressed body exceeds the compression ratio limit of {self.max_ratio:g}"
                " (a compression bomb?)",
            )
        if self.grow is not None:
            self.grow(n)


def _inflate(raw: bytes, guard: _Guard, wbits: int) -> bytes:
    """Every member of a gzip stream (``pigz`` and log rotators write several, RFC 1952
    §2.2); anything after the last member that is not another member is refused."""
    out = io.BytesIO()  # getvalue() hands its buffer over: no second copy of 64 MiB
    data = raw
    try:
        while True:
            inflater = zlib.decompressobj(wbits)
            while data:
                piece = inflater.decompress(data, _CHUNK)
                guard.add(len(piece))
                out.write(piece)
                data = inflater.unconsumed_tail
                if inflater.eof:
                    break
            while not inflater.eof and (piece := inflater.decompress(b"", _CHUNK)):
                guard.add(len(piece))
                out.write(piece)
            if not inflater.eof:
                raise RequestError(400, "body is not valid gzip: stream is truncated")
            data = inflater.unused_data
            if not data:
                return out.getvalue()
            if wbits == 15 or not data.startswith(b"\x1f\x8b"):
                raise RequestError(
                    400, f"body is not valid gzip: {len(data)} bytes of trailing garbage"
                )
    except zlib.error as exc:
        raise RequestError(400, f"body is not valid gzip: {exc}") from None


def _unzstd(raw: bytes, guard: _Guard) -> bytes:
    out = io.BytesIO()
    try:
        reader = zstandard.ZstdDecompressor().stream_reader(
            io.BytesIO(raw), read_across_frames=True
        )
        while chunk := reader.read(_CHUNK):
            guard.add(len(chunk))
            out.write(chunk)
    except zstandard.ZstdError as exc:
        raise RequestError(400, f"body is not valid zstd: {exc}") from None
    if raw and not out.tell():
        raise RequestError(400, "body is not valid zstd: no data")
    return out.getvalue()
