"""The envelope record: Tideway's own Kinesis record format (pure; see docs/formats.md).

Many normalized NDJSON log lines, zstd-compressed, behind a small fixed header. All
integers are big-endian. The magic starts with 0xF0 followed by ASCII, which is invalid
UTF-8, so an envelope can never be mistaken for JSON or text, and it differs from the
KPL (F3 89 9A C2), gzip (1F 8B), zstd (28 B5 2F FD), Avro single-object (C3 01) and
Confluent (00) prefixes.
"""

from __future__ import annotations

import struct
import threading
from dataclasses import dataclass
from enum import IntEnum

import zstandard

from service.errors import EnvelopeError

MAGIC = b"\xf0TWE"
VERSION_PLAIN = 1  # no producer identity: never deduplicated
VERSION = 2  # producer identity, per-producer sequence and creation time follow the fixed part
PRODUCER_ID_BYTES = 16
# The contract between the two halves of the idempotent producer: the consumer recognises a
# copy of a v2 envelope created up to this long after the newest one it saw from the same
# producer, so every re-send must come within it (settings.put_deadline is held under it).
DEDUPE_WINDOW_MS = 300_000
# Of that window, what serve may spend between sealing an envelope and its first attempt
# (queued behind the in-flight byte budget); the rest is the put deadline's.
SEND_QUEUE_ALLOWANCE_MS = 60_000
# magic, version, flags, line count, received_us, content type, source len
_FIXED = struct.Struct(">4sBBIqBH")
# v2 only, right after _FIXED: producer id, producer sequence (u64), created_us (i64)
_IDENTITY = struct.Struct(">16sQq")
_U8 = struct.Struct(">B")
_U32 = struct.Struct(">I")
FLAG_ZSTD = 0x01
MAX_SOURCE = 1024
MAX_DECOMPRESSED = 8 * 1024 * 1024  # Kinesis caps a record at 1 MiB; zstd ratio > 8 is absurd
_ZSTD_LEVEL = 3


class ContentType(IntEnum):
    """What the lines were before normalisation, kept as lineage (all payloads are NDJSON)."""

    NDJSON = 0
    JSON = 1
    TEXT = 2
    OTLP = 3
    ES_BULK = 4


@dataclass(frozen=True, slots=True)
class EnvelopeRecord:
    """A decoded envelope: ``payload`` is NDJSON, exactly ``line_count`` JSON objects.

    ``producer_id`` (16 bytes) and ``producer_seq`` name the envelope for the consumer's
    dedupe; ``created_us`` is when the producer sealed it (the dedupe window's clock). An
    empty ``producer_id`` is a version 1 envelope, which is never deduplicated.
    """

    payload: bytes
    line_count: int
    received_us: int
    content_type: ContentType = ContentType.NDJSON
    source: str = ""
    service: str = ""
    traceparent: str = ""
    producer_id: bytes = b""
    producer_seq: int = 0
    created_us: int = 0


def is_envelope(data: bytes) -> bool:
    """True when ``data`` claims to be an envelope (it may still be corrupt)."""
    return data[:4] == MAGIC


def _short_str(value: str, field: str, limit: int) -> bytes:
    raw = value.encode()
    if len(raw) > limit:
        raise ValueError(f"{field} longer than {limit} bytes")
    return raw


def encode(record: EnvelopeRecord, *, level: int = _ZSTD_LEVEL) -> bytes:
    """Serialize ``record``; the payload is compressed with a checksummed zstd frame."""
    compressed = zstandard.ZstdCompressor(level=level, write_checksum=True).compress(record.payload)
    return encode_compressed(record, compressed)


def encode_compressed(record: EnvelopeRecord, compressed: bytes) -> bytes:
    """Serialize with an already zstd-compressed payload (the producer compresses once)."""
    source = _short_str(record.source, "source", MAX_SOURCE)
    service = _short_str(record.service, "service", MAX_SOURCE)
    trace = _short_str(record.traceparent, "traceparent", 255)
    return b"".join(
        (
            _FIXED.pack(
                MAGIC,
                VERSION if record.producer_id else VERSION_PLAIN,
                FLAG_ZSTD,
                record.line_count,
                record.received_us,
                int(record.content_type),
                len(source),
            ),
            _identity(record),
            source,
            struct.pack(">H", len(service)),
            service,
            _U8.pack(len(trace)),
            trace,
            _U32.pack(len(compressed)),
            compressed,
        )
    )


