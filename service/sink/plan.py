"""A flush of one shard's sequence range -> the exact S3 objects to write (pure, deterministic).

The same records always give the same keys and bytes, which is what lets a new owner (or a
zombie) rebuild an open intent and overwrite identical objects (DESIGN §5).
"""

from __future__ import annotations

import base64
import dataclasses
import gzip
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import pyarrow as pa
import zstandard

from service.decode.types import DecodedRecord, LineBatch, RecordMeta
from service.errors import DecodeError
from service.pipeline.config import PipelineConfigError, load_pipelines
from service.pipeline.engine import DEFAULT_TABLE, Pipelines
from service.schema import table_schema
from service.sink.build import build_rows
from service.sink.gather import Gatherer
from service.sink.iceberg_rows import iceberg_partitions
from service.sink.keys import object_prefix
from service.sink.lineage import Lineage
from service.sink.opened import HOUR_US, OpenedPartitions
from service.sink.order import partition_order
from service.sink.parquet import encode_parquet
from service.sink.partition import PartitionTemplate, hour_path, with_partitions
from service.sink.routes import code_version, routed
from service.sink.rules import FieldMapping, batch_metadata, line_batch

# Parquet with zstd shrinks these rows ~4-6x against their Arrow size; split a partition's
# rows into files whose Arrow size is at most this many times the target object size.
ARROW_TO_PARQUET = 4
DEAD_LETTER = "dead-letter"  # the directory of dead letters, beside the tables


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record that could not be decoded (kept whole), or one line of a record that could
    not be mapped (``sub_sequence``: its position in the record; ``data``: the line), with
    its reason."""

    meta: RecordMeta
    data: bytes
    reason: str
    sub_sequence: int | None = None
    batch: LineBatch | None = None  # a line's batch: its metadata goes with it (BATCH_FIELDS)


@dataclass(frozen=True, slots=True)
class FlushObject:
    key: str
    body: bytes
    rows: int
    partition: str  # the hive path below the table (logs/, a pipeline's) or dead-letter/


@dataclass(frozen=True, slots=True)
class FlushPlan:
    objects: tuple[FlushObject, ...]
    rows: int  # rows written to Parquet
    dead_letters: int
    # The partitions the shard has opened in the hour after this flush (service/sink/opened.py);
    # None when the layout keeps no such state.
    opened: OpenedPartitions | None = None
    dropped: int = 0  # rows the pipelines' drop or sample removed (DESIGN §12): not written
    # The partition template keys the data files were cut by (an Iceberg commit compares
    # them with the table's spec: sink/iceberg_respec.py).
    template: tuple[str, ...] = ("service",)

    @property
    def bytes_out(self) -> int:
        return sum(len(o.body) for o in self.objects)


@dataclass(frozen=True, slots=True)
class Layout:
    """Where objects go and how they are cut (DESIGN §4)."""

    stream: str
    prefix: str = ""
    template: PartitionTemplate = field(default_factory=PartitionTemplate)
    max_partitions: int = 1000
    file_target_bytes: int = 128 * 1024 * 1024
    # The partitions the shard opened earlier in the hour (a consumer's flush always has
    # one): max_partitions then also caps the hour across flushes. None: per flush only.
    opened: OpenedPartitions | None = None
    service_column: bool = False  # Iceberg: files carry service, one hour each (iceberg_rows)
    pipelines: Pipelines | None = None  # DESIGN §12: rows routed to tables under the prefix

    def data_key(
        self, partition: str, shard_id: str, first: str, last: str, table: str = DEFAULT_TABLE
    ) -> str:
        return f"{self.prefix}{table}/{partition}/{self.stream}-{shard_id}-{first}-{last}.parquet"

    def dead_key(self, date: str, shard_id: str, first: str, last: str) -> str:
        name = f"{self.stream}-{shard_id}-{first}-{last}.ndjson.gz"
        return f"{self.prefix}{DEAD_LETTER}/dt={date}/{name}"


def plan_flush(
    shard_id: str,
    records: Sequence[DecodedRecord],
    dead: Sequence[DeadLetter],
    layout: Layout,
    mapping: FieldMapping,
    *,
    release: bool = False,
) -> FlushPlan:
    """Objects for one flush: Parquet per partition (split by size) and dead-letter files.
    ``release``: the flush takes over ``records`` and leaves them hollow (``build_rows``)."""
    table, lineage, bad = build_rows(records, mapping, release=release)
    dead_all = list(dead) + [
        DeadLetter(u.record.meta, u.data, f"unmappable: {u.reason}", u.line, line_batch(u))
        for u in bad
    ]
    objects: list[FlushObject] = []
    opened = layout.opened
    written, mapped = 0, table.num_rows
    if mapped:
        if opened is not None:  # the hour of the flush: its latest record's arrival (Kinesis)
            opened = opened.at_hour(max(r.meta.arrival_us for r in records) // HOUR_US)
        schema = table_schema(mapping.extra_columns, service=layout.service_column)
        routes = routed(table, lineage, layout.pipelines, schema)
        del table  # the routes hold what they keep of it (with pipelines, their own copies)
        for name, rows, of_rows, route_schema in routes:
            data, opened = data_objects(
                shard_id, rows, of_rows, layout, schema=route_schema, opened=opened, table_name=name
            )
            objects.extend(data)
            written += rows.num_rows
            del rows, of_rows  # before the next destination is made (sink/routes.py)
    objects.extend(_dead_objects(shard_id, dead_all, layout))
    dropped = mapped - written
    return FlushPlan(tuple(objects), written, len(dead_all), opened, dropped, layout.template.keys)


def dead_letter_plan(shard_id: str, dead: Sequence[DeadLetter], layout: Layout) -> FlushPlan:
    """Objects for a flush written wholly as dead letters (a range plan_flush cannot plan)."""
    objects = tuple(_dead_objects(shard_id, dead, layout))
    return FlushPlan(objects, 0, len(dead), layout.opened)


def data_objects(
    shard_id: str,
    table: pa.Table,
    lineage: Lineage,
    layout: Layout,
    *,
    schema: pa.Schema,
    opened: OpenedPartitions | None,
    table_name: str = DEFAULT_TABLE,
) -> tuple[list[FlushObject], OpenedPartitions | None]:
    """Parquet objects of ``table``'s rows per partition (split by size), named by ``shard_id``."""
    table, opened = with_partitions(table, layout.max_partitions, opened, layout.template, lineage)
    table = iceberg_partitions(table, layout.template) if layout.service_column else table
    hours = table.column("_hour").combine_chunks().to_numpy()
    services = table.column("_service").combine_chunks()
    order, ends = partition_order(hours, services)
    data = Gatherer(table.drop_columns(["_hour", "_service"]))
    # At least any partition's Arrow size: most flushes are far below a file's limit, and
    # then no partition's size is measured (Table.nbytes walks every buffer of every column).
    bound = _size_bound(data.table, lineage)
    objects, start = [], 0
    for end in ends:
        # One partition gathered at a time, its lineage columns made for its rows only:
        # never a second, sorted copy of the whole flush.
        rows = order[start:end]
        part = lineage.join(data.take(rows), schema, rows)
        first = int(rows[0])
        path = hour_path(int(hours[first]), services[first].as_py(), layout.template)
        for chunk in _split_by_size(part, layout.file_target_bytes, bound):
            seqs = chunk.column("kinesis_sequence_number")
            key = layout.data_key(path, shard_id, seqs[0].as_py(), seqs[-1].as_py(), table_name)
            objects.append(FlushObject(key, encode_parquet(chunk), chunk.num_rows, path))
        start = end
    return objects, opened


