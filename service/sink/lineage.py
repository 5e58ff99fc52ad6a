"""The columns a flush repeats per record and batch, and the assembly of the output table
(pure, shared by the columnar and native paths, and by the partition gather in ``plan``)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from pyarrow import compute

from service.decode.types import DecodedRecord
from service.pipeline.engine import ARRIVAL_COLUMN
from service.schema import TIMESTAMP

# pyarrow-stubs type binary_length for no plain Array: compute is untyped here.
pc: Any = compute


@dataclass(frozen=True, slots=True)
class Lineage:
    """The lineage of a flush's rows, held per batch (one value each) and per row only as
    the row's batch and sub-sequence numbers: the per-row string columns are made for the
    rows asked for (one partition), never for the whole flush."""

    per_batch: dict[str, pa.Array[Any]]
    batch_of_row: np.ndarray[Any, np.dtype[np.int64]]
    sub: np.ndarray[Any, np.dtype[np.int32]]

    @classmethod
    def of(cls, records: Sequence[DecodedRecord]) -> Lineage:
        """Every line of ``records``, in order."""
        counts = np.array([b.count for r in records for b in r.batches], dtype=np.int64)
        per_record = np.array([sum(b.count for b in r.batches) for r in records], dtype=np.int64)
        rows = int(counts.sum())
        batches = [(r, b) for r in records for b in r.batches]
        starts = np.cumsum(per_record) - per_record
        sub = np.arange(rows, dtype=np.int64) - np.repeat(starts, per_record)
        per_batch: dict[str, pa.Array[Any]] = {
            "observed_timestamp": pa.array(
                [b.observed_us or r.meta.arrival_us for r, b in batches], TIMESTAMP
            ),
            "source": pa.array([b.source or None for _, b in batches], pa.string()),
            "log_group": pa.array([b.log_group or None for _, b in batches], pa.string()),
            "log_stream": pa.array([b.log_stream or None for _, b in batches], pa.string()),
            "kinesis_shard_id": pa.array([r.meta.shard_id for r, _ in batches], pa.string()),
            "kinesis_sequence_number": pa.array(
                [str(r.meta.sequence_number) for r, _ in batches], pa.string()
            ),
            ARRIVAL_COLUMN: pa.array([r.meta.arrival_us for r, _ in batches], TIMESTAMP),
        }
        batch_of_row = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
        return cls(per_batch, batch_of_row, sub.astype(np.int32))

    def keep(self, mask: np.ndarray[Any, np.dtype[np.bool_]]) -> Lineage:
        """The lineage of the rows where ``mask`` is true."""
        return Lineage(self.per_batch, self.batch_of_row[mask], self.sub[mask])

    def take(self, rows: np.ndarray[Any, Any]) -> Lineage:
        """The lineage of ``rows`` (positions), in that order."""
        return Lineage(self.per_batch, self.batch_of_row[rows], self.sub[rows])

    def columns(
        self, rows: np.ndarray[Any, Any] | None = None, names: Collection[str] | None = None
    ) -> dict[str, pa.Array[Any]]:
        """The lineage columns of ``rows`` (positions, in that order; None: every row),
        those in ``names`` only when given."""
        batch = self.batch_of_row if rows is None else self.batch_of_row[rows]
        sub = self.sub if rows is None else self.sub[rows]
        index = pa.array(batch, pa.int64())
        columns = {
            name: values.take(index)
            for name, values in self.per_batch.items()
            if name != ARRIVAL_COLUMN and (names is None or name in names)
        }
        if names is None or "kinesis_sub_sequence" in names:
            columns["kinesis_sub_sequence"] = pa.array(sub, pa.int32())
        return columns

    def row_bytes_bound(self) -> int:
        """At least the Arrow bytes one row's lineage columns take (``columns``): the
        longest value of each text column with its offset, each fixed-width value, and a
        validity bit a column (rounded up to a byte)."""
        total = 4 + 1  # kinesis_sub_sequence
        for name, values in self.per_batch.items():
            if name == ARRIVAL_COLUMN:
                continue
            if pa.types.is_string(values.type):
                longest = pc.max(pc.binary_length(values)).as_py()
                total += (longest or 0) + 4 + 1
            else:
                total += values.type.byte_width + 1
        return total

    def arrival(self) -> pa.Array[Any]:
        """Each row's Kinesis arrival time (the pipelines' working column ``_arrival``)."""
        return self.per_batch[ARRIVAL_COLUMN].take(pa.array(self.batch_of_row, pa.int64()))

    def join(
        self, mapped: pa.Table, schema: pa.Schema, rows: np.ndarray[Any, Any] | None = None
    ) -> pa.Table:
        """The table of ``schema`` for ``rows`` (None: every row) from the flush's ``mapped``
        columns (those rows already taken) and their lineage."""
        lineage = self.columns(rows, set(schema.names))
        # schema.names and columns by position: Table.column_names makes a Schema and a
        # Field object per column, and this runs once a partition.
        own = {n: mapped.column(i) for i, n in enumerate(mapped.schema.names)}
        columns = {**lineage, **own}
        return pa.table([columns[name] for name in schema.names], schema=schema)
