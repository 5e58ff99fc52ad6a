"""The hand-off of a flush to the table's elected committer (pure; docs/tables.md).

After uploading a flush, its shard's owner records on its own lease item (fenced) the
flush's ``last`` and a ``Handoff``: its epoch and the data objects it wrote (key and size,
every table's). The elected committer reads the hand-offs whose ``last`` is above the
table's watermark, reads each object's Parquet footer (one ranged GET of the tail: the
bytes are in the owner's memory, not the committer's) and commits them all in one snapshot
per table, then marks each lease item with the ``last`` and epoch it committed. The owner
waits for that mark; when none comes within a deadline it commits its flush itself. Exactly
once still rests on the watermark moving in the snapshot that adds the files, never on
there being one committer (sink/iceberg_commit.py).

This module decides; consume/committer.py, consume/handoff.py and sink/footers.py do I/O.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

MAGIC = b"PAR1"
# The tail one ranged GET reads: our footers (a few dozen columns, a few row groups) fit;
# a larger one costs a second GET of exactly its length.
FOOTER_TAIL = 64 * 1024
# Flushes one snapshot takes at most: bounds a commit's manifest and its time in the thread.
MAX_FLUSHES_PER_SNAPSHOT = 1000


@dataclass(frozen=True, slots=True)
class Handoff:
    """One uploaded flush waiting for the committer: what its owner wrote, fenced."""

    shard_id: str
    last: int  # the flush's last sequence number (its intent's ``last``)
    epoch: int  # the owner's lease epoch when it wrote the hand-off
    files: tuple[tuple[str, int], ...]  # (object key, size in bytes), every table's


@dataclass(frozen=True, slots=True)
class Mark:
    """What the committer wrote back on a lease item after its snapshot landed."""

    last: int  # the flush it committed (the table's watermark is at least this)
    epoch: int  # the epoch of the hand-off it committed (whose objects the table holds)


def encode_handoff(epoch: int, files: Iterable[tuple[str, int]]) -> bytes:
    """The ``handoff`` attribute: the epoch and the objects (a few hundred bytes a file)."""
    return orjson.dumps({"epoch": epoch, "files": [[k, n] for k, n in files]})


def decode_handoff(shard_id: str, last: int, blob: bytes) -> Handoff:
    """The hand-off stored with ``handoff_last = last``; raises ValueError if malformed."""
    doc = orjson.loads(blob)
    try:
        files = tuple((str(k), int(n)) for k, n in doc["files"])
        return Handoff(shard_id, last, int(doc["epoch"]), files)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"hand-off of {shard_id} is malformed: {exc}") from None


def due(handoffs: Iterable[Handoff], watermark: Callable[[str], int | None]) -> list[Handoff]:
    """The hand-offs the table does not hold yet (``last`` above their shard's watermark),
    in shard order, at most MAX_FLUSHES_PER_SNAPSHOT (the rest wait for the next round)."""
    todo = [h for h in handoffs if (watermark(h.shard_id) or -1) < h.last]
    return sorted(todo, key=lambda h: h.shard_id)[:MAX_FLUSHES_PER_SNAPSHOT]


def unmarked(
    handoffs: Iterable[tuple[Handoff, Mark | None]], watermark: Callable[[str], int | None]
) -> list[Handoff]:
    """The hand-offs the table holds already that carry no mark: committed by a holder that
    died before marking, or by a previous owner's hand-off of the same range. The committer
    marks them with UNKNOWN_EPOCH so their owners stop waiting (and keep what their intents
    listed: the table may reference it)."""
    return [h for h, mark in handoffs if mark is None and (watermark(h.shard_id) or -1) >= h.last]


# The epoch of a mark that only says "in the table": no owner's lease has epoch 0 (the
# first acquire makes it 1), so owner_decision reads it as PRESENT, never ADDED.
UNKNOWN_EPOCH = 0


class Waited(enum.Enum):
    """What an owner waiting for the committer does next."""

    WAIT = "wait"  # no mark yet, deadline not reached
    ADDED = "added"  # committed with this owner's own objects
    PRESENT = "present"  # in the table, but maybe another attempt's objects
    FALLBACK = "fallback"  # no progress by the deadline: commit it yourself


def owner_decision(
    mark: Mark | None, last: int, epoch: int, waited: float, deadline: float
) -> Waited:
    """The owner's next step for its flush ending at ``last`` written at ``epoch``.

    A mark at or past ``last`` with the owner's epoch means the table holds exactly the
    objects this owner uploaded (the hand-off with its epoch was what was committed), so
    the stale objects its intent listed may go. With another epoch (a previous owner's
    hand-off of the same range) the range is in the table but the owner must not delete
    what its intent listed: the table may reference those objects.
    """
    if mark is not None and mark.last >= last:
        return Waited.ADDED if mark.last == last and mark.epoch == epoch else Waited.PRESENT
    return Waited.FALLBACK if waited >= deadline else Waited.WAIT


def footer_length(tail: bytes) -> int:
    """The footer's length from a file's last 8 bytes; raises ValueError if not Parquet."""
    if len(tail) < 8 or tail[-4:] != MAGIC:
        raise ValueError("not a Parquet file (no PAR1 at its end)")
    (length,) = struct.unpack("<I", tail[-8:-4])
    return int(length)


def tail_range(size: int, length: int) -> tuple[int, int]:
    """The inclusive byte range of the last ``length`` bytes of a ``size``-byte object."""
    start = max(0, size - length)
    return start, size - 1


def footer_from_tail(tail: bytes) -> pq.FileMetaData:
    """The footer of the file ``tail`` ends: it must hold the whole footer and its 8-byte
    trailer (raises ValueError otherwise). Parsed as a file of magic, footer and trailer:
    reading the metadata never touches the column chunks."""
    length = footer_length(tail)
    if len(tail) < length + 8:
        raise ValueError(f"the tail holds {len(tail)} bytes, the footer needs {length + 8}")
    return pq.read_metadata(pa.BufferReader(MAGIC + tail[-(length + 8) :]))
