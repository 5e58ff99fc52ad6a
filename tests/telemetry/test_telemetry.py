"""Telemetry as operators see it: /metrics scraped over real HTTP from both services, EMF
lines checked against the Embedded Metric Format specification, JSON logs with trace ids."""

from __future__ import annotations

import asyncio
import io
import logging
import re
import time
from typing import Any

import aiohttp
import jsonschema
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from service.consume.runner import consume
from service.local import free_port
from service.settings import Settings
from service.telemetry import names, tracing
from service.telemetry.emf import EmfEmitter, EmfMetric, emf_document, emf_lines
from service.telemetry.logs import JsonFormatter
from service.telemetry.reasons import (
    DEAD_LETTER_CLASSES,
    ERROR_CLASSES,
    REJECT_CLASSES,
    SKIP_CLASSES,
    dead_letter_class,
    error_class,
    reject_class,
    skip_class,
)
from tests.conftest import Aws, Server

# The EMF specification's structure (docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/
# CloudWatch_Embedded_Metric_Format_Specification.html). What JSON Schema cannot say (every
# referenced metric and dimension is a top-level member) is checked in emf_violations.
EMF_UNITS = [
    "Seconds", "Microseconds", "Milliseconds", "Bytes", "Kilobytes", "Megabytes", "Gigabytes",
    "Terabytes", "Bits", "Kilobits", "Megabits", "Gigabits", "Terabits", "Percent", "Count",
    "Bytes/Second", "Kilobytes/Second", "Megabytes/Second", "Gigabytes/Second",
    "Terabytes/Second", "Bits/Second", "Kilobits/Second", "Megabits/Second", "Gigabits/Second",
    "Terabits/Second", "Count/Second", "None",
]  # fmt: skip
EMF_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["_aws"],
    "properties": {
        "_aws": {
            "type": "object",
            "required": ["Timestamp", "CloudWatchMetrics"],
            "properties": {
                "Timestamp": {"type": "integer", "minimum": 0},
                "CloudWatchMetrics": {
                    "type": "array",
                    "items": {"$ref": "#/$defs/directive"},
                },
            },
        }
    },
    "$defs": {
        "directive": {
            "type": "object",
            "required": ["Namespace", "Dimensions", "Metrics"],
            "properties": {
                "Namespace": {"type": "string", "minLength": 1, "maxLength": 1024},
                "Dimensions": {
                    "type": "array",
                    "items": {
                        "type": "array",
                        "maxItems": 30,
                        "uniqueItems": True,
                        "items": {"type": "string", "minLength": 1, "maxLength": 250},
                    },
                },
                "Metrics": {
                    "type": "array",
                    "maxItems": 100,
                    "items": {
                        "type": "object",
                        "required": ["Name"],
                        "properties": {
                            "Name": {"type": "string", "minLength": 1, "maxLength": 1024},
                            "Unit": {"enum": EMF_UNITS},
                            "StorageResolution": {"enum": [1, 60]},
                        },
                    },
                },
            },
        }
    },
}
_VALIDATOR = jsonschema.Draft202012Validator(EMF_SCHEMA)


def emf_violations(doc: dict[str, Any]) -> list[str]:
    """Every way ``doc`` breaks the EMF specification (empty when it is valid)."""
    problems = [e.message for e in _VALIDATOR.iter_errors(doc)]
    for directive in doc.get("_aws", {}).get("CloudWatchMetrics", []):
        for dim_set in directive.get("Dimensions", []):
            problems += [
                f"dimension {d} missing" for d in dim_set if not isinstance(doc.get(d), str)
            ]
        for metric in directive.get("Metrics", []):
            value = doc.get(metric.get("Name"))
            values = value if isinstance(value, list) else [value]
            if (
                not values
                or len(values) > 100
                or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
            ):
                problems.append(f"metric {metric.get('Name')} has no numeric value: {value!r}")
    return problems


