"""Group commit: pack lines from concurrent requests into envelope records (pure decisions).

Kinesis bills provisioned streams per PUT payload unit: every started 25 KB of a record
(data plus partition key) is one unit, so a 25.1 KB record costs two. The packer therefore
fills each record to just under ``target`` bytes: lines sharing a header (content type,
source, default service) go into one open record until the raw size, divided by the learnt
compression ratio, reaches the target; if the compressed record still comes out over the
target, the last lines are moved to the next record rather than paying for a second unit.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field

import zstandard

from service import envelope
from service.envelope import ContentType, EnvelopeRecord
from service.ingest.lineblock import LineBlock

MAX_RECORD = 1024 * 1024 - 64  # Kinesis: data + partition key <= 1 MiB
_HASH_SPACE = 2**128
_GOLDEN = 0x9E3779B97F4A7C15F39CC0605CEDC835  # 2^128 / phi: successive keys spread evenly
# Aim a little under the target: an overshoot costs a re-compression of the record.
_AIM = 0.97
# The consumer refuses envelopes that inflate past envelope.MAX_DECOMPRESSED; repetitive
# lines (health checks, error loops) compress 1000x, so raw bytes per record are capped too,
# and the learnt ratio is clamped so one such burst cannot blow up the next estimates.
MAX_RAW = envelope.MAX_DECOMPRESSED - 64 * 1024
_MAX_RATIO = 50.0
# Lines of a request with an Idempotency-Key are cut into envelopes by raw size only, at a
# fixed ratio: a re-sent request must give envelope i the same lines whatever was learnt.
_KEYED_RATIO = 4.0


@dataclass(frozen=True, slots=True)
class Header:
    content_type: ContentType = ContentType.NDJSON
    source: str = ""
    service: str = ""


class Ticket:
    """One request's share of the work: done when every record holding its lines is durable."""

    __slots__ = ("error", "pending", "size", "waiter")

    def __init__(self, size: int = 0) -> None:
        self.pending = 0
        self.size = size  # bytes of the request's lines, held in the budget until done
        self.error: BaseException | None = None
        self.waiter: object = None  # the I/O side keeps its future here


@dataclass
class OpenRecord:
    header: Header
    traceparent: str
    opened_at: float
    received_us: int  # wall clock when the first line arrived (the envelope's receive time)
    parts: list[bytes] = field(default_factory=list)  # whole lines, joined by newlines
    count: int = 0  # lines in ``parts``
    raw_bytes: int = 0
    tickets: list[Ticket] = field(default_factory=list)

    def attach(self, ticket: Ticket) -> None:
        if not self.tickets or self.tickets[-1] is not ticket:
            self.tickets.append(ticket)
            ticket.pending += 1


@dataclass(frozen=True, slots=True)
class SealedRecord:
    """A record ready for PutRecords, with the requests waiting on it."""

    data: bytes
    explicit_hash_key: str
    partition_key: str
    lines: int
    raw_bytes: int
    tickets: tuple[Ticket, ...]
    refused: str = ""  # why it must not be sent (a single incompressible line over 1 MiB)
    producer_seq: int = 0


