"""Real agents' client libraries pointed at ``tideway serve``: what they send lands in S3."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import time

import aiohttp
import orjson
from elasticsearch import Elasticsearch, helpers
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from service.settings import ApiKey, Settings
from tests.conftest import Aws, drain, read_table
from tests.ingest_support import post, serving

KEY = "agent-key-0123456789"


def _with_key(settings: Settings) -> Settings:
    digest = hashlib.sha256(KEY.encode()).hexdigest()
    return settings.model_copy(update={"api_keys": (ApiKey(sha256=digest),)})


def _otel_sdk_ships(url: str, compression: Compression) -> tuple[str, str]:
    """Log through the stdlib bridge inside a span; return the (trace_id, span_id) used."""
    provider = LoggerProvider(
        resource=Resource.create({"service.name": "orders", "host.name": "pod-3"})
    )
    exporter = OTLPLogExporter(
        endpoint=url + "/v1/logs",
        headers={"Authorization": f"Bearer {KEY}"},
        compression=compression,
        timeout=10,
    )
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
    logger = logging.getLogger(f"otel-test-{compression.value}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = LoggingHandler(logger_provider=provider)
    logger.addHandler(handler)
    tracer = TracerProvider().get_tracer("test")
    try:
        with tracer.start_as_current_span("checkout") as span:
            for i in range(5):
                logger.warning(
                    "order %d shipped", i, extra={"order.id": i, "compression": compression.value}
                )
            ctx = span.get_span_context()
        assert provider.force_flush(10_000)
    finally:
        logger.removeHandler(handler)
        provider.shutdown()
    return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"


async def test_opentelemetry_sdk_otlp_http_exporter_lands_in_s3(aws: Aws, ready: Settings) -> None:
    keyed = _with_key(ready)
    async with serving(keyed, create=False) as url:
        trace, span = await asyncio.to_thread(_otel_sdk_ships, url, Compression.Gzip)
        await asyncio.to_thread(_otel_sdk_ships, url, Compression.NoCompression)
        # The SDK has no JSON exporter: an OTLP/JSON request as the spec encodes it.
        now = str(time.time_ns())
        doc = {
            "resourceLogs": [
                {
                    "resource": {
                        "attributes": [{"key": "service.name", "value": {"stringValue": "orders"}}]
                    },
                    "scopeLogs": [
                        {
                            "logRecords": [
                                {
                                    "timeUnixNano": now,
                                    "severityNumber": 9,
                                    "body": {"stringValue": "json path"},
                                }
                            ]
                        }
                    ],
                }
            ]
        }
        async with aiohttp.ClientSession() as s:
            status, answer, _ = await post(
                s, url + "/v1/logs", orjson.dumps(doc), "application/json", **{"X-API-Key": KEY}
            )
            assert (status, answer) == (200, {})
            status, _, _ = await post(s, url + "/v1/logs", orjson.dumps(doc), "application/json")
            assert status == 401
    await drain(ready)
    rows = read_table(aws, ready).to_pylist()
    assert len(rows) == 11
    shipped = [r for r in rows if r["message"] == "order 3 shipped"]
    assert len(shipped) == 2
    r = next(x for x in shipped if "gzip" in x["attributes"])
    assert (r["service"], r["host"], r["severity_text"], r["severity_number"]) == (
        "orders",
        "pod-3",
        "WARN",
        13,
    )
    assert (r["trace_id"], r["span_id"]) == (trace, span)
    assert orjson.loads(r["attributes"])["order.id"] == 3
    json_row = next(x for x in rows if x["message"] == "json path")
    assert json_row["severity_number"] == 9 and json_row["source"] == "otlp"


def _es_client_bulk(url: str) -> tuple[int, int, int]:
    api = Elasticsearch(url, api_key=("key-id", KEY), request_timeout=10)
    basic = Elasticsearch(url, basic_auth=("fluent", KEY), request_timeout=10)
    wrong = Elasticsearch(url, basic_auth=("fluent", "nope"), request_timeout=10)
    assert api.info()["version"]["number"].startswith("8.")
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 60))
    docs = (
        {
            "_index": "app-logs",
            "_source": {
                "@timestamp": now,
                "message": f"es {i}",
                "level": "info",
                "service": "billing",
            },
        }
        for i in range(40)
    )
    ok_api, errors = helpers.bulk(api, docs, chunk_size=15)
    assert errors == []
    ok_basic, _ = helpers.bulk(
        basic, [{"_op_type": "create", "_index": "other", "message": "basic"}]
    )
    try:
        wrong.info()
    except Exception as exc:
        failed = getattr(exc, "status_code", getattr(getattr(exc, "meta", None), "status", 0))
    return ok_api, ok_basic, failed


async def test_elasticsearch_client_bulk_helper_lands_in_s3(aws: Aws, ready: Settings) -> None:
    async with serving(_with_key(ready), create=False) as url:
        ok_api, ok_basic, failed = await asyncio.to_thread(_es_client_bulk, url)
        assert (ok_api, ok_basic, failed) == (40, 1, 401)
        filebeat_auth = base64.b64encode(f"id:{KEY}".encode()).decode()
        async with aiohttp.ClientSession() as s:
            status, answer, _ = await post(
                s,
                url + "/_bulk",
                b'{"create":{"_index":"filebeat"}}\n{"message":"fb"}\n',
                "application/json",
                Authorization=f"ApiKey {filebeat_auth}",
            )
        assert status == 200 and answer["errors"] is False
    await drain(ready)
    rows = read_table(aws, ready).to_pylist()
    assert len(rows) == 42
    r = next(x for x in rows if x["message"] == "es 7")
    assert (r["service"], r["severity_text"], r["source"]) == ("billing", "info", "elasticsearch")
    assert orjson.loads(r["attributes"])["_index"] == "app-logs"
    assert (
        orjson.loads(next(x for x in rows if x["message"] == "basic")["attributes"])["_index"]
        == "other"
    )
