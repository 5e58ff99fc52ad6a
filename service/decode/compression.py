"""Bounded gzip and zstd decompression of one record (pure).

A record is at most 1 MiB on the wire, but a crafted one can expand to gigabytes, and a
crafted zstd frame header can declare any content size. Neither function allocates
output past ``limit`` bytes: gzip is inflated with zlib's ``max_length``; zstd frames are
walked block by block first (RFC 8878), so the worst-case output is known before any
byte is inflated, and a truncated or trailing-garbage stream is refused by structure.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import zstandard

from service.errors import DecodeError

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_SKIPPABLE_MASK = 0xFFFFFFF0
_SKIPPABLE_MAGIC = 0x184D2A50
_BLOCK_MAX = 128 * 1024  # RFC 8878 3.1.1.2.4: no block regenerates more than 128 KiB
_U32LE = struct.Struct("<I")
_FCS_SIZES = (0, 2, 4, 8)
_DICT_ID_SIZES = (0, 1, 2, 4)
_OVER_LIMIT = "decompressed size over limit"


def gunzip(data: bytes, limit: int) -> bytes:
    """Inflate every gzip member of ``data``; raise DecodeError when corrupt, cut or over ``limit``."""
    parts: list[bytes] = []
    produced = 0
    rest = data
    while True:
        inflater = zlib.decompressobj(wbits=31)
        try:
            out = inflater.decompress(rest, limit - produced + 1)
        except zlib.error:
            raise DecodeError("gzip data corrupt") from None
        produced += len(out)
        if produced > limit:
            raise DecodeError(_OVER_LIMIT)
        parts.append(out)
        if not inflater.eof:
            raise DecodeError("gzip stream truncated")
        rest = inflater.unused_data
        if not rest:
            break
        if rest[:2] != GZIP_MAGIC:
            raise DecodeError("gzip trailing garbage")
    return parts[0] if len(parts) == 1 else b"".join(parts)


def unzstd(data: bytes, limit: int) -> bytes:
    """Decompress every zstd frame of ``data``; raise DecodeError when corrupt, cut or over ``limit``."""
    parts: list[bytes] = []
    produced = 0
    pos = 0
    while pos < len(data):
        frame = _next_zstd_frame(data, pos)
        pos = frame.end
        if not frame.blocks:  # skippable frame
            continue
        remaining = limit - produced
        try:
            if frame.bound <= remaining:
                out = zstandard.ZstdDecompressor().decompress(
                    data[frame.start : frame.end], max_output_size=frame.bound
                )
            else:
                out = _unzstd_blockwise(data, frame, remaining)
        except zstandard.ZstdError:
            raise DecodeError("zstd data corrupt") from None
        produced += len(out)
        parts.append(out)
    return parts[0] if len(parts) == 1 else b"".join(parts)


@dataclass(frozen=True, slots=True)
class _ZstdFrame:
    start: int
    end: int
    bound: int  # worst-case output: the declared content size, else the sum of block bounds
    blocks: tuple[tuple[int, int], ...]  # (end offset, worst-case output) of each block


def _unzstd_blockwise(data: bytes, frame: _ZstdFrame, remaining: int) -> bytes:
    # The worst case exceeds the budget, yet the real size may not (a stream flushed in
    # many small blocks): feed one block at a time and refuse before a block could cross it.
    out = bytearray()
    inflater = zstandard.ZstdDecompressor().decompressobj()
    fed = frame.start
    for i, (block_end, block_bound) in enumerate(frame.blocks):
        if len(out) + block_bound > remaining:
            raise DecodeError(_OVER_LIMIT)
        stop = frame.end if i == len(frame.blocks) - 1 else block_end
        out += inflater.decompress(data[fed:stop])
        fed = stop
    return bytes(out)


def _next_zstd_frame(data: bytes, pos: int) -> _ZstdFrame:
    size = len(data)
    if size - pos < 4:
        raise DecodeError("zstd trailing garbage")
    (magic,) = _U32LE.unpack_from(data, pos)
    if magic & _SKIPPABLE_MASK == _SKIPPABLE_MAGIC:
        if size - pos < 8:
            raise DecodeError("zstd stream truncated")
        end = pos + 8 + _U32LE.unpack_from(data, pos + 4)[0]
        if end > size:
            raise DecodeError("zstd stream truncated")
        return _ZstdFrame(pos, end, 0, ())
    if data[pos : pos + 4] != ZSTD_MAGIC:
        raise DecodeError("zstd trailing garbage")
    return _zstd_frame_layout(data, pos)


def _zstd_frame_layout(data: bytes, start: int) -> _ZstdFrame:
    size = len(data)
    pos = start + 4
    if pos >= size:
        raise DecodeError("zstd stream truncated")
    descriptor = data[pos]
    if descriptor & 0x08:
        raise DecodeError("zstd frame header invalid")
    single_segment = bool(descriptor & 0x20)
    fcs_size = _FCS_SIZES[descriptor >> 6] or (1 if single_segment else 0)
    pos += 1 + (0 if single_segment else 1) + _DICT_ID_SIZES[descriptor & 0x03]
    if pos + fcs_size > size:
        raise DecodeError("zstd stream truncated")
    declared = int.from_bytes(data[pos : pos + fcs_size], "little") if fcs_size else -1
    if fcs_size == 2:
        declared += 256
    pos += fcs_size
    blocks: list[tuple[int, int]] = []
    bound = 0
    last = False
    while not last:  # one iteration per block: about 8 for each MiB of output
        if pos + 3 > size:
            raise DecodeError("zstd stream truncated")
        header = int.from_bytes(data[pos : pos + 3], "little")
        last = bool(header & 1)
        block_type = (header >> 1) & 3
        block_size = header >> 3
        if block_type == 3:
            raise DecodeError("zstd frame header invalid")
        pos += 3 + (1 if block_type == 1 else block_size)
        block_bound = _BLOCK_MAX if block_type == 2 else block_size
        bound += block_bound
        blocks.append((pos, block_bound))
    pos += 4 if descriptor & 0x04 else 0
    if pos > size:
        raise DecodeError("zstd stream truncated")
    if declared > bound:  # a lying header would make the one-shot path allocate it
        raise DecodeError("zstd frame header invalid")
    return _ZstdFrame(start, pos, bound if declared < 0 else declared, tuple(blocks))
