"""The columns a flush repeats per record and batch, and the assembly of the output table
(pure, shared by the columnar and native paths)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from service.decode.types import DecodedRecord
from service.schema import TIMESTAMP
from service.sink.rules import FieldMapping, output_schema


def assemble(mapped: pa.Table, records: Sequence[DecodedRecord], mapping: FieldMapping) -> pa.Table:
    """The output table (``rules.output_schema``) from the mapped columns of every line of
    ``records`` (in order) and the lineage columns those records give."""
    columns = {**lineage(records), **{n: mapped.column(n) for n in mapped.column_names}}
    schema = output_schema(mapping.extra_columns)
    return pa.table([columns[name] for name in schema.names], schema=schema)


def lineage(records: Sequence[DecodedRecord]) -> dict[str, pa.Array[Any]]:
    """Per-row columns that only depend on the record and batch: repeated, not looped."""
    counts = np.array([b.count for r in records for b in r.batches], dtype=np.int64)
    per_record = np.array([sum(b.count for b in r.batches) for r in records], dtype=np.int64)
    rows = int(counts.sum())
    batch_of_row = pa.array(np.repeat(np.arange(len(counts), dtype=np.int64), counts), pa.int64())
    batches = [(r, b) for r in records for b in r.batches]

    def per_batch(values: list[Any], typ: pa.DataType) -> pa.Array[Any]:
        return pa.array(values, typ).take(batch_of_row)

    starts = np.cumsum(per_record) - per_record
    sub = np.arange(rows, dtype=np.int64) - np.repeat(starts, per_record)
    return {
        "observed_timestamp": per_batch(
            [b.observed_us or r.meta.arrival_us for r, b in batches], TIMESTAMP
        ),
        "source": per_batch([b.source or None for _, b in batches], pa.string()),
        "log_group": per_batch([b.log_group or None for _, b in batches], pa.string()),
        "log_stream": per_batch([b.log_stream or None for _, b in batches], pa.string()),
        "kinesis_shard_id": per_batch([r.meta.shard_id for r, _ in batches], pa.string()),
        "kinesis_sequence_number": per_batch(
            [str(r.meta.sequence_number) for r, _ in batches], pa.string()
        ),
        "kinesis_sub_sequence": pa.array(sub.astype(np.int32), pa.int32()),
    }
