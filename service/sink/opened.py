"""The partitions a shard has opened in the current hour, capped across flushes (pure).

The per-flush guard (``partition.guard_partitions``) bounds one flush; a producer that
sends new service names in every flush would still open ``max_partitions`` new partitions
(and Glue partitions) a flush. ``OpenedPartitions`` is the set a shard opened in the hour
of Kinesis arrival of its latest flushed record: at most ``limit`` (hour, service) pairs,
one of them kept for ``__other__`` until one is open. It is an input of the flush plan
(pinned with the intent, so a replay chooses the same partitions) and an output (written
with the checkpoint, so a restart or a hand-off keeps the bound).
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from service.errors import DecodeError
from service.sink.template import OTHER_SERVICE

HOUR_US = 3_600_000_000
_MAGIC = b"OP1"
_HEAD = struct.Struct("<qI")  # arrival hour, number of __other__ hours
_HOUR = struct.Struct("<q")
_DIGEST = 8  # bytes of a pair's digest: 8 KB of state for 1,000 partitions


def pair_digest(hour: int, service: str) -> bytes:
    """A stable 64-bit digest of one (hour, service) partition (names may be 128 bytes; a
    digest keeps the state small, and finding a collision on purpose costs ~2^32 tries
    for one partition more)."""
    key = f"{hour}\x00{service}".encode()
    return hashlib.blake2b(key, digest_size=_DIGEST).digest()


@dataclass(frozen=True, slots=True)
class OpenedPartitions:
    """Partitions opened in arrival hour ``hour`` (hours since the epoch): named ones by
    digest, ``__other__`` ones by event hour."""

    hour: int = -(2**62)
    named: frozenset[bytes] = field(default_factory=frozenset)
    others: frozenset[int] = field(default_factory=frozenset)

    def __len__(self) -> int:
        return len(self.named) + len(self.others)

    def at_hour(self, hour: int) -> OpenedPartitions:
        """The state a flush whose latest record arrived in ``hour`` starts from: empty in
        a later hour, this one otherwise (arrival never moves the hour back)."""
        return OpenedPartitions(hour) if hour > self.hour else self

    def encode(self) -> bytes:
        """Compact and canonical (sorted): the same state is the same bytes."""
        head = _MAGIC + _HEAD.pack(self.hour, len(self.others))
        others = b"".join(_HOUR.pack(h) for h in sorted(self.others))
        return head + others + b"".join(sorted(self.named))

    @classmethod
    def decode(cls, data: bytes | None) -> OpenedPartitions:
        """The state ``encode`` wrote; empty for None. DecodeError when malformed."""
        if not data:
            return cls()
        start = len(_MAGIC) + _HEAD.size
        if data[: len(_MAGIC)] != _MAGIC or len(data) < start:
            raise DecodeError("opened partitions: unknown format")
        hour, n_others = _HEAD.unpack_from(data, len(_MAGIC))
        named_at = start + n_others * _HOUR.size
        if len(data) < named_at or (len(data) - named_at) % _DIGEST:
            raise DecodeError("opened partitions: truncated")
        others = frozenset(
            _HOUR.unpack_from(data, start + i * _HOUR.size)[0] for i in range(n_others)
        )
        rest = data[named_at:]
        named = frozenset(rest[i : i + _DIGEST] for i in range(0, len(rest), _DIGEST))
        return cls(hour, named, others)


def cap_across_flushes(
    services: pa.Array[Any], hours: pa.Array[Any], opened: OpenedPartitions, limit: int
) -> tuple[pa.Array[Any], pa.Array[Any], OpenedPartitions]:
    """Keep the partitions of one (already guarded) flush inside the shard's hour: pairs
    already opened stay; new ``__other__`` pairs, then new named pairs (busiest first, ties
    by hour, then name) take what is left of ``limit``, one place kept for ``__other__``
    until one is open; every other row goes to ``__other__`` in its own hour if open, else
    in the nearest open one (ties: earlier). Returns the rows' ``(services, hours)`` and the
    state after the flush, at most ``limit`` partitions (deterministic: a per-pair loop over
    the flush's distinct pairs, at most ``limit`` of them)."""
    keys = pa.table({"h": hours, "s": services})
    counts = keys.group_by(["h", "s"], use_threads=False).aggregate([("h", "count")])
    pairs: list[tuple[int, str, int]] = [
        (int(h or 0), str(s), int(n or 0))  # never null: group keys and counts
        for h, s, n in zip(
            counts["h"].to_pylist(),
            counts["s"].to_pylist(),
            counts["h_count"].to_pylist(),
            strict=True,
        )
    ]
    budget = max(limit - len(opened), 0)
    new_others = sorted(
        ((-n, h) for h, s, n in pairs if s == OTHER_SERVICE and h not in opened.others)
    )
    others = set(opened.others) | {h for _, h in new_others[:budget]}
    budget -= len(others) - len(opened.others)
    digests = {(h, s): pair_digest(h, s) for h, s, _ in pairs if s != OTHER_SERVICE}
    new_named = sorted(
        (-n, h, s) for h, s, n in pairs if s != OTHER_SERVICE and digests[h, s] not in opened.named
    )
    accepted = new_named[: max(budget - (0 if others else 1), 0)]
    named = set(opened.named) | {digests[h, s] for _, h, s in accepted}
    kept = {(h, s) for h, s in digests if digests[h, s] in named}
    rejected = [
        (h, n)
        for h, s, n in pairs
        if (s == OTHER_SERVICE and h not in others) or (s != OTHER_SERVICE and (h, s) not in kept)
    ]
    if rejected and not others:  # the place kept for it: the busiest rejected pair's hour
        others.add(min((-n, h) for h, n in rejected)[1])
    state = OpenedPartitions(opened.hour, frozenset(named), frozenset(others))
    if not rejected:
        return services, hours, state
    open_hours = sorted(others)
    target = {h: _nearest(h, open_hours) for h in sorted({h for h, _ in rejected})}
    is_kept = pc.is_in(_pair_keys(hours, services), value_set=_pair_array(kept))
    out_services: pa.Array[Any] = pc.if_else(is_kept, services, OTHER_SERVICE)
    from_hours = pa.array(list(target), pa.int64())
    to_hours = pa.array(list(target.values()), pa.int64())
    mapped = pc.take(to_hours, pc.index_in(hours, value_set=from_hours))
    stays = pc.or_(is_kept, pc.is_null(mapped))
    out_hours: pa.Array[Any] = pc.if_else(stays, hours, mapped)
    return out_services, out_hours, state


def _nearest(hour: int, open_hours: list[int]) -> int:
    return min(open_hours, key=lambda h: (abs(h - hour), h))


def _pair_keys(hours: pa.Array[Any], services: pa.Array[Any]) -> pa.Array[Any]:
    join: Any = pc.binary_join_element_wise
    keys: pa.Array[Any] = join(hours.cast(pa.string()), services, "\x00")
    return keys


def _pair_array(pairs: set[tuple[int, str]]) -> pa.Array[Any]:
    return pa.array(sorted(f"{h}\x00{s}" for h, s in pairs), pa.string())
