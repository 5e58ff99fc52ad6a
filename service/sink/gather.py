"""One partition's rows gathered from a flush's table into single-chunk columns (pure).

A flush mapped in several calls (the Python path's batches, a flush past the scanner's
512 MiB a call) has columns of many chunks.
Arrow's ``take`` on a chunked column joins its chunks first, on every call, and a joined
copy of the whole table made once costs as much in fresh memory; so each partition's rows
(ascending, as ``order.partition_order`` leaves them) are taken chunk by chunk and only the
partition's pieces are joined: the same single-chunk columns, the same Parquet bytes. A
partition whose rows are one run of the table is a slice of it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa


class Gatherer:
    """``table.take(rows)`` with one chunk per column, for rows in ascending order."""

    def __init__(self, table: pa.Table) -> None:
        self.table = table
        self.batches = table.to_batches() if chunk_count(table) > 1 else []
        lengths = [batch.num_rows for batch in self.batches]
        self.starts = np.cumsum([0, *lengths], dtype=np.int64)

    def take(self, rows: np.ndarray[Any, Any]) -> pa.Table:
        if len(rows) and int(rows[-1]) - int(rows[0]) + 1 == len(rows):
            # Ascending and distinct, so a run: the rows are a slice of the table, no copy
            # (a routed table comes in partition order: sink/order.py ``flush_order``).
            taken = self.table.slice(int(rows[0]), len(rows))
            # A slice of one-chunk columns has one chunk each: combine_chunks would only
            # check every column again (a routed flush slices every partition).
            return taken.combine_chunks() if self.batches else taken
        if not self.batches:
            return self.table.take(rows)
        cuts = np.searchsorted(rows, self.starts)
        pieces = [
            batch.take(rows[cuts[i] : cuts[i + 1]] - self.starts[i])
            for i, batch in enumerate(self.batches)
            if cuts[i + 1] > cuts[i]
        ]
        return pa.Table.from_batches(pieces, self.table.schema).combine_chunks()


def chunk_count(table: pa.Table) -> int:
    """The most chunks any column of ``table`` has."""
    return max((column.num_chunks for column in table.columns), default=0)
