"""Envelopes already landed, per shard (pure: no I/O, no clock).

The consumer half of the idempotent producer. For one shard it remembers, per producer id,
the sequences of the envelopes it admitted, each with the envelope's creation time (ms).
A sequence leaves the state once its creation time is more than ``window_ms`` older than
the newest creation time seen from the same producer on this shard, and a producer leaves
once its newest is more than ``window_ms`` older than the newest creation time seen on the
shard from any producer. Both clocks are read from the records, never from this machine,
so the same state over the same records always admits the same envelopes (a replay from a
checkpoint's state decides exactly as the first reading did).

A copy of an envelope is dropped when its (producer, sequence) is still in the state.
The producer re-sends a record only until its put deadline, so a window of at least that
deadline (plus time queued in serve) catches every retry; ``max_entries`` bounds the state
whatever the rate: past it the oldest entries go first, which narrows the window on a
shard that takes many small records (docs/operations.md gives the figures).

``encode`` gives a compact byte string (zstd of delta varints) that keeps every detail
that decides a later admission, entry order included; ``decode`` restores it exactly;
``merge`` gives a child shard the union of its parents' states after a reshard.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

import zstandard

from service.envelope import DEDUPE_WINDOW_MS, PRODUCER_ID_BYTES
from service.errors import TidewayError

DEFAULT_WINDOW_MS = DEDUPE_WINDOW_MS  # 15x the default put deadline (20 s)
DEFAULT_MAX_ENTRIES = 30_000  # 30 s of window even at 1,000 records/s (the shard limit)
_MAGIC = b"TWD1"
_MAX_DECODED = 64 * 1024 * 1024
# Stale producers are swept when the shard's newest creation time crosses a step, not on
# every admission (a sweep is a pass over every producer); the step is part of the rule,
# so the sweep points depend on the records only.
_SWEEP_STEPS = 8
_SHRINK_TO = 0.9  # past max_entries, evict down to this fraction (amortised cost)


class DedupeStateError(TidewayError):
    """Bytes that are not a dedupe state (a corrupt checkpoint): the reason says why."""


class _Producer:
    __slots__ = ("newest_ms", "seqs")

    def __init__(self, newest_ms: int) -> None:
        self.newest_ms = newest_ms
        self.seqs: OrderedDict[int, int] = OrderedDict()  # seq -> created ms, arrival order


class ShardDedupe:
    """The landed envelopes of one shard; see the module docstring for the rule."""

    def __init__(
        self, window_ms: int = DEFAULT_WINDOW_MS, max_entries: int = DEFAULT_MAX_ENTRIES
    ) -> None:
        if window_ms <= 0 or max_entries <= 0:
            raise ValueError("window_ms and max_entries must be positive")
        self.window_ms = window_ms
        self.max_entries = max_entries
        self.newest_ms: int | None = None
        self.entries = 0
        self._producers: dict[bytes, _Producer] = {}

    def __len__(self) -> int:
        return self.entries

    @property
    def producers(self) -> int:
        return len(self._producers)

    def seen(self, producer_id: bytes, seq: int) -> bool:
        """True when the envelope (producer_id, seq) was admitted and is still remembered."""
        p = self._producers.get(producer_id)
        return p is not None and seq in p.seqs

    def admit(self, producer_id: bytes, seq: int, created_us: int) -> bool:
        """Admit an envelope (True) or name it a copy of one already landed (False).

        An envelope without identity (version 1, other formats: empty ``producer_id``) is
        always admitted and never remembered.
        """
        if not producer_id:
            return True
        if len(producer_id) != PRODUCER_ID_BYTES:
            raise ValueError(f"a producer id is {PRODUCER_ID_BYTES} bytes")
        created = created_us // 1000
        p = self._producers.get(producer_id)
        if p is None:
            p = self._producers[producer_id] = _Producer(created)
        elif seq in p.seqs:
            return False
        p.seqs[seq] = created
        self.entries += 1
        p.newest_ms = max(p.newest_ms, created)
        self._forget_older_than(p, p.newest_ms - self.window_ms)
        self._advance(created)
        if self.entries > self.max_entries:
            self._shrink()
        return True

    def _forget_older_than(self, p: _Producer, cutoff: int) -> None:
        seqs = p.seqs
        while seqs:
            first = next(iter(seqs))
            if seqs[first] >= cutoff:
                return
            del seqs[first]
            self.entries -= 1

    def _advance(self, created: int) -> None:
        old = self.newest_ms
        if old is not None and created <= old:
            return
        self.newest_ms = created
        step = max(1, self.window_ms // _SWEEP_STEPS)
        if old is not None and created // step != old // step:
            self._sweep(created - self.window_ms)

    def _sweep(self, cutoff: int) -> None:
        for pid in [pid for pid, p in self._producers.items() if p.newest_ms < cutoff]:
            self.entries -= len(self._producers.pop(pid).seqs)

    def _shrink(self) -> None:
        """Over the entry bound: forget the oldest entries (creation time, then producer id,
        then sequence) until 90% of the bound is left."""
        keep = max(1, int(self.max_entries * _SHRINK_TO))
        ordered = sorted(
            (t, pid, seq) for pid, p in self._producers.items() for seq, t in p.seqs.items()
        )
        for _, pid, seq in ordered[: len(ordered) - keep]:
            p = self._producers[pid]
            del p.seqs[seq]
            self.entries -= 1
            if not p.seqs:
                del self._producers[pid]

    def encode(self) -> bytes:
        """The whole state as compact bytes: magic, then one zstd frame of varints."""
        out = bytearray()
        for value in (self.window_ms, self.max_entries, len(self._producers)):
            _uvarint(out, value)
        _svarint(out, self.newest_ms if self.newest_ms is not None else 0)
        out.append(self.newest_ms is not None)
        for pid, p in self._producers.items():
            out += pid
            _svarint(out, p.newest_ms)
            _uvarint(out, len(p.seqs))
            prev_seq, prev_t = 0, p.newest_ms
            for seq, t in p.seqs.items():
                _svarint(out, seq - prev_seq)
                _svarint(out, t - prev_t)
                prev_seq, prev_t = seq, t
        return _MAGIC + zstandard.ZstdCompressor(level=9).compress(bytes(out))

    @classmethod
    def decode(cls, data: bytes) -> ShardDedupe:
        """The state ``encode`` wrote; raise DedupeStateError on any other bytes."""
        if data[:4] != _MAGIC:
            raise DedupeStateError("not a dedupe state (bad magic)")
        try:
            raw = zstandard.ZstdDecompressor().decompress(data[4:], max_output_size=_MAX_DECODED)
        except zstandard.ZstdError as exc:
            raise DedupeStateError(f"dedupe state is not valid zstd: {exc}") from None
        reader = _Reader(raw)
        try:
            state = cls._read(reader)
        except (IndexError, ValueError) as exc:
            raise DedupeStateError(f"dedupe state is corrupt: {exc}") from None
        if reader.pos != len(raw):
            raise DedupeStateError("dedupe state has trailing bytes")
        return state

    @classmethod
    def _read(cls, r: _Reader) -> ShardDedupe:
        state = cls(r.uvarint(), r.uvarint())
        count = r.uvarint()
        newest = r.svarint()
        state.newest_ms = newest if r.byte() else None
        for _ in range(count):
            pid = r.take(PRODUCER_ID_BYTES)
            if pid in state._producers:
                raise ValueError("a producer listed twice")
            p = state._producers[pid] = _Producer(r.svarint())
            prev_seq, prev_t = 0, p.newest_ms
            for _ in range(r.uvarint()):
                prev_seq += r.svarint()
                prev_t += r.svarint()
                if prev_seq in p.seqs:
                    raise ValueError("a sequence listed twice")
                p.seqs[prev_seq] = prev_t
            state.entries += len(p.seqs)
        return state


def merge(parents: Iterable[ShardDedupe]) -> ShardDedupe:
    """A child shard's starting state: the union of its parents' (pass them in shard order).

    A producer's entries are ordered by creation time, then sequence; the window and bound
    are the largest of the parents'. The union is shrunk to the bound like any state.
    """
    parents = list(parents)
    child = ShardDedupe(
        max((p.window_ms for p in parents), default=DEFAULT_WINDOW_MS),
        max((p.max_entries for p in parents), default=DEFAULT_MAX_ENTRIES),
    )
    newest = [p.newest_ms for p in parents if p.newest_ms is not None]
    child.newest_ms = max(newest) if newest else None
    union: dict[bytes, tuple[int, dict[int, int]]] = {}
    for parent in parents:
        for pid, p in parent._producers.items():
            top, seqs = union.get(pid, (p.newest_ms, {}))
            for seq, t in p.seqs.items():
                seqs[seq] = max(t, seqs.get(seq, t))
            union[pid] = (max(top, p.newest_ms), seqs)
    for pid in sorted(union):
        top, seqs = union[pid]
        p = child._producers[pid] = _Producer(top)
        for seq in sorted(seqs, key=lambda s: (seqs[s], s)):
            p.seqs[seq] = seqs[seq]
        child.entries += len(p.seqs)
    if child.entries > child.max_entries:
        child._shrink()
    return child


def _uvarint(out: bytearray, value: int) -> None:
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _svarint(out: bytearray, value: int) -> None:
    _uvarint(out, (value << 1) if value >= 0 else ((-value) << 1) - 1)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        b = self.data[self.pos]
        self.pos += 1
        return b

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ValueError("truncated")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def uvarint(self) -> int:
        shift = value = 0
        while True:
            b = self.byte()
            value |= (b & 0x7F) << shift
            if b < 0x80:
                return value
            shift += 7
            if shift > 70:
                raise ValueError("varint too long")

    def svarint(self) -> int:
        z = self.uvarint()
        return (z >> 1) if not z & 1 else -((z + 1) >> 1)
