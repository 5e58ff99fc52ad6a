"""``tideway serve`` over real HTTP on loopback against moto: routes, answers, durability."""

from __future__ import annotations

import asyncio
import gzip
import time
from collections import Counter

import aiohttp
import orjson
import pytest
import zstandard
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)

from service import envelope
from service.ingest.packer import Header, Packer, Ticket, put_batches
from service.loggen import ndjson_lines
from service.settings import Settings
from tests.conftest import Aws, drain, read_table
from tests.ingest_support import ndjson, post, serving, stream_lines, stream_records

UNIT = 25_000  # one Kinesis PUT payload unit


async def test_ingest_reports_invalid_lines_by_number_and_keeps_the_valid_ones(
    aws: Aws, ready: Settings
) -> None:
    body = b'{"message": "a"}\nnot json\n\n[1, 2]\n{}\n{"message": "\xff"}\n{"message": "b"}\n'
    async with serving(ready, create=False) as url, aiohttp.ClientSession() as s:
        status, answer, _ = await post(s, url + "/ingest", body)
        assert status == 200
        assert (answer["accepted"], answer["rejected"]) == (2, 4)
        assert [e["line"] for e in answer["errors"]] == [2, 4, 5, 6]
        assert "UTF-8" in answer["errors"][3]["reason"]
        status, answer, _ = await post(s, url + "/ingest", b"nope\n[]\n")
        assert (status, answer["accepted"], answer["rejected"]) == (400, 0, 2)
        status, answer, _ = await post(
            s, url + "/ingest", orjson.dumps([{"a": 1}, 3]), "application/json"
        )
        assert (status, answer["accepted"], answer["errors"]) == (
            200,
            1,
            [{"line": 2, "reason": "element is a JSON int, not an object"}],
        )
        status, answer, _ = await post(s, url + "/ingest", b"x", "application/xml")
        assert status == 415 and "Content-Type" in answer["error"]
        status, answer, _ = await post(s, url + "/ingest", b"  \n")
        assert status == 400
        z = zstandard.ZstdCompressor().compress(b"one\ntwo\n")
        status, answer, _ = await post(
            s, url + "/ingest", z, "text/plain", **{"Content-Encoding": "zstd"}
        )
        assert (status, answer["accepted"]) == (200, 2)
    messages = Counter(str(x.get("message")) for x in stream_lines(aws, ready.stream))
    assert messages == Counter({"a": 1, "b": 1, "{'a': 1}": 0, "one": 1, "two": 1, "None": 1})


async def test_concurrent_requests_are_packed_together_and_spread_over_every_shard(
    aws: Aws, settings: Settings
) -> None:
    four = settings.model_copy(update={"shard_count": 4, "linger_ms": 20.0})
    lines = ndjson_lines(12 * 300, seed=5)
    async with serving(four) as url, aiohttp.ClientSession() as s:
        results = await asyncio.gather(
            *(
                post(s, url + "/ingest", b"\n".join(lines[r * 300 : r * 300 + 300]))
                for r in range(12)
            )
        )
    assert {status for status, _, _ in results} == {200}
    by_shard = stream_records(aws, four.stream)
    assert len(by_shard) == 4 and all(by_shard.values()), {k: len(v) for k, v in by_shard.items()}
    records = [envelope.decode(d) for recs in by_shard.values() for d in recs]
    assert sum(r.line_count for r in records) == len(lines)
    assert len(records) < len(lines) / 20  # group commit: many lines per record
    # Every record but the last of a burst fills most of one PUT payload unit, never two.
    sizes = [len(d) for recs in by_shard.values() for d in recs]
    assert max(sizes) <= UNIT


