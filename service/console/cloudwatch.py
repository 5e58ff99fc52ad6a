"""The fleet's totals over time from CloudWatch (I/O), where the services' EMF lines land.

serve and consume write EMF lines (service/telemetry/emf.py, namespace ``Tideway``, one
dimension set ``[Stream, Role]``); CloudWatch keeps them for 15 months, whatever console
task asks and however often it restarted. One GetMetricData call reads the last hour at one
minute a point, at most once per ``CACHE_SECONDS`` per console task (GetMetricData is billed
per metric read). It never raises: a console without ``cloudwatch:GetMetricData`` or
without network shows why, and the charts from its own samples (history.py) still draw.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from service.console.history import Series
from service.telemetry import names

PERIOD = 60  # seconds a point: the EMF default interval, the finest CloudWatch keeps 15 days
WINDOW = 3600  # seconds shown
CACHE_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class Query:
    """One metric of the Tideway namespace, as a chart line: ``per_second`` turns a Sum per
    period into a rate."""

    id: str  # GetMetricData's Id: [a-z][A-Za-z0-9_]*
    role: str
    metric: str
    stat: str
    per_second: bool = False
    scale: float = 1.0  # values are divided by it (1e6: bytes as MB)


# One line per refusal class (names.REFUSED_METRICS): query id -> class.
REFUSED_IDS = {f"refused_{reason}": reason for reason in names.REFUSED_METRICS}

QUERIES = (
    Query("lines_in", names.ROLE_SERVE, names.LINES_ACCEPTED_METRIC, "Sum", per_second=True),
    Query("lines_out", names.ROLE_CONSUME, names.ROWS_WRITTEN_METRIC, "Sum", per_second=True),
    Query("lag_max", names.ROLE_CONSUME, names.LAG_METRIC, "Maximum"),
    Query("dead_letters", names.ROLE_CONSUME, names.DEAD_LETTER_METRIC, "Sum"),
    Query("http_5xx", names.ROLE_SERVE, names.HTTP_5XX_METRIC, "Sum"),
    Query("throttles_serve", names.ROLE_SERVE, names.THROTTLE_METRIC, "Sum"),
    Query("throttles_consume", names.ROLE_CONSUME, names.THROTTLE_METRIC, "Sum"),
    Query(
        "bytes_in", names.ROLE_SERVE, names.BYTES_RECEIVED_METRIC, "Sum", per_second=True, scale=1e6
    ),
    *(
        Query(qid, names.ROLE_SERVE, names.REFUSED_METRICS[reason], "Sum")
        for qid, reason in REFUSED_IDS.items()
    ),
)


def metric_queries(stream: str) -> list[dict[str, Any]]:
    """GetMetricData's MetricDataQueries for ``QUERIES`` of ``stream`` (pure)."""
    return [
        {
            "Id": q.id,
            "MetricStat": {
                "Metric": {
                    "Namespace": names.EMF_NAMESPACE,
                    "MetricName": q.metric,
                    "Dimensions": [
                        {"Name": names.DIM_STREAM, "Value": stream},
                        {"Name": names.DIM_ROLE, "Value": q.role},
                    ],
                },
                "Period": PERIOD,
                "Stat": q.stat,
            },
            "ReturnData": True,
        }
        for q in QUERIES
    ]


def metric_series(results: Sequence[Mapping[str, Any]], end_s: float) -> Series:
    """GetMetricData's results on one minute grid ending at ``end_s`` (pure): every query a
    line (None where CloudWatch has no point: the service did not run or emit), sums per
    minute turned into rates where the query says so."""
    start = (int(end_s) // PERIOD) * PERIOD - WINDOW + PERIOD
    x = [float(start + i * PERIOD) for i in range(WINDOW // PERIOD)]
    slot = {int(t): i for i, t in enumerate(x)}
    by_id = {q.id: q for q in QUERIES}
    lines: dict[str, list[float | None]] = {q.id: [None] * len(x) for q in QUERIES}
    for result in results:
        q = by_id.get(result.get("Id", ""))
        if q is None:
            continue
        for stamp, value in zip(
            result.get("Timestamps", []), result.get("Values", []), strict=False
        ):
            i = slot.get(int(stamp.timestamp()) // PERIOD * PERIOD)
            if i is not None:
                v = value / q.scale
                lines[q.id][i] = round(v / PERIOD, 6) if q.per_second else v
    return Series(x, lines)


class MetricReader:
    """The last hour of ``QUERIES`` for one stream, cached; ``problem`` says why it is empty."""

    def __init__(
        self, cloudwatch: Any, stream: str, clock: Callable[[], float] = time.time
    ) -> None:
        self._cw = cloudwatch
        self._stream = stream
        self._clock = clock
        self._cached: tuple[float, Series, str] | None = None

    async def read(self) -> tuple[Series, str]:
        """(series, problem): problem is "" when CloudWatch answered."""
        now = self._clock()
        if self._cached is not None and now - self._cached[0] < CACHE_SECONDS:
            return self._cached[1], self._cached[2]
        problem = ""
        results: list[dict[str, Any]] = []
        # Whole minutes, as CloudWatch itself rounds them (moto does not: it starts its periods
        # at StartTime), ending after the current minute.
        end = datetime.fromtimestamp((int(now) // PERIOD + 1) * PERIOD, UTC)
        kwargs: dict[str, Any] = {
            "MetricDataQueries": metric_queries(self._stream),
            "StartTime": end - timedelta(seconds=WINDOW),
            "EndTime": end,
            "ScanBy": "TimestampAscending",
        }
        try:
            while True:  # one page at this size; NextToken only past 100,800 points
                page = await self._cw.get_metric_data(**kwargs)
                results.extend(page.get("MetricDataResults", []))
                if not page.get("NextToken"):
                    break
                kwargs["NextToken"] = page["NextToken"]
        except (ClientError, BotoCoreError) as exc:
            problem = f"CloudWatch GetMetricData failed: {type(exc).__name__}: {exc}"
        series = metric_series(results, now)
        self._cached = (now, series, problem)
        return series, problem
