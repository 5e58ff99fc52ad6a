"""Data passed from decoders to the writer (pure, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class RecordMeta:
    """Lineage of one Kinesis record. ``sequence_number`` is an int in logic, a string on the wire."""

    shard_id: str
    sequence_number: int
    arrival_us: int
    partition_key: str = ""


@dataclass(frozen=True, slots=True)
class LineBatch:
    """Lines of one record sharing metadata. ``payload`` is ``count`` JSON objects joined by '\\n'.

    ``service`` is the default for lines that name none; ``observed_us`` 0 means arrival time.
    """

    payload: bytes
    count: int
    source: str = ""
    service: str = ""
    log_group: str = ""
    log_stream: str = ""
    observed_us: int = 0
    traceparent: str = ""

    def hollow(self) -> LineBatch:
        """This batch without its lines' bytes (half the cost of ``dataclasses.replace``)."""
        return LineBatch(
            b"",
            self.count,
            self.source,
            self.service,
            self.log_group,
            self.log_stream,
            self.observed_us,
            self.traceparent,
        )


@dataclass(frozen=True, slots=True)
class Decoded:
    """What one Kinesis record held. ``skipped`` names why a record yields no lines on purpose.

    An envelope of version 2 names itself with ``producer_id`` (16 bytes), ``producer_seq``
    and ``created_us`` for the consumer's dedupe; ``producer_id`` is empty otherwise.
    """

    format: str
    batches: tuple[LineBatch, ...] = ()
    skipped: str = ""
    producer_id: bytes = b""
    producer_seq: int = 0
    created_us: int = 0

    @property
    def line_count(self) -> int:
        return sum(b.count for b in self.batches)


@dataclass(frozen=True, slots=True)
class DecoderConfig:
    """Decoder options resolved once at start (schemas parsed, not paths).

    ``avro_schemas_by_fingerprint`` maps the 8-byte CRC-64-AVRO fingerprint (as on the
    wire in single-object encoding) of every configured schema to it;
    ``decode.avro.load_config`` builds one from the settings' paths and fills it so no
    fingerprint is computed per record.
    """

    avro_schema: Any = None
    avro_schemas_by_id: dict[int, Any] = field(default_factory=dict)
    max_decompressed_bytes: int = 64 * 1024 * 1024
    avro_schemas_by_fingerprint: dict[bytes, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DecodedRecord:
    """One Kinesis record's decoded lines with its lineage: what the consumer hands the sink."""

    meta: RecordMeta
    batches: tuple[LineBatch, ...]
    raw: bytes = b""  # the Kinesis record as read, for the dead letter if it cannot map

    def hollow(self) -> DecodedRecord:
        """This record without its bytes (lineage, line counts and batch metadata kept): what
        a flush that took over its records holds of one once its rows are mapped."""
        return DecodedRecord(self.meta, tuple([b.hollow() for b in self.batches]))
