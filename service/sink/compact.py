"""``tideway compact``: rewrite the small data files of an Iceberg table's closed partitions
into files near the target size, in one atomic commit, rows unchanged (I/O, blocking).

A partition is closed when its hour ended ``older_than`` seconds ago: late rows may still
add files to it (the next run compacts them). Per partition, files under half the target
are packed in path order into bins of at most the target size; each bin of two or more
files becomes one file, its rows in lineage order (shard, sequence number, sub-sequence).
Output keys name their inputs (a hash of the sorted paths), so a retried run rewrites the
same objects. The commit replaces exactly the inputs; the shards' watermarks live in table
properties, which it leaves alone, so the consumer's exactly-once commits are unaffected.
A lost race with a live commit re-reads the table and commits again, reusing the files
already written (bins whose inputs vanished are dropped), a bounded number of times.

Partitions are those of each file's own spec: after the partition template changed
(sink/iceberg_respec.py) the older files are binned by their old partition and rewritten
under the table's current spec, one output per partition of it, since a commit adds files
of the current spec only.
"""

from __future__ import annotations

import hashlib
import logging
import posixpath
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.manifest import DataFile
from pyiceberg.table import Table

from service.sink.iceberg import data_file
from service.sink.iceberg_respec import row_partitions
from service.sink.iceberg_spec import HOUR_FIELD
from service.sink.parquet import decode_parquet, encode_parquet

log = logging.getLogger(__name__)
COMMIT_ATTEMPTS = 20
SUMMARY_KEY = "tideway.compacted-files"


@dataclass(frozen=True, slots=True)
class Bin:
    """Small files of one partition that become one file."""

    inputs: tuple[DataFile, ...]

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(sorted(f.file_path for f in self.inputs))

    def output_path(self, part: int | None = None) -> str:
        """The output's path; ``part``: the index of one of several (the bin's rows span
        partitions of the current spec)."""
        digest = hashlib.sha256("\n".join(self.paths).encode()).hexdigest()[:20]
        suffix = "" if part is None else f"-{part}"
        return f"{posixpath.dirname(self.paths[0])}/compacted-{digest}{suffix}.parquet"


@dataclass(frozen=True, slots=True)
class CompactionReport:
    partitions: int
    files_before: int
    files_after: int
    rows: int
    snapshot_id: int | None

    def as_dict(self) -> dict[str, int | None]:
        return {
            "partitions": self.partitions,
            "files_before": self.files_before,
            "files_after": self.files_after,
            "rows": self.rows,
            "snapshot_id": self.snapshot_id,
        }