def _size_bound(table: pa.Table, lineage: Lineage) -> int:
    """At least the Arrow size of any partition of ``table`` with its lineage columns: a
    partition holds some of its rows (a gather may add a validity byte per column and 8
    rows), and each row's lineage is at most ``Lineage.row_bytes_bound``."""
    columns = table.num_columns + len(lineage.per_batch) + 1
    per_row = lineage.row_bytes_bound() + table.num_columns
    return table.nbytes + table.num_rows * per_row + 64 * columns


def _split_by_size(part: pa.Table, target_bytes: int, bound: int | None = None) -> list[pa.Table]:
    """Cut at record boundaries so no file's Arrow size exceeds ARROW_TO_PARQUET times the
    target. ``bound``: at least ``part``'s Arrow size (``_size_bound``), read first."""
    limit = target_bytes * ARROW_TO_PARQUET
    if (bound is not None and bound <= limit) or part.nbytes <= limit:
        return [part]
    per_row = part.nbytes / part.num_rows
    rows_per_file = max(1, int(limit / per_row))
    seqs = part.column("kinesis_sequence_number").to_pylist()
    chunks, start = [], 0
    while start < len(seqs):
        end = min(start + rows_per_file, len(seqs))
        while end < len(seqs) and seqs[end] == seqs[end - 1]:
            end += 1  # never split one Kinesis record across files: keys name record ranges
        chunks.append(part.slice(start, end - start))
        start = end
    return chunks


