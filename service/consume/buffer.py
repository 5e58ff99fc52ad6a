"""A shard's unflushed records and the pure decision of when to flush them."""

from __future__ import annotations

from dataclasses import dataclass, field

from service.consume.dedupe import ShardDedupe
from service.decode import DecoderConfig, RecordMeta, decode_record
from service.decode.types import DecodedRecord
from service.errors import DecodeError
from service.sink.plan import DeadLetter

# Python objects around each record's bytes (DecodedRecord, RecordMeta, LineBatch, tuple,
# bytes headers, list slot): measured with sys.getsizeof on decoded envelope records.
RECORD_OVERHEAD = 400
# What a flush of the buffer holds at its peak (buffer, Arrow table, one partition's gathered
# copy, the Parquet writer's pages and bodies), measured with benchmarks/takeover_rss.py and
# ru_maxrss around plan_flush (docs/operations.md "Memory"): ~3.5-4x the decoded bytes for
# lines of a few hundred bytes, plus ~300 B of Arrow and Python per row, which is what
# tiny rows cost (1M lines of 14 bytes peak at 339 MiB: 355 B a row); lines of several KiB
# and more cost ~6-7x their bytes (the Parquet dictionary and zstd windows of long values).
FLUSH_WORKING_SET = 4  # per decoded byte
LINE_CHARGE = 320  # per line (row), beside its bytes
LONG_LINE = 4096  # a record whose lines average this many bytes or more ...
LONG_LINE_WORKING_SET = 7  # ... is charged this many times its bytes instead
DUPLICATE = "duplicate envelope"  # a copy of an envelope already landed (a re-sent put)


def record_charge(payload: int, lines: int, routing: tuple[int, int] = (0, 0)) -> int:
    """The bytes a flush holds at its peak for one record of ``payload`` decoded bytes in
    ``lines`` lines (with the record's own objects, RECORD_OVERHEAD); ``routing``: what the
    pipelines hold beside it, per byte and per line (service.pipeline.cost)."""
    per_byte = LONG_LINE_WORKING_SET if payload >= LONG_LINE * max(1, lines) else FLUSH_WORKING_SET
    per_byte += routing[0]
    return payload * per_byte + lines * (LINE_CHARGE + routing[1]) + RECORD_OVERHEAD


@dataclass
class ShardBuffer:
    """Decoded records of one contiguous sequence range ``[first, last]`` of one shard."""

    records: list[DecodedRecord] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    first: int | None = None
    last: int | None = None
    size: int = 0  # bytes held: payloads, dead letters and per-record object overhead
    charge: int = 0  # what a flush of it holds at its peak (record_charge of each record)
    lines: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    opened_at: float | None = None  # monotonic time of the first record
    # What the flush's pipelines hold per decoded byte and per line (routing_cost).
    routing: tuple[int, int] = (0, 0)

    def __bool__(self) -> bool:
        return self.last is not None

    def add(
        self,
        data: bytes,
        meta: RecordMeta,
        decoders: DecoderConfig,
        now: float,
        dedupe: ShardDedupe | None = None,
    ) -> None:
        """Decode one record into the buffer; a bad record becomes a dead letter, never lost;
        an envelope ``dedupe`` has seen land already is a copy and yields no rows."""
        seq = meta.sequence_number
        if self.first is None:
            self.first = seq
            self.opened_at = now
        self.last = seq
        try:
            decoded = decode_record(data, decoders)
        except DecodeError as exc:
            self.dead.append(DeadLetter(meta, data, exc.reason))
            self.size += len(data) + len(exc.reason) + RECORD_OVERHEAD
            self.charge += record_charge(len(data) + len(exc.reason), 1)
            return
        if dedupe is not None and not dedupe.admit(
            decoded.producer_id, decoded.producer_seq, decoded.created_us
        ):
            self.skipped[DUPLICATE] = self.skipped.get(DUPLICATE, 0) + 1
            return
        if decoded.skipped:
            self.skipped[decoded.skipped] = self.skipped.get(decoded.skipped, 0) + 1
        if decoded.batches:
            # Plain JSON and text payloads hold the record's own content; every other format's
            # raw bytes are kept so a dead letter can be replayed as it was read (DESIGN §10).
            raw = b"" if decoded.format in ("json", "ndjson", "text") else data
            self.records.append(DecodedRecord(meta, decoded.batches, raw))
            payload = sum(len(b.payload) for b in decoded.batches) + len(raw)
            self.size += payload + RECORD_OVERHEAD
            self.charge += record_charge(payload, decoded.line_count, self.routing)
            self.lines += decoded.line_count


@dataclass(frozen=True, slots=True)
class FlushPolicy:
    """Flush triggers: bytes, age (max latency) and this shard's share of the memory budget.

    The memory trigger compares what the flush itself will hold (``ShardBuffer.charge``:
    bytes and lines) with the shard's share, so many tiny rows flush as early as few big ones.
    """

    max_bytes: int
    max_age: float

    def reason(self, buffer: ShardBuffer, now: float, budget_share: int) -> str | None:
        """Why ``buffer`` must be flushed now, or None."""
        if not buffer:
            return None
        if buffer.size >= self.max_bytes:
            return "size"
        if buffer.charge >= budget_share:
            return "memory"
        if buffer.opened_at is not None and now - buffer.opened_at >= self.max_age:
            return "age"
        return None