class Packer:
    """Accumulates lines into open records and seals them by size or age.

    Every sealed record is an envelope named by ``producer_id`` and the next sequence
    (0, 1, 2, … in seal order) and stamped with the wall time it was sealed at; its bytes
    and partition key never change after, so every retry re-sends the same record. Without
    a ``producer_id`` the envelopes are version 1 (no identity, never deduplicated).
    """

    def __init__(self, target_bytes: int, level: int = 1, *, producer_id: bytes = b"") -> None:
        self.target = target_bytes
        self.producer_id = producer_id
        self.ratio = 4.0  # raw/compressed; learnt, starts near what realistic logs give
        self.recompressions = 0
        self._open: dict[Header, OpenRecord] = {}
        self._compressor = zstandard.ZstdCompressor(level=level, write_checksum=True)
        self._seq = 0

    def add(
        self,
        lines: Sequence[bytes],
        header: Header,
        ticket: Ticket,
        *,
        traceparent: str,
        now: float,
        received_us: int,
    ) -> list[SealedRecord]:
        """Add one request's lines (a list, or a ``LineBlock``); return the records that
        became full (sealed at ``received_us``, the wall clock of this call)."""
        sealed: list[SealedRecord] = []
        rec = self._open.get(header)
        if rec is None:
            rec = self._open[header] = OpenRecord(header, traceparent, now, received_us)
        # Whole runs of lines are placed by bisection over their end offsets and added as
        # one slice of the request's buffer, instead of a per-line Python loop.
        block = LineBlock.of(lines)
        upto = block.upto
        i, n = 0, len(block)
        while i < n:
            room = min(self.target * self.ratio * _AIM, MAX_RAW) - rec.raw_bytes
            j = bisect_right(range(n + 1), upto(i) + room, lo=i + 1, key=upto) - 1
            if j <= i:
                if rec.count:  # the open record is full: seal it and retry in a new one
                    sealed.extend(self._seal(header, now, received_us))
                    rec = self._open.setdefault(
                        header, OpenRecord(header, traceparent, now, received_us)
                    )
                    continue
                j = i + 1  # a line bigger than the budget travels alone
            rec.parts.append(block.joined(i, j))
            rec.count += j - i
            rec.raw_bytes += upto(j) - upto(i)
            rec.attach(ticket)
            i = j
        return sealed

    def due(self, now: float, linger: float, wall_us: int = 0) -> list[SealedRecord]:
        """Seal every open record older than ``linger`` seconds (all of them if linger <= 0);
        ``wall_us`` is the wall clock, the envelopes' creation time."""
        out: list[SealedRecord] = []
        for header, rec in list(self._open.items()):
            if now - rec.opened_at >= linger:
                out.extend(self._seal(header, now, wall_us))
        return out

    @property
    def open_bytes(self) -> int:
        """Raw bytes of the lines in open records (what sealing them all compresses)."""
        return sum(r.raw_bytes for r in self._open.values())

    def oldest(self) -> float | None:
        return min((r.opened_at for r in self._open.values()), default=None)

    def _seal(self, header: Header, now: float, created_us: int) -> list[SealedRecord]:
        """Encode the open record; lines that do not fit the target stay open (new record)."""
        rec = self._open.pop(header)
        seq = self._seq
        self._seq += 1
        ident = _Identity(self.producer_id, seq, created_us)
        received_us = rec.received_us
        count = rec.count
        data, payload_len = self._encode(rec, rec.parts, count, ident)
        limit = self.target - 12  # the partition key counts too
        if len(data) > limit and count > 1:  # rare: cut at a line inside the parts
            lines = b"\n".join(rec.parts).split(b"\n")
            while len(data) > limit and count > 1:
                self.recompressions += 1
                count = max(1, min(count - 1, int(count * limit / len(data) * 0.98)))
                data, payload_len = self._encode(rec, lines[:count], count, ident)
            rest = OpenRecord(header, rec.traceparent, now, received_us, lines[count:])
            rest.count = len(rest.parts)
            rest.raw_bytes = sum(len(x) + 1 for x in rest.parts)
            for ticket in rec.tickets:  # conservative: each may own some of the moved lines
                rest.attach(ticket)
            self._open[header] = rest
        learnt = 0.8 * self.ratio + 0.2 * max(1.0, payload_len / max(1, len(data)))
        self.ratio = min(_MAX_RATIO, learnt)
        return [self._record(rec, data, count, payload_len, seq)]

    def _encode(
        self, rec: OpenRecord, parts: list[bytes], count: int, ident: _Identity
    ) -> tuple[bytes, int]:
        return encode_envelope(
            self._compressor,
            parts,
            count,
            header=rec.header,
            traceparent=rec.traceparent,
            received_us=rec.received_us,
            ident=ident,
        )

    def _record(self, rec: OpenRecord, data: bytes, lines: int, raw: int, seq: int) -> SealedRecord:
        # Successive sequences spread evenly over the hash space (every shard gets its share).
        hash_key = ((seq + 1) * _GOLDEN) % _HASH_SPACE
        return sealed_record(
            data,
            str(hash_key),
            f"t{seq}",
            lines=lines,
            raw=raw,
            tickets=tuple(rec.tickets),
            seq=seq,
        )


@dataclass(frozen=True, slots=True)
class _Identity:
    producer_id: bytes
    seq: int
    created_us: int


def encode_envelope(
    compressor: zstandard.ZstdCompressor,
    parts: Sequence[bytes],
    count: int,
    *,
    header: Header,
    traceparent: str,
    received_us: int,
    ident: _Identity,
) -> tuple[bytes, int]:
    """The envelope bytes of ``count`` lines (``parts`` joined by newlines) and the raw size."""
    payload = b"\n".join(parts)
    env = EnvelopeRecord(
        payload=b"",
        line_count=count,
        received_us=received_us,
        content_type=header.content_type,
        source=header.source,
        service=header.service,
        traceparent=traceparent,
        producer_id=ident.producer_id,
        producer_seq=ident.seq,
        created_us=ident.created_us,
    )
    return envelope.encode_compressed(env, compressor.compress(payload)), len(payload)


