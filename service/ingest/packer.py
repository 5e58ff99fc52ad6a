"""Group commit: pack lines from concurrent requests into envelope records (pure decisions).

Lines sharing a header (content type, source, default service) go into one open record
until its estimated compressed size reaches the target (25 KiB by default: the Kinesis
PUT payload unit, so each record costs one unit and carries ~70 typical lines). The
compression ratio is learnt from the records already sealed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import zstandard

from service import envelope
from service.envelope import ContentType, EnvelopeRecord

MAX_RECORD = 1_000_000  # Kinesis: data + partition key <= 1 MiB; keep a margin
_HASH_SPACE = 2**128
_GOLDEN = 0x9E3779B97F4A7C15F39CC0605CEDC835  # 2^128 / phi: successive keys spread evenly


@dataclass(frozen=True, slots=True)
class Header:
    content_type: ContentType = ContentType.NDJSON
    source: str = ""
    service: str = ""


class Ticket:
    """One request's share of the work: done when every record holding its lines is durable."""

    __slots__ = ("error", "pending", "waiter")

    def __init__(self) -> None:
        self.pending = 0
        self.error: BaseException | None = None
        self.waiter: object = None  # the I/O side keeps its future here


@dataclass
class OpenRecord:
    header: Header
    traceparent: str
    opened_at: float
    lines: list[bytes] = field(default_factory=list)
    raw_bytes: int = 0
    tickets: list[Ticket] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class SealedRecord:
    """A record ready for PutRecords, with the requests waiting on it."""

    data: bytes
    explicit_hash_key: str
    partition_key: str
    lines: int
    raw_bytes: int
    tickets: tuple[Ticket, ...]


class Packer:
    """Accumulates lines into open records and seals them by size or age."""

    def __init__(self, target_bytes: int, level: int = 3) -> None:
        self.target = target_bytes
        self.ratio = 4.0  # raw/compressed; learnt, starts near what realistic logs give
        self._open: dict[Header, OpenRecord] = {}
        self._compressor = zstandard.ZstdCompressor(level=level, write_checksum=True)
        self._counter = 0

    def add(
        self,
        lines: list[bytes],
        header: Header,
        ticket: Ticket,
        *,
        traceparent: str,
        now: float,
        received_us: int,
    ) -> list[SealedRecord]:
        """Add one request's lines; return the records that became full."""
        sealed: list[SealedRecord] = []
        budget = self.target * self.ratio
        for line in lines:
            rec = self._open.get(header)
            if rec is None:
                rec = self._open[header] = OpenRecord(header, traceparent, now)
            if rec.lines and rec.raw_bytes + len(line) > budget:
                sealed.extend(self._seal(header, received_us))
                rec = self._open[header] = OpenRecord(header, traceparent, now)
            rec.lines.append(line)
            rec.raw_bytes += len(line) + 1
            if not rec.tickets or rec.tickets[-1] is not ticket:
                rec.tickets.append(ticket)
                ticket.pending += 1
        return sealed

    def due(self, now: float, linger: float) -> list[SealedRecord]:
        """Seal every open record older than ``linger`` seconds (all of them if linger <= 0)."""
        out: list[SealedRecord] = []
        for header, rec in list(self._open.items()):
            if now - rec.opened_at >= linger:
                out.extend(self._seal(header, int(now * 1e6)))
        return out

    def oldest(self) -> float | None:
        return min((r.opened_at for r in self._open.values()), default=None)

    def _seal(self, header: Header, received_us: int) -> list[SealedRecord]:
        rec = self._open.pop(header)
        return self._encode(rec, rec.lines, received_us)

    def _encode(self, rec: OpenRecord, lines: list[bytes], received_us: int) -> list[SealedRecord]:
        payload = b"\n".join(lines)
        compressed = self._compressor.compress(payload)
        env = EnvelopeRecord(
            payload=b"",
            line_count=len(lines),
            received_us=received_us,
            content_type=rec.header.content_type,
            source=rec.header.source,
            service=rec.header.service,
            traceparent=rec.traceparent,
        )
        data = envelope.encode_compressed(env, compressed)
        if len(data) > MAX_RECORD and len(lines) > 1:
            half = len(lines) // 2  # rare: incompressible lines; split until each fits
            for t in rec.tickets:
                t.pending += 1  # the ticket now waits on one more record
            return self._encode(rec, lines[:half], received_us) + self._encode(
                rec, lines[half:], received_us
            )
        self.ratio = 0.8 * self.ratio + 0.2 * max(1.0, len(payload) / max(1, len(compressed)))
        self._counter += 1
        hash_key = (self._counter * _GOLDEN) % _HASH_SPACE
        return [
            SealedRecord(
                data=data,
                explicit_hash_key=str(hash_key),
                partition_key=f"t{self._counter}",
                lines=len(lines),
                raw_bytes=len(payload),
                tickets=tuple(rec.tickets),
            )
        ]


def put_batches(
    records: list[SealedRecord], max_entries: int = 500, max_bytes: int = 5 * 1024 * 1024
) -> list[list[SealedRecord]]:
    """Split records into PutRecords calls within Kinesis limits (500 entries, 5 MiB)."""
    batches: list[list[SealedRecord]] = []
    current: list[SealedRecord] = []
    size = 0
    for rec in records:
        rec_size = len(rec.data) + len(rec.partition_key)
        if current and (len(current) >= max_entries or size + rec_size > max_bytes):
            batches.append(current)
            current, size = [], 0
        current.append(rec)
        size += rec_size
    if current:
        batches.append(current)
    return batches
