"""Parquet file bytes: zstd, dictionary, large row groups, byte-for-byte deterministic (pure)."""

from __future__ import annotations

from typing import Any

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
# Dictionary pages only where values repeat; on ids, free text and JSON the dictionary
# overflows and falls back, which costs time and bytes (measured: -5 % size, 2x faster).
DICTIONARY_COLUMNS = (
    "severity_text",
    "host",
    "message",
    "source",
    "log_group",
    "log_stream",
    "kinesis_shard_id",
    "kinesis_sequence_number",
)
# Timestamps and sub-sequences grow nearly monotonically inside a file: delta-packed ints.
DELTA_COLUMNS = ("timestamp", "observed_timestamp", "kinesis_sub_sequence")


def encode_parquet(table: pa.Table) -> bytes:
    """Serialize ``table``; the same table gives the same bytes (no clock or ids inside)."""
    names = set(table.column_names)
    sink = pa.BufferOutputStream()
    options: dict[str, Any] = {  # pyarrow-stubs types use_dictionary as bool only
        "use_dictionary": [c for c in DICTIONARY_COLUMNS if c in names],
    }
    pq.write_table(
        table,
        sink,
        compression="zstd",
        compression_level={c: DEEP_ZSTD_LEVEL if c in DEEP_COLUMNS else ZSTD_LEVEL for c in names},
        column_encoding={c: "DELTA_BINARY_PACKED" for c in DELTA_COLUMNS if c in names},
        write_statistics=True,
        row_group_size=ROW_GROUP_ROWS,
        data_page_size=1024 * 1024,
        store_schema=True,
        **options,
    )
    return bytes(sink.getvalue().to_pybytes())


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
