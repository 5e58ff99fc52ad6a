"""The order a flush's rows are written in: by partition, rows in lineage order inside one
(pure).

``partition_order`` is the writer's: each partition's rows are gathered by it. ``flush_order``
is the same order computed before the pipelines run, from the two columns no step may
change (``timestamp`` and ``service``): taking each destination's rows in it turns the
writer's gather of each partition into a slice (sink/routes.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from service.sink.partition import event_hours, safe_service_names


def partition_order(
    hours: np.ndarray[Any, Any], services: pa.Array[Any]
) -> tuple[np.ndarray[Any, Any], list[int]]:
    """The rows sorted by (hour, service name), stably (rows stay in lineage order, sequence
    then sub-sequence, inside a partition), and where each partition's run ends (exclusive).
    Each row gets a partition code, ordered as (hour, name) with the name's dense rank in
    Arrow's string order (nulls last), and numpy sorts those integers: a radix sort when
    they fit 16 bits (a flush's few hours times its names), else a merge sort. The same
    order and runs as Arrow's sort over (hour, name), at a third the cost. ``services``
    may come dictionary-encoded (its dictionary may repeat a name)."""
    n = len(hours)
    if n == 0:
        return np.zeros(0, dtype=np.int64), []
    encoded: Any = services
    if not pa.types.is_dictionary(services.type):
        encoded = pc.dictionary_encode(services)
    names = len(encoded.dictionary)
    name_rank = np.empty(names + 1, dtype=np.int64)
    name_rank[:names] = pc.rank(encoded.dictionary, tiebreaker="dense").to_numpy() - 1
    name_rank[names] = names  # a null name sorts after every name
    indices = encoded.indices.fill_null(names).to_numpy(zero_copy_only=False)
    hours = hours.reshape(-1)
    low = int(hours.min())
    if (int(hours.max()) - low + 1) * (names + 1) < 2**16:
        # A few adjacent hours (the common case): the codes are 16 bits, made in place, no
        # sort of the hours and no 64-bit temporaries (a flush of 1M rows pays fresh pages
        # for each).
        small = np.subtract(hours, low, out=np.empty(n, np.uint16), casting="unsafe")
        small *= names + 1
        small += name_rank.astype(np.uint16)[indices]
    else:
        hour_rank = np.unique(hours, return_inverse=True)[1].reshape(-1).astype(np.int64)
        codes = hour_rank * (names + 1) + name_rank[indices]
        top = int(codes.max())
        small = codes.astype(np.uint16 if top < 2**16 else np.uint32 if top < 2**32 else np.int64)
    order = np.argsort(small, kind="stable")
    ordered = small[order]
    ends = (np.flatnonzero(ordered[1:] != ordered[:-1]) + 1).tolist()
    return order, [*ends, n]


def flush_order(table: pa.Table) -> np.ndarray[Any, Any]:
    """``partition_order`` of the flush's rows by their hour and path-safe service: the
    writer's own order for the default template whenever the cardinality guard moves no
    row. Another template or a guarded flush only loses the slices (the writer sorts its
    rows again), never a row."""
    services = safe_service_names(table.column("service").combine_chunks())
    order, _ = partition_order(event_hours(table), services)
    return order
