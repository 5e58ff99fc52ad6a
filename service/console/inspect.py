"""One dead letter decoded as far as it goes (pure): each step and what it gave.

base64 -> raw bytes (a hex preview) -> the format its first bytes name -> the decoders of
today's configuration (lines, or the DecodeError they raise now) -> for compressed bytes
that do not decode, the decompressed text.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from service import envelope
from service.decode import DecoderConfig, decode_record
from service.decode.compression import GZIP_MAGIC, ZSTD_MAGIC, gunzip, unzstd
from service.decode.kpl import MAGIC as KPL_MAGIC
from service.errors import DecodeError

PREVIEW_BYTES = 512
PREVIEW_LINES = 20
_MAGICS = (
    (envelope.MAGIC, "Tideway envelope"),
    (KPL_MAGIC, "KPL aggregate"),
    (GZIP_MAGIC, "gzip"),
    (ZSTD_MAGIC, "zstd"),
    (b"\xc3\x01", "Avro single-object"),
    (b"\x00", "Avro Confluent wire format"),
    (b"{", "JSON object"),
    (b"[", "JSON array"),
)


@dataclass(frozen=True, slots=True)
class Step:
    name: str
    ok: bool
    detail: str
    preview: str = ""


@dataclass(frozen=True, slots=True)
class Inspection:
    reason: str
    shard_id: str
    sequence_number: str
    sub_sequence: int | None
    arrival_time: str
    size: int | None
    steps: tuple[Step, ...] = field(default=())


def hex_preview(data: bytes, limit: int = PREVIEW_BYTES) -> str:
    """``offset  hex  ascii`` lines of the first ``limit`` bytes, as hexdump -C shows them."""
    lines = []
    for at in range(0, min(len(data), limit), 16):
        chunk = data[at : at + 16]
        hexes = " ".join(f"{b:02x}" for b in chunk)
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{at:08x}  {hexes:<47}  |{text}|")
    if len(data) > limit:
        lines.append(f"… {len(data) - limit} more bytes")
    return "\n".join(lines)


def sniff(data: bytes) -> str:
    """What the first bytes say the record is (a hint, not a verdict)."""
    for magic, name in _MAGICS:
        if data.startswith(magic):
            return name
    return "text or unknown bytes" if data else "empty"


def _decompressed(data: bytes, limit: int) -> Step | None:
    try:
        if data.startswith(GZIP_MAGIC):
            inner = gunzip(data, limit)
        elif data.startswith(ZSTD_MAGIC):
            inner = unzstd(data, limit)
        else:
            return None
    except DecodeError as exc:
        return Step("decompress", False, exc.reason)
    text = inner[: PREVIEW_BYTES * 4].decode("utf-8", "replace")
    return Step("decompress", True, f"{len(inner)} bytes", text)


def inspect_entry(entry: Mapping[str, Any], config: DecoderConfig) -> Inspection:
    """Every step of decoding one dead-letter entry (docs/formats.md), never raising."""
    steps: list[Step] = []
    data: bytes | None = None
    try:
        data = base64.b64decode(str(entry.get("data", "")), validate=True)
        steps.append(Step("base64", True, f"{len(data)} bytes", hex_preview(data)))
    except (binascii.Error, ValueError) as exc:
        steps.append(Step("base64", False, f"data is not base64: {exc}"))
    if data is not None:
        steps.append(Step("format", True, sniff(data)))
        try:
            decoded = decode_record(data, config)
        except DecodeError as exc:
            steps.append(Step("decode today", False, str(exc)))
            inner = _decompressed(data, config.max_decompressed_bytes)
            if inner is not None:
                steps.append(inner)
        else:
            lines = [
                line.decode("utf-8", "replace")
                for batch in decoded.batches
                for line in batch.payload.split(b"\n")
            ]
            detail = f"{decoded.format}: {decoded.line_count} lines"
            if decoded.skipped:
                detail += f" (skipped: {decoded.skipped})"
            steps.append(Step("decode today", True, detail, "\n".join(lines[:PREVIEW_LINES])))
    sub = entry.get("kinesis_sub_sequence")
    return Inspection(
        reason=str(entry.get("reason", "")),
        shard_id=str(entry.get("kinesis_shard_id", "")),
        sequence_number=str(entry.get("kinesis_sequence_number", "")),
        sub_sequence=sub if isinstance(sub, int) else None,
        arrival_time=str(entry.get("arrival_time", "")),
        size=len(data) if data is not None else None,
        steps=tuple(steps),
    )
