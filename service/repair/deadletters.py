"""A dead-letter object -> what a redrive writes (pure, deterministic).

The entries (docs/writer.md "Dead-letter objects") are decoded again with today's decoders
and mapped with today's mapping: the rows that now map become Parquet under the normal
table layout, with keys named after the dead-letter object's digest, so the same object and
settings always give the same keys and bytes; the entries that still fail become the new
body of the dead-letter object, with today's reason.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson

from service.consume.buffer import DUPLICATE, ShardBuffer
from service.consume.dedupe import ShardDedupe
from service.decode import DecoderConfig, LineBatch, RecordMeta
from service.decode.types import DecodedRecord
from service.errors import DecodeError
from service.schema import table_schema
from service.sink.build import build_rows
from service.sink.lineage import Lineage
from service.sink.plan import DeadLetter, FlushObject, Layout, data_objects, dead_entry
from service.sink.rules import BATCH_FIELDS, FieldMapping, line_batch

# A dead-letter object's body is a few MB at most (one flush's failures); this bounds a
# hostile or corrupt one.
MAX_BODY_BYTES = 1 << 30
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class DeadEntry:
    """One line of a dead-letter object: a whole record's (``sub_sequence`` None) or one
    unmappable line's; ``fields`` is the line as written (rewritten with a new reason)."""

    meta: RecordMeta
    data: bytes
    reason: str
    sub_sequence: int | None
    fields: dict[str, Any]
    batch: LineBatch | None = None  # a line's: its batch's metadata (``batch`` in the entry)


@dataclass(frozen=True, slots=True)
class RedrivePlan:
    """The Parquet objects of the entries that now map, and the dead-letter object's new
    body (None: nothing is left, the object is deleted)."""

    objects: tuple[FlushObject, ...]
    rows: int
    remaining: bytes | None
    still_dead: int
    skipped: int  # records that now decode to no lines on purpose (a control message)
    duplicates: int = 0  # copies of an envelope admitted before (the consumer's dedupe rule)


def dead_key_range(stream: str, key: str) -> tuple[str, int, int] | None:
    """``(shard, first, last)`` of a dead-letter key
    ``…/{stream}-{shard}-{first}-{last}.ndjson.gz``; None for a name of another form."""
    name = key.rpartition("/")[2].removesuffix(".ndjson.gz").removeprefix(f"{stream}-")
    rest, _, last = name.rpartition("-")
    shard, _, first = rest.rpartition("-")
    if not (shard and first.isdigit() and last.isdigit()):
        return None
    return shard, int(first), int(last)


def body_digest(body: bytes) -> str:
    """The hex SHA-256 of a dead-letter object's bytes: it names the redrive's keys."""
    return hashlib.sha256(body).hexdigest()


def parse_entries(key: str, body: bytes) -> list[DeadEntry]:
    """The entries of a dead-letter object; DecodeError naming the object and line."""
    try:
        text = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(body, MAX_BODY_BYTES)
    except zlib.error as exc:
        raise DecodeError(f"dead-letter object {key} is not gzip: {exc}") from None
    entries = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            entries.append(_entry(orjson.loads(line)))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise DecodeError(
                f"dead-letter object {key} line {n} unreadable: {type(exc).__name__}: {exc}"
            ) from None
    return entries


def _entry(fields: dict[str, Any]) -> DeadEntry:
    arrival = datetime.fromisoformat(str(fields["arrival_time"]).replace("Z", "+00:00"))
    gap = arrival - _EPOCH  # exact integer microseconds, no float round trip
    sub = fields.get("kinesis_sub_sequence")
    meta = RecordMeta(
        shard_id=str(fields["kinesis_shard_id"]),
        sequence_number=int(fields["kinesis_sequence_number"]),
        arrival_us=(gap.days * 86400 + gap.seconds) * 1_000_000 + gap.microseconds,
    )
    data = base64.b64decode(fields["data"], validate=True)
    batch = None
    if sub is not None:
        batch = LineBatch(data, 1, **_batch_fields(fields.get("batch") or {}))
    sub = None if sub is None else int(sub)
    return DeadEntry(meta, data, str(fields["reason"]), sub, fields, batch)


