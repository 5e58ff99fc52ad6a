"""Parquet file bytes: zstd, dictionary, large row groups, byte-for-byte deterministic (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq

ROW_GROUP_ROWS = 1_000_000  # Athena reads a row group per split; fewer, larger ones scan faster
ZSTD_LEVEL = 1  # measured (docs/writer.md): levels 3-9 cost 1.5-4x the time for 1-5 % smaller
# ... except on ``attributes`` (half the file's bytes), where lazy matching finds the repeats
# across rows that level 1 misses. Level 6, not 7: measured in instructions (callgrind) on
# benchmarks/writer.py's partitions, 7 costs 28 % of the whole flush on this one column and
# 6 saves 14 % of that for +0.7 % of the file; on ``message``, ``host`` and
# ``kinesis_sequence_number`` level 7 cost 10 % of the flush for 1 % of the file, so they
# stay at level 1 (docs/writer.md, "Compression levels").
DEEP_ZSTD_LEVEL = 6
DEEP_COLUMNS = ("attributes",)
# ... and only on a column chunk of at least this many value bytes: a small routed table's
# file (a few hundred rows) pays level 6's larger match tables and lazy search for 3 % of
# its bytes (measured: a quarter of the encoding of the pipelines benchmark's app table);
# the writer's files hold 200 KB and more of ``attributes`` and keep level 6.
DEEP_MIN_BYTES = 128 * 1024
# Dictionary pages only where values repeat apart from runs; on ids, free text and JSON
# the dictionary overflows or holds nearly every value, which costs time and bytes
# (measured: -5 % size, 2x faster). ``message`` (84 % distinct) and
# ``kinesis_sequence_number`` (one value per record, in runs zstd finds) are smaller
# without one (-1.5 % and -2.2 % of the plain flush's files at 100k lines, docs/writer.md).
DICTIONARY_COLUMNS = (
    "severity_text",
    "host",
    "source",
    "log_group",
    "log_stream",
    "kinesis_shard_id",
)
# Timestamps and sub-sequences grow nearly monotonically inside a file: delta-packed ints.
DELTA_COLUMNS = ("timestamp", "observed_timestamp", "kinesis_sub_sequence")

# The codecs pyarrow-stubs accepts per column; encode_parquet uses two of them.
Codec = Literal["gzip", "brotli", "lz4", "zstd", "snappy", "none"]


def encode_parquet(table: pa.Table) -> bytes:
    """Serialize ``table``; the same table gives the same bytes (no clock or ids inside)."""
    # Each column looked up once, by position: Table.column_names and Table.columns make
    # a Schema and a Field object per column (a routed flush writes many files of many
    # columns).
    columns = {name: table.column(i) for i, name in enumerate(table.schema.names)}
    names = set(columns)
    sink = pa.BufferOutputStream()
    options: dict[str, Any] = {  # pyarrow-stubs types use_dictionary as bool only
        "use_dictionary": [c for c in DICTIONARY_COLUMNS if c in names],
    }
    codecs = compression_codecs(columns)
    pq.write_table(
        table,
        sink,
        compression=codecs,
        compression_level={c: zstd_level(c, columns[c]) for c in codecs if codecs[c] == "zstd"},
        column_encoding={c: "DELTA_BINARY_PACKED" for c in DELTA_COLUMNS if c in names},
        write_statistics=True,
        row_group_size=ROW_GROUP_ROWS,
        data_page_size=1024 * 1024,
        store_schema=True,
        **options,
    )
    return bytes(sink.getvalue().to_pybytes())


def compression_codecs(columns: Mapping[str, pa.ChunkedArray[Any]]) -> dict[str, Codec]:
    """zstd on each column, but none on a column of nulls only.

    Such a chunk's page holds only its definition levels (one RLE run, a few bytes):
    zstd makes it larger and each call sets up a fresh context (routed tables have many
    such columns, e.g. an ALB log's unset fields).
    """
    return {
        name: "none" if column.null_count == len(column) else "zstd"
        for name, column in columns.items()
    }


def zstd_level(name: str, column: pa.ChunkedArray[Any]) -> int:
    """The deep level on ``DEEP_COLUMNS`` of a large enough chunk, else level 1."""
    if name in DEEP_COLUMNS and column.nbytes >= DEEP_MIN_BYTES:
        return DEEP_ZSTD_LEVEL
    return ZSTD_LEVEL


def decode_parquet(body: bytes, columns: list[str] | None = None) -> pa.Table:
    """The rows of a Parquet file held in memory.

    Read through ``ParquetFile`` (synchronous) rather than ``pq.read_table``, whose dataset
    scan may drop its last reference to the file's Python-backed buffer from one of Arrow's
    I/O threads after it returned: if the process exits at that moment, the thread needs
    the GIL during interpreter finalization and the process aborts ("terminate called
    without an active exception", exit 134; apache/arrow#34314).
    """
    return pq.ParquetFile(pa.BufferReader(body), pre_buffer=False).read(
        columns=columns, use_threads=False
    )
