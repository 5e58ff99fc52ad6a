"""Edge cases found in review: hostile headers, repetitive logs, receive times."""

from __future__ import annotations

import base64
import os

import aiohttp

from service import envelope
from service.decode import DecoderConfig, decode_record
from service.ingest.lineblock import LineBlock
from service.ingest.lines import parse_ndjson
from service.ingest.packer import Header, Packer, Ticket
from tests.conftest import Server


async def test_an_oversized_traceparent_is_ignored_and_the_server_keeps_serving(
    server: Server,
) -> None:
    body = b'{"message": "x"}\n'
    headers = {"Content-Type": "application/x-ndjson"}
    async with aiohttp.ClientSession() as s:
        bad = {**headers, "traceparent": "00-" + "f" * 300}
        async with s.post(server.url + "/ingest", data=body, headers=bad) as resp:
            assert resp.status == 200
        async with s.post(server.url + "/ingest", data=body, headers=headers) as resp:
            assert resp.status == 200 and (await resp.json())["accepted"] == 1


def test_repetitive_lines_never_make_an_envelope_the_consumer_refuses() -> None:
    packer = Packer(25_000)
    line = b'{"message": "GET /health 200", "service": "lb", "level": "info"}'
    sealed = []
    for i in range(200):
        sealed += packer.add(
            [line] * 5000, Header(), Ticket(), traceparent="", now=float(i), received_us=1
        )
    sealed += packer.due(1e9, 0)
    assert packer.ratio <= 50
    total = 0
    for rec in sealed:
        decoded = decode_record(rec.data, DecoderConfig())  # raises on an over-limit envelope
        total += decoded.line_count
    assert total == 200 * 5000


def test_a_wrong_learnt_ratio_moves_the_last_lines_to_the_next_record() -> None:
    """Compressible bodies teach the packer a high ratio; then incompressible lines overshoot
    the target and are cut at a line inside a whole-body block: every record still fits one
    payload unit and every line arrives once, in order."""
    packer = Packer(25_000)
    sealed = []
    easy = b'{"message": "GET /health 200", "service": "lb"}'
    for i in range(20):
        sealed += packer.add(
            parse_ndjson(b"\n".join([easy] * 2000), 1 << 20).lines,
            Header(),
            Ticket(),
            traceparent="",
            now=float(i),
            received_us=1,
        )
    noise = [
        b'{"n": %d, "blob": "%s"}' % (i, base64.b64encode(os.urandom(300))) for i in range(2000)
    ]
    block = parse_ndjson(b"\n".join(noise), 1 << 20).lines
    assert isinstance(block, LineBlock)
    sealed += packer.add(block, Header(), Ticket(), traceparent="", now=99.0, received_us=1)
    while packer.oldest() is not None:  # each seal may leave the lines it moved open
        sealed += packer.due(1e9, 0)
    assert packer.recompressions > 0
    assert all(len(r.data) + len(r.partition_key) <= 25_000 for r in sealed)
    lines = [
        line
        for r in sealed
        for line in decode_record(r.data, DecoderConfig()).batches[0].payload.split(b"\n")
    ]
    assert lines == [easy] * 40_000 + noise


def test_a_record_sealed_by_linger_carries_the_wall_clock_receive_time() -> None:
    packer = Packer(25_000)
    wall_us = 1_795_624_244_473_914
    packer.add([b'{"m": 1}'], Header(), Ticket(), traceparent="", now=12.5, received_us=wall_us)
    (rec,) = packer.due(99.0, 0.005)  # ``now`` here is the event loop's monotonic clock
    assert envelope.decode(rec.data).received_us == wall_us


async def test_elasticsearch_agents_setup_calls_are_answered(server: Server) -> None:
    """Filebeat, Logstash and Vector probe these before their first bulk request."""
    async with aiohttp.ClientSession() as s:
        for method, path in (
            ("GET", "/_index_template/filebeat-8.17.0"),
            ("HEAD", "/_index_template/filebeat-8.17.0"),
            ("PUT", "/_index_template/logstash"),
            ("GET", "/_ilm/policy/filebeat"),
            ("PUT", "/_ilm/policy/filebeat"),
            ("GET", "/_cluster/health"),
            ("GET", "/_xpack"),
        ):
            async with s.request(method, server.url + path, json={}) as resp:
                assert resp.status == 200, (method, path)
                assert resp.headers["X-Elastic-Product"] == "Elasticsearch"
        for path in ("/healthz", "/no/such/route"):
            async with s.get(server.url + path) as resp:
                assert resp.headers["X-Elastic-Product"] == "Elasticsearch"