def _dead_objects(shard_id: str, dead: Sequence[DeadLetter], layout: Layout) -> list[FlushObject]:
    by_date: dict[str, list[DeadLetter]] = {}
    for d in sorted(dead, key=_dead_order):
        date = datetime.fromtimestamp(d.meta.arrival_us / 1e6, UTC).strftime("%Y-%m-%d")
        by_date.setdefault(date, []).append(d)
    objects = []
    for date, items in sorted(by_date.items()):
        lines = [orjson.dumps(dead_entry(d)) for d in items]
        body = gzip.compress(b"\n".join(lines) + b"\n", compresslevel=6, mtime=0)
        first, last = str(items[0].meta.sequence_number), str(items[-1].meta.sequence_number)
        key = layout.dead_key(date, shard_id, first, last)
        objects.append(FlushObject(key, body, len(items), f"dt={date}"))
    return objects


def _dead_order(d: DeadLetter) -> tuple[int, int]:
    return d.meta.sequence_number, -1 if d.sub_sequence is None else d.sub_sequence


def dead_entry(d: DeadLetter) -> dict[str, Any]:
    """One dead-letter line (docs/formats.md): a whole record's, or one unmappable line's
    with its ``kinesis_sub_sequence`` (a record's entry has none, as before)."""
    entry: dict[str, Any] = {
        "reason": d.reason,
        "kinesis_shard_id": d.meta.shard_id,
        "kinesis_sequence_number": str(d.meta.sequence_number),
    }
    if d.sub_sequence is not None:
        entry["kinesis_sub_sequence"] = d.sub_sequence
    entry["arrival_time"] = (
        datetime.fromtimestamp(d.meta.arrival_us / 1e6, UTC).isoformat().replace("+00:00", "Z")
    )
    entry["data"] = base64.b64encode(d.data).decode()
    if d.batch is not None and (batch := batch_metadata(d.batch)):
        entry["batch"] = batch
    return entry


# The plan document (DESIGN §5): everything of this process that decides a flush's keys and
# bytes, written with the intent so a replay by another process (other settings, a rolling
# deploy) rebuilds the same objects. Bump PLAN_VERSION when a field is added or changes
# meaning; a replay that cannot read a document (a newer version) plans with its own
# settings and relies on the key listing to remove what it no longer writes. Version 2 added
# ``layout.opened`` (the partitions opened earlier in the hour); a version 1 document is read
# as having none.
PLAN_VERSION = 2
_READABLE_VERSIONS = (1, 2)
# The key listing is kept under this many compressed bytes: the lease item also holds two
# dedupe states (~120 KB each) and DynamoDB items stop at 400 KB. Past it, the listing keeps
# only the partition directories plus ``{stream}-{shard}-`` (at most max_partitions + dead
# letter dates), and a replay lists those prefixes for the keys inside the intent's range.
KEY_LISTING_LIMIT = 64 * 1024
_MAX_PIN_DECODED = 16 * 1024 * 1024


def plan_document(layout: Layout, mapping: FieldMapping) -> bytes:
    """The compact, versioned plan document of ``layout`` and ``mapping`` (zstd JSON)."""
    groups = {
        f.name: list(getattr(mapping, f.name))
        for f in dataclasses.fields(mapping)
        if f.name not in ("max_past_us", "max_future_us", "extra_columns")
    }
    extra = b""
    if mapping.extra_columns:
        extra = pa.schema(list(mapping.extra_columns)).serialize().to_pybytes()
    doc = {
        "v": PLAN_VERSION,
        "code": code_version(),
        "layout": {
            "stream": layout.stream,
            "prefix": layout.prefix,
            "template": layout.template.template,
            "max_partitions": layout.max_partitions,
            "file_target_bytes": layout.file_target_bytes,
            "opened": None
            if layout.opened is None
            else base64.b64encode(layout.opened.encode()).decode(),
            "service_column": layout.service_column,
            "pipelines": None if layout.pipelines is None else layout.pipelines.document,
        },
        "mapping": {
            "groups": groups,
            "max_past_us": mapping.max_past_us,
            "max_future_us": mapping.max_future_us,
            "extra_columns": base64.b64encode(extra).decode(),
        },
    }
    return zstandard.ZstdCompressor(level=9).compress(orjson.dumps(doc))