def plan_bins(
    files: Iterable[DataFile],
    hour_index: Mapping[int, int],
    *,
    now: float,
    older_than: float,
    target: int,
) -> list[Bin]:
    """The bins of small files of closed partitions (pure). ``hour_index``: the position of
    the hour field in the partition record of each spec, by spec id."""
    closed_before = int((now - older_than) // 3600)  # hours ending at or before this one
    by_partition: dict[tuple[object, ...], list[DataFile]] = {}
    for f in files:
        index = hour_index.get(f.spec_id)
        if index is None:  # a spec without the hour (not one Tideway makes): left alone
            continue
        hour = f.partition[index]
        if hour is None or hour + 1 > closed_before or f.file_size_in_bytes >= target // 2:
            continue
        by_partition.setdefault(_key(f), []).append(f)
    bins: list[Bin] = []
    for key in sorted(by_partition, key=repr):
        current: list[DataFile] = []
        size = 0
        for f in sorted(by_partition[key], key=lambda d: d.file_path):
            if current and size + f.file_size_in_bytes > target:
                bins.append(Bin(tuple(current)))
                current, size = [], 0
            current.append(f)
            size += f.file_size_in_bytes
        bins.append(Bin(tuple(current)))
    return [b for b in bins if len(b.inputs) > 1]


def _key(f: DataFile) -> tuple[object, ...]:
    partition = f.partition
    return (f.spec_id, *(partition[i] for i in range(len(partition))))


def lineage_order(table: pa.Table) -> pa.Table:
    """``table`` sorted by lineage key; sequence numbers compare as integers (length first)."""
    lengths = pc.utf8_length(table.column("kinesis_sequence_number"))
    keyed = table.append_column("_seq_len", lengths)
    order = pc.sort_indices(
        keyed,
        sort_keys=[
            ("kinesis_shard_id", "ascending"),
            ("_seq_len", "ascending"),
            ("kinesis_sequence_number", "ascending"),
            ("kinesis_sub_sequence", "ascending"),
        ],
    )
    return table.take(order)


def compact(
    load_table: Callable[[], Table],
    *,
    now: float,
    older_than: float,
    target: int,
    rng: random.Random,
) -> CompactionReport:
    """Compact the closed partitions of the table ``load_table()`` returns; see the module."""
    table = load_table()
    hour_index = {
        spec_id: [f.name for f in spec.fields].index(HOUR_FIELD)
        for spec_id, spec in table.specs().items()
        if HOUR_FIELD in [f.name for f in spec.fields]
    }
    files = [t.file for t in table.scan().plan_files()]
    bins = plan_bins(files, hour_index, now=now, older_than=older_than, target=target)
    if not bins:
        return CompactionReport(0, 0, 0, 0, None)
    spec_id = table.spec().spec_id
    outputs = {b.output_path(): _rewrite(table, b) for b in bins}
    for attempt in range(COMMIT_ATTEMPTS):
        live = {f.file_path: f for f in (t.file for t in table.scan().plan_files())}
        todo = [b for b in bins if all(p in live for p in b.paths)]
        if not todo or table.spec().spec_id != spec_id:  # the spec moved: the next run
            return CompactionReport(0, 0, 0, 0, None)
        try:
            snapshot = _replace(table, todo, live, outputs)
        except CommitFailedException:
            time.sleep(rng.uniform(0, min(2.0, 0.05 * 2**attempt)))
            table = load_table()
            continue
        return CompactionReport(
            partitions=len({_key(b.inputs[0]) for b in todo}),
            files_before=sum(len(b.inputs) for b in todo),
            files_after=sum(len(outputs[b.output_path()]) for b in todo),
            rows=sum(f.record_count for b in todo for f in outputs[b.output_path()]),
            snapshot_id=snapshot,
        )
    raise CommitFailedException(f"compaction lost {COMMIT_ATTEMPTS} races to live commits")


def expire_snapshots(
    load_table: Callable[[], Table], *, now: float, keep_for: float, rng: random.Random
) -> int:
    """Forget snapshots older than ``keep_for`` seconds (never a branch or tag head); return
    how many. Metadata only: the files only they referenced stay in S3 (orphans). The
    consumer's watermarks are table properties, so no snapshot is needed to keep them."""
    for attempt in range(COMMIT_ATTEMPTS):
        table = load_table()
        heads = {ref.snapshot_id for ref in table.metadata.refs.values()}
        cutoff_ms = int((now - keep_for) * 1000)
        old = [
            s.snapshot_id
            for s in table.snapshots()
            if s.timestamp_ms < cutoff_ms and s.snapshot_id not in heads
        ]
        if not old:
            return 0
        try:
            table.maintenance.expire_snapshots().by_ids(old).commit()
        except CommitFailedException:
            time.sleep(rng.uniform(0, min(2.0, 0.05 * 2**attempt)))
            continue
        return len(old)
    raise CommitFailedException(f"snapshot expiry lost {COMMIT_ATTEMPTS} races to live commits")


def _rewrite(table: Table, b: Bin) -> list[DataFile]:
    """Write the bin's rows, in lineage order, as one file per partition of the table's
    current spec (one, unless the inputs have an older spec); their DataFiles."""
    parts = []
    for path in b.paths:
        with table.io.new_input(path).open() as stream:
            parts.append(decode_parquet(stream.read()))
    # Files written before a column was added lack it, and an int column reads as long:
    # the table's schema evolved between them (sink/iceberg_schema.py).
    rows = lineage_order(pa.concat_tables(parts, promote_options="permissive"))
    chunks = [rows]
    if any(f.spec_id != table.spec().spec_id for f in b.inputs):  # rows per partition, in Python
        groups: dict[tuple[object, ...], list[int]] = {}
        for i, part in enumerate(row_partitions(rows, table.spec(), table.schema())):
            groups.setdefault(part, []).append(i)
        chunks = [rows.take(pa.array(groups[p], pa.int64())) for p in sorted(groups, key=repr)]
    out = []
    for n, chunk in enumerate(chunks):
        body = encode_parquet(chunk)
        path = b.output_path(None if len(chunks) == 1 else n)
        with table.io.new_output(path).create(overwrite=True) as stream:
            stream.write(body)
        out.append(data_file(table.metadata, path, body))
    return out


def _replace(
    table: Table, bins: list[Bin], live: dict[str, DataFile], outputs: dict[str, list[DataFile]]
) -> int | None:
    """One commit: the bins' inputs out, their outputs in. Returns the new snapshot id."""
    tx = table.transaction()
    summary = {SUMMARY_KEY: str(sum(len(b.inputs) for b in bins))}
    with tx.update_snapshot(snapshot_properties=summary).overwrite() as replace:
        for b in bins:
            for path in b.paths:
                replace.delete_data_file(live[path])
            for output in outputs[b.output_path()]:
                replace.append_data_file(output)
    committed = tx.commit_transaction()
    current = committed.current_snapshot()
    return None if current is None else current.snapshot_id
