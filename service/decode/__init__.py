"""Pure decoders: the bytes of one Kinesis record -> batches of NDJSON lines, or DecodeError.

Every format is detected from the bytes alone (see docs/formats.md). ``decode_record``
never raises anything but DecodeError for any input; the consumer turns that into a
dead-letter entry, so a bad record never stops a shard and is never dropped.
"""

from __future__ import annotations

from service.decode.detect import decode_record
from service.decode.types import Decoded, DecoderConfig, LineBatch, RecordMeta

__all__ = ["Decoded", "DecoderConfig", "LineBatch", "RecordMeta", "decode_record"]
