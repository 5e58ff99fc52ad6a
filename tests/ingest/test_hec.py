"""Splunk HTTP Event Collector on ``tideway serve``: a real HEC sender from PyPI, the request
shapes of Vector, Fluent Bit and the Collector's splunk_hec exporter, HEC's answers."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import logging
import time

import aiohttp
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from splunk_hec_handler import SplunkHecHandler

from service.ingest.hec import HecError, parse_events
from service.settings import ApiKey, Settings
from tests.conftest import Aws, drain, read_table
from tests.ingest_support import post, serving, stream_lines

TOKEN = "00000000-1111-2222-3333-444444444444"


def _keyed(settings: Settings) -> Settings:
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    return settings.model_copy(update={"api_keys": (ApiKey(sha256=digest),)})


def _splunk(**headers: str) -> dict[str, str]:
    return {"Authorization": f"Splunk {TOKEN}", **headers}


def _ship_with_splunk_hec_handler(port: int, count: int) -> None:
    """splunk-hec-handler (PyPI), as an application configures it: one POST per record."""
    handler = SplunkHecHandler(
        "127.0.0.1",
        TOKEN,
        port=port,
        proto="http",
        ssl_verify=False,
        source="billing.py",
        sourcetype="_json",
        hostname="app-7",
    )
    logger = logging.getLogger("tests.hec.sender")
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        for i in range(count):
            logger.info({"message": f"charged-{i}", "amount": i, "fields": {"tenant": "t1"}})
    finally:
        logger.removeHandler(handler)


async def test_splunk_hec_handler_events_land_once_with_their_columns(
    aws: Aws, ready: Settings
) -> None:
    settings = _keyed(ready)
    async with serving(settings, create=False) as url:
        port = int(url.rsplit(":", 1)[1])
        await asyncio.to_thread(_ship_with_splunk_hec_handler, port, 25)
    await drain(settings)
    rows = read_table(aws, settings).to_pylist()
    assert sorted(r["message"] for r in rows) == sorted(f"charged-{i}" for i in range(25))
    assert {r["host"] for r in rows} == {"app-7"}
    assert all(r["timestamp"] is not None for r in rows)
    attributes = [orjson.loads(r["attributes"]) for r in rows]
    assert {(a["source"], a["sourcetype"], a["tenant"]) for a in attributes} == {
        ("billing.py", "_json", "t1")
    }


# Vector's splunk_hec_logs sink (encoding json, compression gzip) and the OpenTelemetry
# Collector's splunk_hec exporter send concatenated event objects, no separator; Fluent Bit's
# splunk output separates them with newlines. Shapes from their docs and source.
# Event times within the consumer's window (7 days back), whole seconds plus a fraction.
T = int(time.time()) - 3600
VECTOR_BODY = (
    b'{"event":{"message":"GET /a 200","status":200},"fields":{"env":"prod"},'
    b'"time":%d.125,"host":"web-1","source":"/var/log/nginx/access.log",'
    b'"sourcetype":"nginx","index":"main"}'
    b'{"event":"plain text event","time":%d.5,"host":"web-1"}'
) % (T, T + 1)
FLUENT_BIT_BODY = (
    b'{"time":%d.25,"event":{"log":"fluent line one"}}\n'
    b'{"time":"%d.75","event":{"log":"fluent line two"}}\n'
) % (T + 2, T + 3)


async def test_concatenated_and_gzipped_events_land_once_and_raw_lines_carry_query_metadata(
    aws: Aws, ready: Settings
) -> None:
    settings = _keyed(ready)
    async with serving(settings, create=False) as url, aiohttp.ClientSession() as s:
        status, answer, _ = await post(
            s,
            url + "/services/collector/event",
            gzip.compress(VECTOR_BODY),
            "application/json",
            **_splunk(**{"Content-Encoding": "gzip"}),
        )
        assert (status, answer) == (200, {"text": "Success", "code": 0})
        status, answer, _ = await post(
            s, url + "/services/collector", FLUENT_BIT_BODY, "application/json", **_splunk()
        )
        assert (status, answer) == (200, {"text": "Success", "code": 0})
        status, answer, _ = await post(
            s,
            url + "/services/collector/raw?channel=c0ffee&sourcetype=syslog&host=db-2",
            b"raw one\r\n\nraw two\n",
            "text/plain",
            **_splunk(),
        )
        assert (status, answer["text"], answer["code"]) == (200, "Success", 0)
        assert isinstance(answer["ackId"], int)
    await drain(settings)
    rows = {r["message"]: r for r in read_table(aws, settings).to_pylist()}
    assert sorted(rows) == [
        "GET /a 200",
        "fluent line one",  # Fluent Bit's record key "log" is read as the message
        "fluent line two",
        "plain text event",
        "raw one",
        "raw two",
    ]
    assert rows["fluent line two"]["timestamp"].timestamp() == T + 3.75
    assert rows["GET /a 200"]["host"] == "web-1"
    assert rows["GET /a 200"]["timestamp"].timestamp() == T + 0.125
    attributes = orjson.loads(rows["GET /a 200"]["attributes"])
    assert attributes | {"status": 200, "env": "prod", "index": "main", "sourcetype": "nginx"} == (
        attributes
    )
    assert rows["raw two"]["host"] == "db-2"
    assert orjson.loads(rows["raw two"]["attributes"])["sourcetype"] == "syslog"


async def test_hec_answers_in_its_own_dialect_and_stores_nothing_of_a_refused_request(
    aws: Aws, ready: Settings
) -> None:
    settings = _keyed(ready)
    event = url_event = "/services/collector/event"
    async with serving(settings, create=False) as url, aiohttp.ClientSession() as s:
        url_event = url + event
        status, answer, _ = await post(s, url_event, b'{"event":"x"}', "application/json")
        assert (status, answer) == (401, {"text": "Token is required", "code": 2})
        status, answer, _ = await post(
            s, url_event, b'{"event":"x"}', "application/json", Authorization="Splunk wrong"
        )
        assert (status, answer) == (403, {"text": "Invalid token", "code": 4})
        status, answer, _ = await post(s, url_event, b"  \n", "application/json", **_splunk())
        assert (status, answer) == (400, {"text": "No data", "code": 5})
        body = b'{"event":"kept?"}{"event":"also kept?"}{"event": oops}{"event":"after"}'
        status, answer, _ = await post(s, url_event, body, "application/json", **_splunk())
        assert (status, answer) == (
            400,
            {"text": "Invalid data format", "code": 6, "invalid-event-number": 2},
        )
        status, answer, _ = await post(
            s, url_event, b'{"event":"a"}{"time":1}', "application/json", **_splunk()
        )
        assert (status, answer) == (
            400,
            {"text": "Event field is required", "code": 12, "invalid-event-number": 1},
        )
        status, answer, _ = await post(
            s, url_event, b'{"event":""}', "application/json", **_splunk()
        )
        assert (status, answer["code"], answer["invalid-event-number"]) == (400, 13, 0)
        # A Bearer key works too: the same keys as /ingest.
        status, answer, _ = await post(
            s, url_event, b'{"event":"bearer"}', "application/json", Authorization=f"Bearer {TOKEN}"
        )
        assert (status, answer) == (200, {"text": "Success", "code": 0})
        async with s.get(url + "/services/collector/health") as r:
            assert (r.status, await r.json()) == (200, {"text": "HEC is healthy", "code": 17})
        status, answer, _ = await post(
            s,
            url + "/services/collector/ack?channel=c0ffee",
            b'{"acks":[0,1,2]}',
            "application/json",
            **_splunk(),
        )
        assert (status, answer) == (200, {"acks": {"0": True, "1": True, "2": True}})
    assert [line["message"] for line in stream_lines(aws, settings.stream)] == ["bearer"]


async def test_hec_refuses_what_is_over_a_limit_or_not_utf8_and_stores_none_of_it(
    aws: Aws, ready: Settings
) -> None:
    settings = ready.model_copy(update={"max_body_bytes": 1500, "max_line_bytes": 1024})
    async with serving(settings, create=False) as url, aiohttp.ClientSession() as s:
        body = b'{"event":"%s"}' % (b"x" * 2000)
        status, answer, _ = await post(s, url + "/services/collector/event", body)
        assert status == 413 and answer["code"] == 6 and "limit" in answer["text"]
        raw = url + "/services/collector/raw"
        status, answer, _ = await post(s, raw, b"fine\n" + b"y" * 1100 + b"\n")
        assert status == 413 and answer["code"] == 6 and "limit" in answer["text"]
        status, answer, _ = await post(s, raw, b"fine\nnot \xff utf-8\n")
        assert (status, answer["code"], answer["invalid-event-number"]) == (400, 6, 1)
        assert "UTF-8" in answer["text"]
    assert stream_lines(aws, settings.stream) == []


async def test_hec_draws_on_the_byte_budget_like_ingest(ready: Settings) -> None:
    settings = ready.model_copy(update={"max_inflight_bytes": 4096})
    async with serving(settings, create=False) as url, aiohttp.ClientSession() as s:
        body = b"".join(b'{"event":"line %d"}' % i for i in range(400))  # ~7 KB, charged twice
        status, answer, _ = await post(s, url + "/services/collector/event", body)
        # Larger than the whole budget: it could never fit, so 413 rather than "retry".
        assert (status, answer["code"]) == (413, 6)
        assert "4096 byte limit" in answer["text"]


_messages = st.lists(st.text(alphabet=st.sampled_from('ab}{" \\\n\u00e9'), min_size=1), min_size=1)


@given(messages=_messages, gap=st.sampled_from(["", "\n", " \r\n ", "\t"]))
def test_concatenated_events_are_read_back_whatever_their_strings_hold(
    messages: list[str], gap: str
) -> None:
    body = gap.join(orjson.dumps({"event": m, "host": "h"}).decode() for m in messages).encode()
    lines = parse_events(body, 1 << 20, 1 << 20, {}).lines
    assert [orjson.loads(line) for line in lines] == [{"message": m, "host": "h"} for m in messages]


@given(messages=_messages, bad=st.sampled_from(["{oops}", "[1]", '{"event": "x"', '"str"']))
def test_the_first_malformed_event_is_named_by_its_number(messages: list[str], bad: str) -> None:
    body = "".join(orjson.dumps({"event": m}).decode() for m in messages) + bad
    with pytest.raises(HecError) as refused:
        parse_events(body.encode(), 1 << 20, 1 << 20, {})
    assert (refused.value.code, refused.value.event_number) == (6, len(messages))