def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def samples(fams: dict[str, Any], name: str, **labels: str) -> list[Sample]:
    return [s for s in fams[name].samples if all(s.labels.get(k) == v for k, v in labels.items())]


def value(fams: dict[str, Any], sample_name: str, **labels: str) -> float:
    family = sample_name.removesuffix("_total").removesuffix("_count").removesuffix("_sum")
    return sum(s.value for s in samples(fams, family, **labels) if s.name == sample_name)


async def scrape(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(url + "/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        return families(await resp.text())


def assert_closed_labels(fams: dict[str, Any]) -> None:
    """No label can grow with the data: no shard ids, streams, services or raw paths."""
    allowed = {"route", "status", "reason", "operation", "type", "kind", "le"}
    for fam in fams.values():
        if not fam.name.startswith("tideway_"):
            continue
        for s in fam.samples:
            assert set(s.labels) <= allowed, (fam.name, s.labels)
        for suffix, unit in (("_seconds", "seconds"), ("_bytes", "bytes")):
            if fam.name.endswith(suffix):
                assert fam.unit in ("", unit), fam.name


async def post(url: str, body: bytes, ctype: str = "application/x-ndjson") -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers={"Content-Type": ctype}) as resp,
    ):
        await resp.read()
        return resp.status


def ndjson(count: int, start: int = 0) -> bytes:
    return b"\n".join(
        orjson.dumps({"message": f"line {i}", "service": "api", "level": "info"})
        for i in range(start, start + count)
    )


# ------------------------------------------------------------------ serve