def plan_from_document(document: bytes) -> tuple[Layout, FieldMapping]:
    """The layout and mapping a plan document pins; DecodeError for an unreadable or newer
    document (the caller then plans with its own settings)."""
    try:
        doc = orjson.loads(_unzstd(document))
    except orjson.JSONDecodeError:
        raise DecodeError("plan document is not JSON") from None
    if not isinstance(doc, dict) or doc.get("v") not in _READABLE_VERSIONS:
        raise DecodeError("plan document version unknown")
    try:
        lay, mp = doc["layout"], doc["mapping"]
        opened = lay.get("opened")
        layout = Layout(
            lay["stream"],
            lay["prefix"],
            PartitionTemplate(lay["template"]),
            int(lay["max_partitions"]),
            int(lay["file_target_bytes"]),
            None if opened is None else OpenedPartitions.decode(base64.b64decode(opened)),
            bool(lay.get("service_column", False)),
            pipelines=None if lay.get("pipelines") is None else load_pipelines(lay["pipelines"]),
        )
        extra: tuple[pa.Field[Any], ...] = ()
        if mp["extra_columns"]:
            schema = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(mp["extra_columns"])))
            extra = tuple(schema)
        groups = {name: tuple(names) for name, names in mp["groups"].items()}
        mapping = FieldMapping(
            **groups,
            max_past_us=int(mp["max_past_us"]),
            max_future_us=int(mp["max_future_us"]),
            extra_columns=extra,
        )
    except (KeyError, TypeError, ValueError, pa.ArrowException, PipelineConfigError) as exc:
        raise DecodeError(f"plan document unreadable: {type(exc).__name__}: {exc}") from None
    return layout, mapping


@dataclass(frozen=True, slots=True)
class KeyListing:
    """The objects an intent's flush planned: their keys, or (when too many to keep in the
    lease item) prefixes under which a replay lists the keys inside the intent's range."""

    keys: frozenset[str] = frozenset()
    prefixes: frozenset[str] = frozenset()

    def encode(self, limit: int | None = None) -> bytes:
        """zstd JSON, under ``limit`` (KEY_LISTING_LIMIT) bytes: the keys become their
        prefixes when too long."""
        body = self._compress(self.keys, self.prefixes)
        if len(body) > (KEY_LISTING_LIMIT if limit is None else limit):
            prefixes = self.prefixes | {object_prefix(k) for k in self.keys}
            body = self._compress(frozenset(), prefixes)
        return body

    @staticmethod
    def _compress(keys: frozenset[str], prefixes: frozenset[str]) -> bytes:
        doc = {"keys": sorted(keys), "prefixes": sorted(prefixes)}
        return zstandard.ZstdCompressor(level=9).compress(orjson.dumps(doc))

    @classmethod
    def decode(cls, data: bytes) -> KeyListing:
        try:
            doc = orjson.loads(_unzstd(data))
            return cls(frozenset(doc["keys"]), frozenset(doc["prefixes"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise DecodeError(f"key listing unreadable: {type(exc).__name__}") from None

    def union(self, other: KeyListing) -> KeyListing:
        return KeyListing(self.keys | other.keys, self.prefixes | other.prefixes)


def planned_keys(plan: FlushPlan) -> KeyListing:
    return KeyListing(frozenset(o.key for o in plan.objects))


def _unzstd(data: bytes) -> bytes:
    try:
        return zstandard.ZstdDecompressor().decompress(data, max_output_size=_MAX_PIN_DECODED)
    except zstandard.ZstdError as exc:
        raise DecodeError(f"pinned plan not zstd: {exc}") from None