async def test_otlp_protobuf_and_json_land_with_mapped_columns(aws: Aws, ready: Settings) -> None:
    trace = "5b8efff798038103d269b633813fc60c"
    when = (int(time.time()) - 3600) * 10**9 + 123456789
    doc = {
        "resourceLogs": [
            {
                "resource": {
                    "attributes": [
                        {"key": "service.name", "value": {"stringValue": "checkout"}},
                        {"key": "host.name", "value": {"stringValue": "node-7"}},
                        {"key": "cloud.region", "value": {"stringValue": "eu-west-1"}},
                    ]
                },
                "scopeLogs": [
                    {
                        "scope": {"name": "app.payments"},
                        "logRecords": [
                            {
                                "timeUnixNano": str(when),
                                "observedTimeUnixNano": str(when + 10**9),
                                "severityNumber": 17,
                                "severityText": "ERROR",
                                "body": {"stringValue": "card declined"},
                                "attributes": [
                                    {"key": "http.status_code", "value": {"intValue": "402"}},
                                    {"key": "message", "value": {"stringValue": "clash"}},
                                ],
                                "traceId": trace,
                                "spanId": "eee19b7ec3c1b174",
                            },
                            {
                                "body": {
                                    "kvlistValue": {
                                        "values": [
                                            {
                                                "key": "k",
                                                "value": {
                                                    "arrayValue": {"values": [{"boolValue": True}]}
                                                },
                                            },
                                        ]
                                    }
                                },
                                "severityText": "INFO",
                            },
                            {"body": {"stringValue": "bad ids"}, "traceId": "abcd"},
                        ],
                    }
                ],
            }
        ]
    }
    proto = json_format.ParseDict(
        {
            **doc,
            "resourceLogs": [
                {
                    **doc["resourceLogs"][0],
                    "scopeLogs": [
                        {
                            "scope": {"name": "proto"},
                            "logRecords": [
                                {
                                    "body": {"stringValue": "from protobuf"},
                                    "timeUnixNano": str(when),
                                }
                            ],
                        }
                    ],
                }
            ],
        },
        ExportLogsServiceRequest(),
    )
    async with serving(ready, create=False) as url, aiohttp.ClientSession() as s:
        status, answer, headers = await post(
            s, url + "/v1/logs", orjson.dumps(doc), "application/json"
        )
        assert status == 200 and headers["Content-Type"].startswith("application/json")
        assert answer["partialSuccess"]["rejectedLogRecords"] == "1"
        assert "trace_id must be 16 bytes" in answer["partialSuccess"]["errorMessage"]
        status, raw, headers = await post(
            s,
            url + "/v1/logs",
            gzip.compress(proto.SerializeToString()),
            "application/x-protobuf",
            **{"Content-Encoding": "gzip"},
        )
        assert status == 200 and headers["Content-Type"] == "application/x-protobuf"
        assert not ExportLogsServiceResponse.FromString(raw).HasField("partial_success")
        status, raw, _ = await post(s, url + "/v1/logs", b"\x0a\xff\xff", "application/x-protobuf")
        assert status == 400  # a google.rpc.Status, per OTLP/HTTP
        status, _, _ = await post(s, url + "/v1/logs", b"{}", "text/plain")
        assert status == 415
    await drain(ready)
    rows = {r["message"]: r for r in read_table(aws, ready).to_pylist()}
    assert set(rows) == {"card declined", '{"k":[true]}', "from protobuf"}
    r = rows["card declined"]
    assert (r["service"], r["host"], r["trace_id"], r["span_id"]) == (
        "checkout",
        "node-7",
        trace,
        "eee19b7ec3c1b174",
    )
    assert (r["severity_text"], r["severity_number"]) == ("ERROR", 17)
    assert r["timestamp"].timestamp() == pytest.approx(when / 1e9, abs=1e-6)
    assert r["source"] == "otlp"
    attrs = orjson.loads(r["attributes"])
    assert attrs["http.status_code"] == 402 and attrs["attributes"] == {"message": "clash"}
    assert attrs["resource"] == {"cloud.region": "eu-west-1"} and attrs["scope"] == "app.payments"
    assert rows["from protobuf"]["service"] == "checkout"