async def test_serve_metrics_page_and_emf_line_count_lines_refusals_and_puts(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    body = ndjson(40) + b"\n{not json\n[1]"
    assert await post(server.url + "/ingest", body) == 200
    assert await post(server.url + "/ingest", b"x", "image/png") == 415
    assert await post(server.url + "/ingest", b"{oops", "application/x-ndjson") == 400

    fams = await scrape(server.url)

    assert value(fams, "tideway_ingest_lines_accepted_total") == 40
    assert value(fams, "tideway_ingest_lines_rejected_total", reason="invalid_json") == 2
    assert value(fams, "tideway_ingest_lines_rejected_total", reason="not_object") == 1
    assert value(fams, "tideway_http_requests_rejected_total", reason="unsupported_media_type") == 1
    assert value(fams, "tideway_http_requests_rejected_total", reason="bad_request") == 1
    assert value(fams, "tideway_http_requests_total", route="/ingest", status="200") == 1
    assert value(fams, "tideway_ingest_received_bytes_total") == len(body) + len(
        b"{oops"
    )  # the 415 is refused unread
    entries = value(fams, "tideway_kinesis_put_records_entries_total")
    assert entries >= 1
    assert value(fams, "tideway_kinesis_put_records_bytes_total") > 0
    assert value(fams, "tideway_kinesis_put_records_calls_total") >= 1
    assert value(fams, "tideway_aws_call_duration_seconds_count", operation="put_records") == value(
        fams, "tideway_kinesis_put_records_calls_total"
    )
    assert value(fams, "tideway_ingest_inflight_bytes") == 0
    assert fams["tideway_http_request_duration_seconds"].type == "histogram"
    assert "process_resident_memory_bytes" in fams
    assert_closed_labels(fams)

    # serve writes its last EMF line as it stops: the refusals by class and the bytes received.
    server.stop.set()
    docs: list[dict[str, Any]] = []
    out = ""
    for _ in range(600):
        out += capsys.readouterr().out
        docs = [d for d in emf_lines(out) if d.get("Role") == names.ROLE_SERVE]
        if docs:
            break
        await asyncio.sleep(0.05)
    assert docs, "serve wrote no EMF line as it stopped"
    assert all(emf_violations(d) == [] for d in docs)
    refused = {c: sum(d[names.REFUSED_METRICS[c]] for d in docs) for c in REJECT_CLASSES}
    assert refused == {c: 0 for c in REJECT_CLASSES} | {
        "unsupported_media_type": 1,
        "bad_request": 1,
    }
    assert sum(d[names.BYTES_RECEIVED_METRIC] for d in docs) == len(body) + len(b"{oops")
    assert sum(d[names.LINES_ACCEPTED_METRIC] for d in docs) == 40
    (directive,) = docs[0]["_aws"]["CloudWatchMetrics"]
    assert directive["Dimensions"] == [[names.DIM_STREAM, names.DIM_ROLE]]
    units = {m["Name"]: m["Unit"] for m in directive["Metrics"]}
    assert units[names.BYTES_RECEIVED_METRIC] == "Bytes"
    assert units[names.REFUSED_METRICS["bad_request"]] == "Count"


def test_one_refused_metric_per_reject_class_with_fixed_names() -> None:
    assert tuple(names.REFUSED_METRICS) == REJECT_CLASSES
    assert len(set(names.REFUSED_METRICS.values())) == len(REJECT_CLASSES)
    assert all(re.fullmatch(r"Refused[A-Z][A-Za-z]+", n) for n in names.REFUSED_METRICS.values())


# ------------------------------------------------------------------ consume and EMF


async def wait_for(url: str, ready: Any, timeout: float = 60) -> dict[str, Any]:
    end = time.monotonic() + timeout
    fams: dict[str, Any] = {}
    while time.monotonic() < end:
        try:
            fams = await scrape(url)
        except aiohttp.ClientError:
            fams = {}
        if fams and ready(fams):
            return fams
        await asyncio.sleep(0.3)
    shown = {
        f"{s.name}{s.labels or ''}": s.value
        for f in fams.values()
        if f.name.startswith("tideway_")
        for s in f.samples
        if not s.name.endswith(("_bucket", "_created"))
    }
    raise AssertionError(f"metrics never satisfied the condition: {shown}")


async def test_consumer_metrics_page_and_emf_lines_report_rows_dead_letters_and_lag(
    aws: Aws, ready: Settings, server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await post(server.url + "/ingest", ndjson(300)) == 200
    kinesis = aws.client("kinesis")
    # A record that claims to be an envelope but is cut short: a dead letter, class envelope.
    kinesis.put_record(StreamName=ready.stream, Data=b"\xf0TWE\x01", PartitionKey="bad")
    port = free_port()
    run = ready.model_copy(update={"port": port, "emf_interval": 0.3})
    stop = asyncio.Event()
    task = asyncio.create_task(consume(run, stop))
    url = f"http://127.0.0.1:{port}"
    try:
        fams = await wait_for(
            url,
            lambda f: (
                value(f, "tideway_rows_written_total") >= 300
                and value(f, "tideway_dead_letter_records_total") >= 1
            ),
        )
        await asyncio.sleep(0.7)  # at least one more EMF interval after the flush
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)

    assert value(fams, "tideway_rows_written_total") == 300
    assert value(fams, "tideway_dead_letter_records_total", reason="envelope") == 1
    assert value(fams, "tideway_kinesis_records_read_total") >= 2
    assert value(fams, "tideway_kinesis_bytes_read_total") > 0
    assert value(fams, "tideway_leases_held") == 2
    assert value(fams, "tideway_lease_acquisitions_total", kind="new") == 2
    data_files = value(fams, "tideway_files_written_total", kind="data")
    assert data_files >= 1
    assert value(fams, "tideway_files_written_total", kind="dead_letter") == 1
    assert value(fams, "tideway_file_rows_count") == data_files
    assert value(fams, "tideway_file_rows_sum") == 300
    assert value(fams, "tideway_bytes_written_total") > 0
    assert sum(s.value for s in samples(fams, "tideway_flushes") if s.name.endswith("_total")) >= 1
    assert value(fams, "tideway_flush_duration_seconds_count") >= 1
    assert value(fams, "tideway_aws_call_duration_seconds_count", operation="get_records") >= 2
    assert value(fams, "tideway_aws_call_duration_seconds_count", operation="s3_upload") >= 1
    assert "tideway_consumer_lag_seconds" in fams
    assert "tideway_consumer_oldest_unflushed_age_seconds" in fams
    assert_closed_labels(fams)

    docs = [d for d in emf_lines(capsys.readouterr().out) if d.get("Role") == names.ROLE_CONSUME]
    assert len(docs) >= 2
    for doc in docs:
        assert emf_violations(doc) == []
        assert doc[names.DIM_STREAM] == ready.stream
        (directive,) = doc["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == names.EMF_NAMESPACE
        assert directive["Dimensions"] == [[names.DIM_STREAM, names.DIM_ROLE]]
        units = {m["Name"]: m["Unit"] for m in directive["Metrics"]}
        assert units[names.LAG_METRIC] == "Milliseconds"
        assert units[names.OLDEST_UNFLUSHED_METRIC] == "Seconds"
        assert doc[names.LAG_METRIC] >= 0
    # Counters are sent as increases per line: together they add up to the totals.
    assert sum(d[names.ROWS_WRITTEN_METRIC] for d in docs) == 300
    assert sum(d[names.DEAD_LETTER_METRIC] for d in docs) == 1


def test_emf_document_splits_metrics_into_directives_of_at_most_100() -> None:
    values = {f"M{i}": (float(i), "Count") for i in range(250)}
    doc = emf_document(values, {"Stream": "s", "Role": "serve"}, 1_700_000_000_000)

    assert emf_violations(doc) == []
    assert [len(d["Metrics"]) for d in doc["_aws"]["CloudWatchMetrics"]] == [100, 100, 50]
    assert doc["M249"] == 249.0


def test_emf_validator_catches_what_the_specification_forbids() -> None:
    good = emf_document({"A": (1.0, "Count")}, {"Stream": "s"}, 1)
    missing_dim = {**good}
    del missing_dim["Stream"]
    bad_unit = orjson.loads(orjson.dumps(good))
    bad_unit["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Unit"] = "Furlongs"
    string_value = {**good, "A": "1"}

    assert emf_violations(good) == []
    assert emf_violations(missing_dim) == ["dimension Stream missing"]
    assert len(emf_violations(bad_unit)) == 1
    assert len(emf_violations(string_value)) == 1
    with pytest.raises(ValueError, match="30 dimensions"):
        emf_document({"A": (1.0, "Count")}, {f"D{i}": "x" for i in range(31)}, 1)


async def test_emf_emitter_writes_deltas_and_a_last_line_on_exit() -> None:
    total = [0.0]
    lines: list[str] = []
    metrics = [
        EmfMetric("Things", "Count", lambda: total[0]),
        EmfMetric("Depth", "Milliseconds", lambda: 7.0, cumulative=False),
    ]
    async with EmfEmitter(metrics, stream="s", role="serve", interval=0.05, write=lines.append):
        total[0] = 5
        await asyncio.sleep(0.12)
        total[0] = 8
    docs = [orjson.loads(line) for line in lines]

    assert len(docs) >= 2
    assert all(emf_violations(d) == [] for d in docs)
    assert sum(d["Things"] for d in docs) == 8
    assert {d["Depth"] for d in docs} == {7.0}


async def test_emf_interval_zero_writes_nothing_and_starts_no_task() -> None:
    lines: list[str] = []
    before = len(asyncio.all_tasks())
    async with EmfEmitter(
        [EmfMetric("Things", "Count", lambda: 1.0)],
        stream="s",
        role="serve",
        interval=0,
        write=lines.append,
    ):
        assert len(asyncio.all_tasks()) == before
    assert lines == []


# ------------------------------------------------------------------ closed label sets


@given(st.text())
def test_any_reason_maps_into_its_closed_class_set(reason: str) -> None:
    assert dead_letter_class(reason) in DEAD_LETTER_CLASSES
    assert skip_class(reason) in SKIP_CLASSES


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("envelope truncated in payload", "envelope"),
        ("kpl md5 mismatch", "kpl"),
        ("cloudwatch payload malformed", "cloudwatch"),
        ("avro fingerprint 00ff unknown", "avro"),
        ("gzip data corrupt", "compression"),
        ("decompressed size over limit", "compression"),
        ("json line is not JSON", "json"),
        ("record is neither a known format nor UTF-8 text", "not_text"),
        ("unmappable: timestamp out of range", "unmappable"),
        ("decoder failed: KeyError", "decoder_error"),
        ("poisoned: flush failed 3 times: ValueError: x", "poisoned"),
    ],
)
def test_dead_letter_reasons_of_the_decoders_have_their_own_class(
    reason: str, expected: str
) -> None:
    assert dead_letter_class(reason) == expected


