"""The console's charts: the fleet's totals from CloudWatch, per-shard lag, throughput and dead
letters from the progress consumers write into their lease items, sampled over time."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp
import numpy as np
import orjson
import pytest

from service.aws import aws_clients
from service.console.charts import Chart, charts_json, refused_chart, refused_labels
from service.console.cloudwatch import PERIOD, metric_series
from service.console.history import FleetHistory, FleetSample
from service.console.top import read_status
from service.consume.leases import LeaseTable
from service.consume.progress import ShardProgress
from service.errors import SettingsError
from service.settings import Settings
from tests.conftest import Aws, drain
from tests.console_support import browser_session, console, put_emf_metrics, signed_in
from tests.consume.support import put_line_records


def sample(at_s: float, lags: dict[str, int], rows: int, **counts: Any) -> FleetSample:
    ids = tuple(lags)
    return FleetSample(
        int(at_s * 1000),
        ids,
        np.array([lags[i] for i in ids], dtype=np.int64),
        rows,
        counts.get("bytes", 0),
        counts.get("dead", {}),
        counts.get("tables", {}),
    )


def test_rates_are_deltas_of_the_totals_between_samples() -> None:
    h = FleetHistory(capacity=3)
    h.add(sample(0, {"a": 5}, 0, bytes=0, dead={}, tables={"logs": 0}))
    h.add(sample(10, {"a": 5}, 100, bytes=1000, dead={"json": 2}, tables={"logs": 100}))
    h.add(sample(20, {"a": 5}, 400, bytes=1500, dead={"json": 3}, tables={"logs": 100, "waf": 300}))
    flow = h.throughput()
    assert flow.x == [10.0, 20.0]
    assert flow.lines == {"rows": [10.0, 30.0], "bytes": [100.0, 50.0]}
    assert h.dead_letters().lines == {"json": [12.0, 6.0]}  # per minute
    assert h.tables().lines == {"logs": [10.0, 0.0], "waf": [0.0, 30.0]}
    # A total that goes down is no rate (a gap), and the ring keeps its capacity.
    h.add(sample(30, {"a": 5}, 50))
    assert h.throughput().lines["rows"] == [30.0, None] and len(h.samples) == 3
    h.add(sample(25, {"a": 5}, 60))  # a clock step back: dropped
    assert h.samples[-1].rows == 50


def test_the_lag_chart_follows_the_shards_with_the_largest_lag_across_a_reshard() -> None:
    h = FleetHistory()
    h.add(sample(0, {"p": 9000, "q": 10, "r": -1}, 0))
    h.add(sample(10, {"p": 8000, "q": 20, "r": 300}, 0))
    h.add(sample(20, {"c1": 50, "c2": 7000, "q": 30}, 0))  # p closed, its children appear
    lags = h.lags(top=3)
    assert list(lags.lines) == ["max", "p", "c2", "r"]
    assert lags.lines["max"] == [9000, 8000, 7000]
    assert lags.lines["p"] == [9000, 8000, None]
    assert lags.lines["c2"] == [None, None, 7000]
    assert lags.lines["r"] == [None, 300, None]  # -1: no lag known
    assert h.samples[0].shards is h.samples[1].shards, "an unchanged fleet shares its ids"


def test_cloudwatch_sums_become_rates_on_a_minute_grid() -> None:
    end = 1_795_000_000.0
    minute = int(end) // PERIOD * PERIOD
    stamp = datetime.fromtimestamp(minute - 120, UTC)
    results = [
        {"Id": "lines_in", "Timestamps": [stamp], "Values": [600.0]},
        {"Id": "lag_max", "Timestamps": [stamp], "Values": [1500.0]},
    ]
    series = metric_series(results, end)
    assert len(series.x) == 60 and series.x[-1] == minute
    i = series.x.index(minute - 120)
    assert series.lines["lines_in"][i] == 10.0 and series.lines["lag_max"][i] == 1500.0
    assert series.lines["lines_in"][i + 1] is None  # no point: a gap, not a zero


def test_refusals_are_drawn_only_for_classes_refused_in_the_window() -> None:
    end = 1_795_000_000.0
    stamp = datetime.fromtimestamp(int(end) // PERIOD * PERIOD - 60, UTC)
    results = [
        {"Id": "refused_too_many_requests", "Timestamps": [stamp], "Values": [4.0]},
        {"Id": "refused_not_found", "Timestamps": [stamp], "Values": [0.0]},
        {"Id": "bytes_in", "Timestamps": [stamp], "Values": [3e6]},
    ]
    series = metric_series(results, end)
    assert refused_labels(series) == {"refused_too_many_requests": "too_many_requests"}
    assert series.lines["bytes_in"][-2] == 0.05  # 3 MB a minute: MB/s
    assert series.lines["refused_too_many_requests"][-2] == 4.0  # per minute, as summed
    # serve ran and refused nothing: its zeros say so, where no point at all is "no data".
    quiet = metric_series([{**results[1], "Id": "refused_internal"}], end)
    assert (refused_chart(quiet).points, refused_chart(quiet).empty) == (
        0,
        "no request refused in the window",
    )
    assert refused_chart(metric_series([], end)).empty == "no data in the window yet"


def test_chart_data_cannot_close_its_script_block() -> None:
    c = Chart("lag", "t", "ms", "s", [1.0], {"</script><script>alert(1)</script>": [1.0]})
    text = str(charts_json([c]))
    assert "</script>" not in text and orjson.loads(text)[0]["series"][0]["label"].startswith("</")


def charts_of(html: str) -> dict[str, dict[str, Any]]:
    found = re.search(r'<script type="application/json" id="charts-data">(.*?)</script>', html)
    assert found, "no chart data on the page"
    return {c["id"]: c for c in orjson.loads(found.group(1))}


def integral(chart: dict[str, Any], label: str) -> float:
    """What a rate line adds up to: rate x seconds between samples, summed."""
    values = next(s["values"] for s in chart["series"] if s["label"] == label)
    xs = chart["x"]
    return sum(
        v * (xs[i] - xs[i - 1]) for i, v in enumerate(values) if i and v is not None and v > 0
    )


async def test_the_overview_draws_cloudwatch_totals_and_the_sampled_lease_table(
    ready: Settings, aws: Aws
) -> None:
    minute = int(time.time()) // PERIOD * PERIOD
    put_emf_metrics(aws.client("cloudwatch"), ready.stream, minute)
    # serve's refusals by class and bytes received, as two tasks' EMF lines become them.
    serve = [{"Name": "Stream", "Value": ready.stream}, {"Name": "Role", "Value": "serve"}]
    at = datetime.fromtimestamp(minute - 120, UTC)
    aws.client("cloudwatch").put_metric_data(
        Namespace="Tideway",
        MetricData=[
            {"MetricName": name, "Dimensions": serve, "Timestamp": at, "Value": v}
            for name, v in (
                ("RefusedBadRequest", 5.0),
                ("RefusedBadRequest", 2.0),
                ("RefusedTooLarge", 3.0),
                ("RefusedNotFound", 0.0),  # a class without refusals: no line
                ("BytesReceived", 60e6),
                ("BytesReceived", 30e6),
            )
        ],
    )
    shards = [
        s["ShardId"] for s in aws.client("kinesis").list_shards(StreamName=ready.stream)["Shards"]
    ]
    put_line_records(aws, ready, shards[0], 4, 25)
    await drain(ready)
    async with aws_clients("dynamodb") as clients:
        # An owner writing a lag with its checkpoint, as a consumer behind the tip does.
        table = LeaseTable(clients.dynamodb, ready.lease_table)
        leases, _ = await table.scan()
        behind = await table.acquire(leases[shards[1]], "worker-x")
        progress = ShardProgress(at_ms=int(time.time() * 1000), lag_ms=42_000)
        await table.checkpoint(shards[1], "worker-x", behind.epoch, 1, progress=progress)
        async with aiohttp.ClientSession() as http:
            view = await read_status(ready, clients.dynamodb, http)
    row = {r.shard_id: r for r in view.shards}
    assert row[shards[0]].last_flush_ms and row[shards[1]].lag_ms == 42_000
    assert view.summary()["max_lag_ms"] == 42_000, "tideway status reads the lease table's lag"

    fast = ready.model_copy(update={"console_sample_interval": 0.2})
    async with console(fast) as run, browser_session() as browser:
        home = charts_of(await signed_in(browser, run, "/"))
        lines = home["lines"]
        i = lines["x"].index(minute - 120)
        values = {s["label"]: s["values"][i] for s in lines["series"]}
        assert values == {"in (accepted)": 40.0, "out (landed)": 20.0}  # 2,400 and 1,200 a minute
        refused = home["refused"]
        j = refused["x"].index(minute - 120)
        by_class = {s["label"]: s["values"][j] for s in refused["series"]}
        assert by_class == {"bad_request": 7.0, "too_large": 3.0}  # a minute, over the tasks
        bytes_in = home["bytes_in"]
        assert bytes_in["unit"] == "MB/s"
        assert bytes_in["series"][0]["values"][bytes_in["x"].index(minute - 120)] == 1.5
        lag_max = home["lag_max"]
        assert lag_max["series"][0]["values"][lag_max["x"].index(minute - 180)] == 3000.0
        lag_lines = {s["label"]: s["values"] for s in home["lag"]["series"]}
        assert lag_lines[shards[1]][-1] == 42_000

        # 60 more lines land while the console samples: the rate lines add up to them.
        put_line_records(aws, ready, shards[0], 2, 30)
        await drain(ready)
        for _ in range(100):
            await asyncio.sleep(0.2)
            async with browser.get(run.url + "/") as resp:
                home = charts_of(await resp.text())
            if round(integral(home["landed"], "rows/s")) >= 60:  # rates are rounded
                break
        assert round(integral(home["landed"], "rows/s")) == 60
        assert integral(home["bytes"], "B/s") > 0
        async with browser.get(run.url + "/pipelines") as resp:
            page = await resp.text()
        assert round(integral(charts_of(page)["tables"], "logs")) == 60
        assert "<td>logs</td>" in page


def test_a_sample_interval_of_zero_is_refused_naming_the_setting() -> None:
    with pytest.raises(SettingsError, match=r"^setting TIDEWAY_CONSOLE_SAMPLE_INTERVAL is invalid"):
        Settings.load(None, stream="s", bucket="bbb", console_sample_interval=0)
