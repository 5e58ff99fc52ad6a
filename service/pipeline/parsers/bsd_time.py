"""The year of an RFC 3164 (BSD syslog) stamp, which has none: ``Oct 11 22:14:15`` (pure).

The year comes from the line's arrival time (the Kinesis record's approximate arrival
timestamp), so a replay of the same records reads the same year. Of the stamp in the
arrival's year, the year before and the year after, the one closest to the arrival wins:
a December line arriving on 1 January belongs to the year before, a 1 January line from a
sender whose clock runs ahead of an arrival on 31 December to the year after. The stamp
has no zone either: it is read as UTC. A date that does not exist in the chosen year
(29 February) is never moved to another day; that candidate is skipped.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
from pyarrow import compute

from .base import TIMESTAMP

# pyarrow-stubs type no implicit scalar casts (array + int, str joined with an array): compute is untyped here.
pc: Any = compute
_FORMAT = "%Y %b %d %H:%M:%S"
_NONE = np.iinfo(np.int64).max


def bsd_times(stamps: pa.Array[Any], arrival: pa.Array[Any]) -> pa.Array[Any]:
    """Each stamp (``Mmm dd hh:mm:ss``; null stays null) as a UTC timestamp in the year
    that puts it closest to ``arrival`` (timestamps, one per stamp)."""
    if isinstance(arrival, pa.ChunkedArray):
        arrival = arrival.combine_chunks()
    at = pc.fill_null(pc.cast(arrival, pa.int64()), 0).to_numpy(zero_copy_only=False)
    year = pc.year(arrival)
    month = pc.utf8_slice_codeunits(stamps, 0, 3)
    best = np.full(len(stamps), _NONE, dtype=np.int64)
    chosen = np.zeros(len(stamps), dtype=np.int64)
    for delta in (-1, 0, 1):
        text = pc.binary_join_element_wise(pc.cast(pc.add(year, delta), pa.string()), stamps, " ")
        parsed = pc.strptime(text, _FORMAT, "us", error_is_null=True)
        # strptime rolls an impossible day over (29 Feb 2023 -> 1 Mar): its month then differs.
        real = pc.equal(pc.strftime(parsed, "%b"), month)
        value = pc.cast(pc.if_else(real, parsed, pa.scalar(None, parsed.type)), pa.int64())
        times = pc.fill_null(value, 0).to_numpy(zero_copy_only=False)
        valid = pc.fill_null(pc.is_valid(value), False).to_numpy(zero_copy_only=False)
        distance = np.where(valid, np.abs(times - at), _NONE)
        closer = distance < best
        best = np.where(closer, distance, best)
        chosen = np.where(closer, times, chosen)
    found = pa.array(best != _NONE) if len(stamps) else pa.array([], pa.bool_())
    micros = pa.array(chosen, pa.int64())
    return pc.cast(pc.if_else(found, micros, pa.scalar(None, pa.int64())), TIMESTAMP)  # type: ignore[no-any-return]
