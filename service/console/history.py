"""The fleet over time as this console sampled it (pure): a bounded ring of lease-table samples.

CloudWatch has the fleet's totals (service/console/cloudwatch.py) but, by design, no shard
dimension (docs/telemetry.md): per-shard lag, bytes written and dead letters by reason over
time come from the progress each owner writes into its lease item with every checkpoint
(service/consume/progress.py), sampled by the console every TIDEWAY_CONSOLE_SAMPLE_INTERVAL
seconds into this ring. The ring is the process's memory: a restarted console starts empty,
and each console task behind the ALB keeps its own (docs/console.md "Charts").
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from service.console.shards import ShardRow
from service.consume.leases import ShardLease

CAPACITY = 360  # samples kept: an hour at the default interval of 10 s
TOP_SHARDS = 5  # shards drawn on the lag chart: those with the largest lag in the window


@dataclass(frozen=True, slots=True)
class FleetSample:
    """One read of the lease table: per-shard lag, and totals summed over every shard."""

    at_ms: int  # the console's wall clock
    # One int64 per shard, aligned with ``shards`` (-1: no lag known; finished and unowned
    # shards have none): 8 KB a sample at 1,000 shards, and consecutive samples of an
    # unchanged fleet share one ``shards`` tuple (FleetHistory.add).
    shards: tuple[str, ...]
    lags: npt.NDArray[np.int64]
    rows: int
    bytes: int
    dead: Mapping[str, int]  # dead letters by class
    tables: Mapping[str, int]  # rows by destination table


def fleet_sample(at_ms: int, leases: Iterable[ShardLease], rows: Iterable[ShardRow]) -> FleetSample:
    """The sample of one Scan: totals from the leases' progress, lags from the view's rows."""
    total = size = 0
    dead: dict[str, int] = {}
    tables: dict[str, int] = {}
    for lease in leases:
        p = lease.progress
        if p is None:
            continue
        total += p.rows
        size += p.bytes
        for k, v in p.dead.items():
            dead[k] = dead.get(k, 0) + v
        for k, v in p.tables.items():
            tables[k] = tables.get(k, 0) + v
    shown = list(rows)
    lags = np.fromiter((-1 if r.lag_ms is None else r.lag_ms for r in shown), np.int64, len(shown))
    return FleetSample(at_ms, tuple(r.shard_id for r in shown), lags, total, size, dead, tables)


@dataclass(frozen=True, slots=True)
class Series:
    """Chart data: x in epoch seconds, and named value lists aligned with it (None: no value)."""

    x: list[float]
    lines: dict[str, list[float | None]]


def _rate(now: int, before: int, seconds: float) -> float | None:
    # A total that went down (an item deleted, a table recreated) is no rate: a gap.
    return None if now < before else round((now - before) / seconds, 3)


class FleetHistory:
    """The last ``capacity`` samples, oldest first; rates are per second between samples."""

    def __init__(self, capacity: int = CAPACITY) -> None:
        self.samples: deque[FleetSample] = deque(maxlen=capacity)

    def add(self, sample: FleetSample) -> None:
        """Keep ``sample``; one not newer than the last (a clock step back) is dropped."""
        if self.samples and sample.at_ms <= self.samples[-1].at_ms:
            return
        if self.samples and sample.shards == self.samples[-1].shards:
            sample = dataclasses.replace(sample, shards=self.samples[-1].shards)
        self.samples.append(sample)

    def _pairs(self) -> list[tuple[FleetSample, FleetSample, float]]:
        s = list(self.samples)
        return [(a, b, (b.at_ms - a.at_ms) / 1000) for a, b in itertools.pairwise(s)]

    def throughput(self) -> Series:
        """Rows landed and bytes written to S3 per second, over the whole fleet."""
        pairs = self._pairs()
        return Series(
            [b.at_ms / 1000 for _, b, _ in pairs],
            {
                "rows": [_rate(b.rows, a.rows, dt) for a, b, dt in pairs],
                "bytes": [_rate(b.bytes, a.bytes, dt) for a, b, dt in pairs],
            },
        )

    def dead_letters(self) -> Series:
        """Dead letters per minute, one line per class seen in the window."""
        return self._by_key(lambda s: s.dead, per=60)

    def tables(self) -> Series:
        """Rows landed per second, one line per destination table seen in the window."""
        return self._by_key(lambda s: s.tables, per=1)

    def _by_key(self, of: Callable[[FleetSample], Mapping[str, int]], per: int) -> Series:
        pairs = self._pairs()
        keys = sorted({k for _, b, _ in pairs for k in of(b)})
        lines: dict[str, list[float | None]] = {}
        for k in keys:
            values = []
            for a, b, dt in pairs:
                r = _rate(of(b).get(k, 0), of(a).get(k, 0), dt / per)
                values.append(r)
            lines[k] = values
        return Series([b.at_ms / 1000 for _, b, _ in pairs], lines)

    def lags(self, top: int = TOP_SHARDS) -> Series:
        """Lag per shard (ms) of the ``top`` shards with the largest lag in the window, and
        the largest lag over all shards at each sample (``max``)."""
        samples = list(self.samples)
        fleets: dict[int, tuple[tuple[str, ...], list[npt.NDArray[np.int64]]]] = {}
        for s in samples:  # samples of one fleet (one shards tuple) are reduced together
            fleets.setdefault(id(s.shards), (s.shards, []))[1].append(s.lags)
        peak: dict[str, int] = {}
        index: dict[int, dict[str, int]] = {}
        for key, (shards, arrays) in fleets.items():
            index[key] = {sid: i for i, sid in enumerate(shards)}
            if not shards:
                continue
            for sid, lag in zip(shards, np.max(np.stack(arrays), axis=0).tolist(), strict=True):
                if lag >= 0 and lag > peak.get(sid, -1):
                    peak[sid] = lag
        chosen = sorted(peak, key=lambda sid: (-peak[sid], sid))[:top]
        lines: dict[str, list[float | None]] = {"max": []}
        for sid in chosen:
            lines[sid] = []
        for s in samples:
            top_lag = int(s.lags.max()) if len(s.lags) else -1
            lines["max"].append(None if top_lag < 0 else top_lag)
            at = index[id(s.shards)]
            for sid in chosen:
                i = at.get(sid)
                lag = -1 if i is None else int(s.lags[i])
                lines[sid].append(None if lag < 0 else lag)
        return Series([s.at_ms / 1000 for s in samples], lines)