async def test_elasticsearch_bulk_answers_per_item_like_elasticsearch(
    aws: Aws, ready: Settings
) -> None:
    bulk = (
        b"\n".join(
            [
                b'{"index": {"_index": "web", "_id": "a1"}}',
                b'{"message": "one", "@timestamp": "2024-05-01T10:00:00Z"}',
                b'{"create": {}}',
                b'{"message": "two"}',
                b'{"delete": {"_index": "web", "_id": "x"}}',
                b'{"update": {"_id": "y"}}',
                b'{"doc": {"a": 1}}',
                b'{"index": {}}',
                b'"not an object"',
            ]
        )
        + b"\n"
    )
    async with serving(ready, create=False) as url, aiohttp.ClientSession() as s:
        async with s.get(url + "/") as r:
            root = await r.json()
            assert r.headers["X-Elastic-Product"] == "Elasticsearch"
        assert (
            root["version"]["number"] == ready.es_version
            and root["tagline"] == "You Know, for Search"
        )
        async with s.put(
            url + "/logs-app/_bulk",
            data=bulk,
            headers={
                "Content-Type": "application/vnd.elasticsearch+x-ndjson; compatible-with=9",
                "Accept": "application/vnd.elasticsearch+json; compatible-with=9",
            },
        ) as r:
            answer = await r.json(content_type=None)
            assert r.status == 200 and r.headers["X-Elastic-Product"] == "Elasticsearch"
            assert (
                r.headers["Content-Type"] == "application/vnd.elasticsearch+json;compatible-with=9"
            )
        assert answer["errors"] is True
        assert [(next(iter(i)), next(iter(i.values()))["status"]) for i in answer["items"]] == [
            ("index", 201),
            ("create", 201),
            ("delete", 400),
            ("update", 400),
            ("index", 400),
        ]
        assert answer["items"][0]["index"]["_id"] == "a1"
        status, err, headers = await post(s, url + "/_bulk", b"garbage\n{}\n")
        assert (
            status == 400
            and err["error"]["type"]
            and headers["X-Elastic-Product"] == "Elasticsearch"
        )
        async with s.get(url + "/_cat/nothing") as r:
            assert r.status == 404 and r.headers["X-Elastic-Product"] == "Elasticsearch"
    lines = {x["message"]: x for x in stream_lines(aws, ready.stream)}
    assert lines["one"]["_index"] == "web" and lines["one"]["_id"] == "a1"
    assert lines["two"]["_index"] == "logs-app" and "_id" not in lines["two"]


async def test_health_readiness_and_metrics(aws: Aws, ready: Settings) -> None:
    async with serving(ready, create=False) as url, aiohttp.ClientSession() as s:
        async with s.get(url + "/healthz") as r:
            assert r.status == 200
        async with s.get(url + "/readyz") as r:
            assert (r.status, await r.json()) == (200, {"ready": True})
        await post(s, url + "/ingest", ndjson("m", 3))
        async with s.get(url + "/metrics") as r:
            text = await r.text()
        assert "tideway_ingest_lines_accepted_total 3.0" in text
        assert "tideway_ingest_inflight_bytes 0.0" in text


async def test_readyz_is_false_when_kinesis_is_unreachable(aws: Aws, settings: Settings) -> None:
    missing = settings.model_copy(update={"stream": "no-such-stream"})
    async with serving(missing, create=False) as url, aiohttp.ClientSession() as s:
        answer: dict[str, object] = {}
        for _ in range(50):
            async with s.get(url + "/readyz") as r:
                answer = await r.json()
            if r.status == 503:
                break
            await asyncio.sleep(0.1)
        assert answer == {"ready": False, "reason": "kinesis unreachable"}


def test_packer_fills_records_just_under_one_payload_unit() -> None:
    packer = Packer(UNIT)
    sealed = []
    lines = ndjson_lines(20_000, seed=3)
    for i in range(0, len(lines), 100):
        sealed += packer.add(
            lines[i : i + 100], Header(), Ticket(), traceparent="", now=0.0, received_us=0
        )
    sealed += packer.due(1.0, 0)
    assert sum(r.lines for r in sealed) == len(lines)
    full = [len(r.data) + len(r.partition_key) for r in sealed[:-1]]
    assert max(full) <= UNIT
    assert sum(full) / len(full) > 0.85 * UNIT
    keys = sorted(int(r.explicit_hash_key) for r in sealed)
    quarters = Counter(k * 4 // 2**128 for k in keys)
    assert len(quarters) == 4 and min(quarters.values()) > len(sealed) / 8
    assert len(put_batches(sealed, max_entries=10)[0]) == 10