def sealed_record(
    data: bytes,
    hash_key: str,
    partition_key: str,
    *,
    lines: int,
    raw: int,
    tickets: tuple[Ticket, ...],
    seq: int,
) -> SealedRecord:
    refused = ""
    if len(data) > MAX_RECORD:  # only a single, nearly incompressible line gets here
        refused = f"a line compresses to {len(data)} bytes, over the 1 MiB Kinesis record limit"
    return SealedRecord(data, hash_key, partition_key, lines, raw, tickets, refused, seq)


def keyed_producer_id(caller: str, idempotency_key: str) -> bytes:
    """The producer id of a request sent with an Idempotency-Key (16 bytes, deterministic).

    ``caller`` names the API key (its configured digest), so two clients choosing the same
    idempotency key never collide.
    """
    digest = hashlib.sha256(b"tideway-idempotency\x00")
    digest.update(caller.encode() + b"\x00" + idempotency_key.encode())
    return digest.digest()[:16]


def pack_keyed(
    lines: Sequence[bytes],
    header: Header,
    ticket: Ticket,
    *,
    producer_id: bytes,
    target_bytes: int,
    traceparent: str,
    received_us: int,
    level: int = 1,
) -> list[SealedRecord]:
    """One request's lines in envelopes of their own, sequences 0..n-1 of ``producer_id``.

    The cut depends only on the lines and ``target_bytes`` (never on a learnt ratio), and
    each envelope's partition key and hash key only on its identity, so the same request
    sent again gives the same identities on the same shards. Raw bytes per envelope are
    capped at ``target_bytes`` x 4 (a typical log ratio; at most 960 KiB): an envelope may cost more than
    one PUT unit when its lines compress less well, never more than Kinesis allows.
    """
    block = LineBlock.of(lines)
    upto = block.upto
    room = min(target_bytes * _KEYED_RATIO, MAX_RECORD - 64 * 1024)
    compressor = zstandard.ZstdCompressor(level=level, write_checksum=True)
    out: list[SealedRecord] = []
    i, n = 0, len(block)
    while i < n:
        j = bisect_right(range(n + 1), upto(i) + room, lo=i + 1, key=upto) - 1
        j = max(j, i + 1)
        seq = len(out)
        ident = _Identity(producer_id, seq, received_us)
        data, raw = encode_envelope(
            compressor,
            [block.joined(i, j)],
            j - i,
            header=header,
            traceparent=traceparent,
            received_us=received_us,
            ident=ident,
        )
        ticket.pending += 1
        key = hashlib.sha256(producer_id + seq.to_bytes(8, "big")).digest()
        hash_key = str(int.from_bytes(key[:16], "big"))
        out.append(
            sealed_record(
                data, hash_key, f"k{seq}", lines=j - i, raw=raw, tickets=(ticket,), seq=seq
            )
        )
        i = j
    return out


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


# Hold a call only if arrivals would make it at least this much fuller: below that, the
# wait would add latency and save almost no calls.
_MIN_HOLD_GAIN = 0.25


def call_hold(
    queued: int, arrived: int, last_call_seconds: float, *, full: int, max_hold: float
) -> float:
    """Seconds to hold the next PutRecords call of a sender whose last call has just ended,
    so that records arriving meanwhile join it (each call costs ~2-4 ms of botocore CPU
    whatever its size, so fuller calls cost less CPU per line).

    ``arrived`` bytes of records were queued while that call (``last_call_seconds``) was in
    flight: their rate is the load now. 0 when ``queued`` bytes already fill a call
    (``full``), or when that rate would add less than a quarter of ``queued`` within
    ``max_hold`` (light load: holding would only add latency); else the time for arrivals
    to fill the call, at most ``max_hold``. A sender that was idle never calls this.
    """
    if queued >= full or arrived <= 0 or last_call_seconds <= 0 or max_hold <= 0:
        return 0.0
    rate = arrived / last_call_seconds
    if rate * max_hold < queued * _MIN_HOLD_GAIN:
        return 0.0
    return min(max_hold, (full - queued) / rate)
