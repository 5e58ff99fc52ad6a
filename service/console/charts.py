"""The charts of the Overview and Pipelines pages (pure): series -> the JSON that
static/charts.js hands to uPlot (vendored, static/vendor/).

A page carries its charts as one ``<script type="application/json">`` block (data, never
run: the Content-Security-Policy allows no inline script), escaped so no value can close it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import orjson
from markupsafe import Markup

from service.console.cloudwatch import REFUSED_IDS
from service.console.history import TOP_SHARDS, FleetHistory, Series

MIN_SPAN = 900.0  # seconds: the shortest time axis drawn


@dataclass(frozen=True, slots=True)
class Chart:
    id: str  # the element id is chart-<id>
    title: str
    unit: str
    source: str  # where the numbers come from, shown under the chart
    x: Sequence[float]
    lines: Mapping[str, Sequence[float | None]]  # label -> values aligned with x
    empty: str = "no data in the window yet"  # shown when no point is drawn

    @property
    def points(self) -> int:
        """How many values are drawn (None is a gap)."""
        return sum(v is not None for values in self.lines.values() for v in values)

    @property
    def x_range(self) -> list[float] | None:
        """The time axis: the data's, at least ``MIN_SPAN`` seconds ending at its last point
        (a console that just started shows its first samples at the right, not a lone dot
        on an axis of years)."""
        if not self.x:
            return None
        return [min(self.x[0], self.x[-1] - MIN_SPAN), self.x[-1]]

    def as_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "title": self.title,
            "unit": self.unit,
            "range": self.x_range,
            "x": list(self.x),
            "series": [{"label": k, "values": list(v)} for k, v in self.lines.items()],
        }


def chart(
    id: str,
    title: str,
    unit: str,
    source: str,
    series: Series,
    *,
    labels: Mapping[str, str] | None = None,
) -> Chart:
    """``series`` as a chart; ``labels`` picks and names its lines (all, as named, if None)."""
    if labels is None:
        lines = dict(series.lines)
    else:
        lines = {label: series.lines[key] for key, label in labels.items() if key in series.lines}
    return Chart(id, title, unit, source, series.x, lines)


def charts_json(charts: Sequence[Chart]) -> Markup:
    """The charts as JSON safe inside ``<script type="application/json">``: ``<``, ``>`` and
    ``&`` escaped, so a shard id or table name can never end the block."""
    text = orjson.dumps([c.as_json() for c in charts]).decode()
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return Markup(text)  # escaped above: nothing in it can end the script block


def refused_labels(cw: Series) -> dict[str, str]:
    """The refusal classes to draw: those with a refusal in the window (ten flat zero lines
    would hide the one that matters), query id -> class."""
    return {qid: reason for qid, reason in REFUSED_IDS.items() if any(cw.lines.get(qid) or ())}


def refused_chart(cw: Series) -> Chart:
    """Requests refused per minute by reason; a window of zeros says so (serve ran and
    refused nothing), not "no data"."""
    c = chart(
        "refused",
        "Requests refused per minute, by reason",
        "requests/min",
        "CloudWatch: Refused<Reason> (serve), sums; the classes of "
        "service/telemetry/reasons.py with a refusal in the window",
        cw,
        labels=refused_labels(cw),
    )
    if any(v is not None for qid in REFUSED_IDS for v in cw.lines.get(qid, ())):
        c = dataclasses.replace(c, empty="no request refused in the window")
    return c


def overview_charts(cw: Series, history: FleetHistory, interval: float) -> list[Chart]:
    """The Overview's charts: the fleet's totals from CloudWatch (``cw``, one point a
    minute) and what only the lease table has, from this console's samples."""
    sampled = f"lease table, sampled by this console every {interval:g} s"
    flow = history.throughput()
    return [
        chart(
            "lines",
            "Lines per second, in and out",
            "lines/s",
            "CloudWatch: LinesAccepted (serve) and RowsWritten (consume), sums a minute / 60",
            cw,
            labels={"lines_in": "in (accepted)", "lines_out": "out (landed)"},
        ),
        chart(
            "lag",
            "Consumer lag per shard",
            "ms",
            f"{sampled}: the lag each owner writes with its checkpoints; the {TOP_SHARDS} "
            "shards with the largest lag, and the largest of all",
            history.lags(),
        ),
        chart(
            "lag_max",
            "Largest consumer lag",
            "ms",
            "CloudWatch: ConsumerLagMillis (consume), Maximum a minute over the tasks",
            cw,
            labels={"lag_max": "largest"},
        ),
        chart(
            "landed", "Rows landed per second", "rows/s", sampled, flow, labels={"rows": "rows/s"}
        ),
        chart(
            "bytes",
            "Bytes written to S3 per second",
            "bytes/s",
            sampled,
            flow,
            labels={"bytes": "B/s"},
        ),
        chart(
            "bytes_in",
            "Request bytes received per second",
            "MB/s",
            "CloudWatch: BytesReceived (serve, bodies before decompression), sums a minute / 60",
            cw,
            labels={"bytes_in": "in (received)"},
        ),
        refused_chart(cw),
        chart(
            "dead",
            "Dead letters per minute, by reason",
            "records/min",
            f"{sampled}: classes of service/telemetry/reasons.py",
            history.dead_letters(),
        ),
        chart(
            "refusals",
            "Dead letters, HTTP 5xx answers and throttles per minute",
            "per minute",
            "CloudWatch: DeadLetterRecords, Http5xx, KinesisThrottles (serve, consume), sums",
            cw,
            labels={
                "dead_letters": "dead letters",
                "http_5xx": "HTTP 5xx",
                "throttles_serve": "throttles (serve)",
                "throttles_consume": "throttles (consume)",
            },
        ),
    ]


def pipeline_charts(history: FleetHistory, interval: float) -> list[Chart]:
    """The Pipelines page's chart: rows landed per second in each destination table."""
    return [
        chart(
            "tables",
            "Rows landed per second, by table",
            "rows/s",
            f"lease table, sampled by this console every {interval:g} s",
            history.tables(),
        )
    ]
