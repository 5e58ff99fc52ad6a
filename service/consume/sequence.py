"""Kinesis sequence numbers and sentinel checkpoints (pure), as KCL's SentinelCheckpoint.

In logic a position in a shard is an ``int`` (a Kinesis sequence number is a decimal of up
to 128 bits; moto's are small integers) or a ``Sentinel``; strings exist only on the wire
(DynamoDB items, S3 keys, Kinesis calls), converted here.
"""

from __future__ import annotations

from enum import Enum


class Sentinel(Enum):
    """A checkpoint that is not a sequence number."""

    TRIM_HORIZON = "TRIM_HORIZON"  # read from the shard's first record (children of a reshard)
    SHARD_END = "SHARD_END"  # closed shard read to its end: finished, never read again


Checkpoint = int | Sentinel
SHARD_END = Sentinel.SHARD_END
FROM_START = Sentinel.TRIM_HORIZON


def checkpoint_to_wire(checkpoint: Checkpoint) -> str:
    """The string stored in the lease table."""
    return checkpoint.value if isinstance(checkpoint, Sentinel) else str(checkpoint)


def checkpoint_from_wire(text: str | None) -> Checkpoint | None:
    """The checkpoint a lease item holds; raises ValueError for anything else."""
    if text is None:
        return None
    for sentinel in Sentinel:
        if text == sentinel.value:
            return sentinel
    return sequence_from_wire(text)


def sequence_from_wire(text: str) -> int:
    """A sequence number as Kinesis or the lease table writes it; raises ValueError."""
    if not text.isdigit():
        raise ValueError(f"not a sequence number: {text!r}")
    return int(text)