def _batch_fields(given: dict[str, Any]) -> dict[str, Any]:
    """A line entry's ``batch`` as LineBatch keywords; ValueError for any other key or type."""
    unknown = sorted(set(given) - set(BATCH_FIELDS))
    if unknown:
        raise ValueError(f"batch has an unknown field {unknown[0]!r}")
    for name, value in given.items():
        want = int if name == "observed_us" else str
        if type(value) is not want:
            raise ValueError(f"batch field {name!r} is not {want.__name__}")
    return given


def plan_redrive(
    digest: str,
    entries: Sequence[DeadEntry],
    decoders: DecoderConfig,
    layout: Layout,
    mapping: FieldMapping,
    *,
    dedupe: ShardDedupe | None = None,
) -> RedrivePlan:
    """Decode and map ``entries`` again: Parquet for the rows that now map (keys
    ``{stream}-{shard}-redrive-{digest[:12]}-{first}-{last}.parquet``: never a consumer's
    key, whose ``{first}-{last}`` follows the shard id), the rest as the new body. Whole
    records are read as the consumer reads them (``ShardBuffer.add``): an envelope that
    ``dedupe`` (the shard's redrive state, updated here) admitted before is a copy and
    lands nothing."""
    buffer = ShardBuffer()
    subs: list[int] = []  # per record: the line's sub-sequence, or -1 for a whole record
    dead: list[dict[str, Any]] = []
    for entry in entries:
        if entry.sub_sequence is not None:  # one line that could not be mapped
            assert entry.batch is not None
            buffer.records.append(DecodedRecord(entry.meta, (entry.batch,)))
            subs.append(entry.sub_sequence)
            continue
        held, failed = len(buffer.records), len(buffer.dead)
        buffer.add(entry.data, entry.meta, decoders, 0.0, dedupe)
        if len(buffer.dead) > failed:
            dead.append({**entry.fields, "reason": buffer.dead[-1].reason})
        subs += [-1] * (len(buffer.records) - held)
    records = buffer.records
    objects: list[FlushObject] = []
    rows = 0
    if records:
        table, lineage, bad = build_rows(records, mapping)
        lineage = _with_line_subs(lineage, records, subs)
        position = {id(r): i for i, r in enumerate(records)}
        for u in bad:
            sub = subs[position[id(u.record)]]
            line = sub if sub >= 0 else u.line
            reason = f"unmappable: {u.reason}"
            dead.append(dead_entry(DeadLetter(u.record.meta, u.data, reason, line, line_batch(u))))
        rows = table.num_rows
        if rows:
            by_shard = {r.meta.shard_id for r in records}
            if len(by_shard) != 1:
                raise DecodeError(f"dead-letter entries of several shards: {sorted(by_shard)}")
            shard = f"{by_shard.pop()}-redrive-{digest[:12]}"
            schema = table_schema(mapping.extra_columns)
            objects, _ = data_objects(shard, table, lineage, layout, schema=schema, opened=None)
    dead.sort(key=lambda f: (int(f["kinesis_sequence_number"]), f.get("kinesis_sub_sequence", -1)))
    remaining = None
    if dead:
        text = b"\n".join(orjson.dumps(f) for f in dead) + b"\n"
        remaining = gzip.compress(text, compresslevel=6, mtime=0)
    duplicates = buffer.skipped.get(DUPLICATE, 0)
    skipped = sum(buffer.skipped.values()) - duplicates
    return RedrivePlan(tuple(objects), rows, remaining, len(dead), skipped, duplicates)


def _with_line_subs(lineage: Lineage, records: Sequence[DecodedRecord], subs: list[int]) -> Lineage:
    """The lineage with each redriven line's own sub-sequence (its position in its record,
    as the dead letter says), not 0: the table's lineage key stays the line's."""
    batch_record = np.repeat(
        np.arange(len(records), dtype=np.int64),
        np.array([len(r.batches) for r in records], dtype=np.int64),
    )
    line_sub = np.array(subs, dtype=np.int64)[batch_record[lineage.batch_of_row]]
    sub = np.where(line_sub >= 0, line_sub, lineage.sub).astype(np.int32)
    return Lineage(lineage.per_batch, lineage.batch_of_row, sub)