def test_statuses_and_errors_map_into_closed_sets() -> None:
    from botocore.exceptions import ClientError

    assert {reject_class(s) for s in range(400, 600)} <= set(REJECT_CLASSES)
    assert reject_class(413) == "too_large" and reject_class(502) == "internal"
    throttled = ClientError(
        {"Error": {"Code": "ProvisionedThroughputExceededException"}}, "PutRecords"
    )
    server = ClientError(
        {"Error": {"Code": "InternalFailure"}, "ResponseMetadata": {"HTTPStatusCode": 500}}, "x"
    )
    kinds = [error_class(e) for e in (throttled, server, TimeoutError(), OSError(), KeyError())]
    assert kinds == ["throttled", "aws_server", "timeout", "connection", "other"]
    assert set(kinds) <= set(ERROR_CLASSES)


# ------------------------------------------------------------------ logs


def _log_line(logger: logging.Logger) -> dict[str, Any]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    try:
        logger.warning("flushed", extra={"rows": 3})
    finally:
        logger.removeHandler(handler)
    return dict(orjson.loads(stream.getvalue()))


def test_log_lines_inside_a_span_carry_its_trace_and_span_ids() -> None:
    logger = logging.getLogger("tests.telemetry")
    provider = TracerProvider()
    tracing.install(provider)
    try:
        with tracing.span("work") as span:
            inside = _log_line(logger)
            ctx = span.get_span_context()
    finally:
        tracing.uninstall()
        provider.shutdown()
    outside = _log_line(logger)

    assert inside["trace_id"] == f"{ctx.trace_id:032x}"
    assert inside["span_id"] == f"{ctx.span_id:016x}"
    assert (inside["message"], inside["rows"], inside["level"]) == ("flushed", 3, "warning")
    assert "trace_id" not in outside and outside["message"] == "flushed"


# ------------------------------------------------------------------ dashboard


def test_dashboard_shows_every_emf_metric_the_services_emit_with_their_dimensions() -> None:
    from pathlib import Path

    from service.telemetry.metrics import ConsumerMetrics, IngestMetrics

    emitted = {
        (role, m.name)
        for role, metrics in (
            (names.ROLE_SERVE, IngestMetrics()),
            (names.ROLE_CONSUME, ConsumerMetrics()),
        )
        for m in metrics.emf_metrics()
    }
    body = Path(__file__).parents[2] / "deploy" / "dashboard.json"
    shown = set()
    for widget in orjson.loads(body.read_bytes())["widgets"]:
        for row in widget["properties"]["metrics"]:
            fields = [f for f in row if isinstance(f, str)]
            assert fields[0] == names.EMF_NAMESPACE
            dims = dict(zip(fields[2::2], fields[3::2], strict=True))
            assert set(dims) == {names.DIM_STREAM, names.DIM_ROLE}
            shown.add((dims[names.DIM_ROLE], fields[1]))
    assert shown == emitted
