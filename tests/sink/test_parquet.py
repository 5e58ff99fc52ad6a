"""Per-column Parquet choices: codec, zstd level and dictionary follow the column's data."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq

from service.sink.parquet import (
    DEEP_MIN_BYTES,
    DEEP_ZSTD_LEVEL,
    ZSTD_LEVEL,
    decode_parquet,
    encode_parquet,
    zstd_level,
)


def routed_table(rows: int, attribute_bytes: int) -> pa.Table:
    """A small routed table: repeating hosts, unique messages, a field never set."""
    return pa.table(
        {
            "host": [f"ip-10-0-0-{i % 7}" for i in range(rows)],
            "message": [f"request {i} took {i * 7 % 1000} ms" for i in range(rows)],
            "kinesis_sequence_number": [str(1000 + i // 3) for i in range(rows)],
            "attributes": ["x" * (attribute_bytes // rows)] * rows,
            "ssl_cipher": pa.nulls(rows, pa.string()),
        }
    )


def chunks(body: bytes) -> dict[str, pq.ColumnChunkMetaData]:
    group = pq.ParquetFile(io.BytesIO(body)).metadata.row_group(0)
    return {group.column(i).path_in_schema: group.column(i) for i in range(group.num_columns)}


def test_a_column_of_nulls_only_is_not_compressed_and_rows_read_back() -> None:
    table = routed_table(300, 4_000)
    body = encode_parquet(table)
    meta = chunks(body)
    assert meta["ssl_cipher"].compression == "UNCOMPRESSED"
    assert {meta[c].compression for c in ("host", "message", "attributes")} == {"ZSTD"}
    assert decode_parquet(body).equals(table)
    assert encode_parquet(table) == body


def test_dictionary_only_on_columns_whose_values_repeat() -> None:
    meta = chunks(encode_parquet(routed_table(300, 4_000)))
    assert meta["host"].has_dictionary_page
    assert not meta["message"].has_dictionary_page
    assert not meta["kinesis_sequence_number"].has_dictionary_page


def test_the_deep_level_only_on_a_large_attributes_chunk() -> None:
    small = routed_table(300, DEEP_MIN_BYTES // 4).column("attributes")
    large = routed_table(300, DEEP_MIN_BYTES * 2).column("attributes")
    assert zstd_level("attributes", small) == ZSTD_LEVEL
    assert zstd_level("attributes", large) == DEEP_ZSTD_LEVEL
    assert zstd_level("message", large) == ZSTD_LEVEL