def _identity(record: EnvelopeRecord) -> bytes:
    if not record.producer_id:
        return b""
    if len(record.producer_id) != PRODUCER_ID_BYTES:
        raise ValueError(f"producer_id must be {PRODUCER_ID_BYTES} bytes")
    return _IDENTITY.pack(record.producer_id, record.producer_seq, record.created_us)


class _Cursor:
    """Bounds-checked reads over a memoryview; every short read is an EnvelopeError."""

    def __init__(self, data: bytes) -> None:
        self.view = memoryview(data)
        self.pos = 0

    def take(self, n: int, what: str) -> bytes:
        return bytes(self.view_of(n, what))

    def view_of(self, n: int, what: str) -> memoryview:
        """The next ``n`` bytes without a copy (the compressed payload goes to zstd as is)."""
        end = self.pos + n
        if end > len(self.view):
            raise EnvelopeError(f"envelope truncated in {what}")
        out = self.view[self.pos : end]
        self.pos = end
        return out

    def text(self, n: int, what: str) -> str:
        try:
            return self.take(n, what).decode()
        except UnicodeDecodeError:
            raise EnvelopeError(f"envelope {what} is not UTF-8") from None


def decode(data: bytes) -> EnvelopeRecord:
    """Parse an envelope; raise EnvelopeError with a precise reason on any defect."""
    record = parse(data)
    payload = record.payload
    check_line_count(record.line_count, payload.count(b"\n") + 1 if payload else 0)
    return record


def check_line_count(declared: int, held: int) -> None:
    """Raise EnvelopeError unless the payload holds (``held`` lines) what its header declares."""
    if held != declared:
        raise EnvelopeError(f"envelope declares {declared} lines but holds {held}")


def parse(data: bytes) -> EnvelopeRecord:
    """``decode`` but for the payload's line count, which the caller checks with
    ``check_line_count`` (the consumer counts the lines in its one scan of them: counting
    here too would read the payload once more). Raises EnvelopeError on any other defect."""
    cur = _Cursor(data)
    magic, version, flags, count, received_us, ctype, src_len = _FIXED.unpack(
        cur.take(_FIXED.size, "header")
    )
    if magic != MAGIC:
        raise EnvelopeError("not an envelope (bad magic)")
    if version not in (VERSION_PLAIN, VERSION):
        raise EnvelopeError(f"unsupported envelope version {version}")
    producer_id, producer_seq, created_us = b"", 0, 0
    if version == VERSION:
        producer_id, producer_seq, created_us = _IDENTITY.unpack(
            cur.take(_IDENTITY.size, "producer identity")
        )
    try:
        content_type = ContentType(ctype)
    except ValueError:
        raise EnvelopeError(f"unknown envelope content type {ctype}") from None
    source = cur.text(src_len, "source")
    (svc_len,) = struct.unpack(">H", cur.take(2, "service length"))
    service = cur.text(svc_len, "service")
    (trace_len,) = _U8.unpack(cur.take(1, "traceparent length"))
    traceparent = cur.text(trace_len, "traceparent")
    (payload_len,) = _U32.unpack(cur.take(4, "payload length"))
    body = cur.view_of(payload_len, "payload")
    if cur.pos != len(data):
        raise EnvelopeError(f"envelope has {len(data) - cur.pos} trailing bytes")
    payload = _decompress(body) if flags & FLAG_ZSTD else bytes(body)
    return EnvelopeRecord(
        payload,
        count,
        received_us,
        content_type,
        source,
        service,
        traceparent,
        producer_id,
        producer_seq,
        created_us,
    )


# One decompression context per thread, reused: a fresh ZstdDecompressor per record costs
# its context's allocation and set-up each time (measured: ~10 % of the decompression of a
# ~20 KB record), and an instance must not be shared between threads (python-zstandard).
_DECOMPRESSORS = threading.local()


def _decompressor() -> zstandard.ZstdDecompressor:
    dctx: zstandard.ZstdDecompressor | None = getattr(_DECOMPRESSORS, "dctx", None)
    if dctx is None:
        dctx = _DECOMPRESSORS.dctx = zstandard.ZstdDecompressor()
    return dctx


def _decompress(body: memoryview) -> bytes:
    try:
        # A crafted frame may declare a huge content size; refuse before allocating it.
        declared = zstandard.frame_content_size(body)
        if declared > MAX_DECOMPRESSED:
            raise EnvelopeError(f"envelope payload declares {declared} bytes, over the limit")
        return _decompressor().decompress(body, max_output_size=MAX_DECOMPRESSED)
    except zstandard.ZstdError as exc:
        raise EnvelopeError(f"envelope payload is not valid zstd: {exc}") from None
