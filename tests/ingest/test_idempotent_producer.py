"""The idempotent producer: every envelope is named (producer id, sequence) when sealed, and
every copy of it that reaches Kinesis (a retry after a lost answer, a client's re-send with
the same Idempotency-Key) has the same name on the same shard."""

from __future__ import annotations

import asyncio
import os
from collections import Counter, defaultdict
from collections.abc import Iterator

import aiohttp
import pytest

from service import envelope
from service.envelope import ContentType
from service.ingest.packer import Header, Packer, Ticket, keyed_producer_id, pack_keyed
from service.settings import Settings
from tests.conftest import Aws
from tests.faultproxy import FaultProxy, Rule, target_is
from tests.ingest_support import ndjson, post, serving, stream_records

Identity = tuple[bytes, int]


def _identities(aws: Aws, stream: str) -> dict[Identity, list[tuple[str, bytes]]]:
    """Every envelope in the stream by its (producer id, sequence): (shard, bytes) per copy."""
    found: dict[Identity, list[tuple[str, bytes]]] = defaultdict(list)
    for shard, records in stream_records(aws, stream).items():
        for data in records:
            env = envelope.decode(data)
            found[env.producer_id, env.producer_seq].append((shard, data))
    return found


def test_the_packer_names_envelopes_by_producer_and_seal_order() -> None:
    packer = Packer(2048, producer_id=b"P" * 16)
    lines = [b'{"message":"x%d","pad":"%s"}' % (i, b"y" * (i % 97)) for i in range(600)]
    sealed = packer.add(lines, Header(), Ticket(), traceparent="", now=0.0, received_us=5)
    sealed += packer.due(1.0, 0, wall_us=9)
    decoded = [envelope.decode(r.data) for r in sealed]
    assert [d.producer_seq for d in decoded] == list(range(len(sealed)))
    assert {d.producer_id for d in decoded} == {b"P" * 16}
    assert decoded[-1].created_us == 9
    assert sum(d.line_count for d in decoded) == 600
    assert len({r.partition_key for r in sealed}) == len(sealed)


def test_a_keyed_request_packs_the_same_envelopes_whatever_was_learnt_before() -> None:
    lines = [b'{"message":"m%d","n":%d}' % (i, i) for i in range(3000)]
    pid = keyed_producer_id("digest-of-key", "req-1")
    first = pack_keyed(
        lines, Header(), Ticket(), producer_id=pid, target_bytes=4096, traceparent="", received_us=1
    )
    again = pack_keyed(
        lines, Header(), Ticket(), producer_id=pid, target_bytes=4096, traceparent="", received_us=2
    )
    assert len(first) > 1
    assert [(r.explicit_hash_key, r.lines) for r in first] == [
        (r.explicit_hash_key, r.lines) for r in again
    ]
    assert [envelope.decode(r.data).producer_seq for r in first] == list(range(len(first)))
    assert [envelope.decode(r.data).payload for r in first] == [
        envelope.decode(r.data).payload for r in again
    ]
    assert keyed_producer_id("another key", "req-1") != pid


@pytest.fixture
def proxy(aws: Aws) -> Iterator[FaultProxy]:
    with FaultProxy(aws.endpoint, seed=7) as p:
        os.environ["AWS_ENDPOINT_URL"] = p.url
        yield p


async def test_a_put_whose_answer_is_lost_is_resent_as_the_same_envelope_on_the_same_shard(
    aws: Aws, ready: Settings, proxy: FaultProxy
) -> None:
    rule = proxy.add(Rule(target_is("PutRecords"), "lost_answer", probability=0.5, times=6))
    small = ready.model_copy(update={"record_target_bytes": 2048})
    async with serving(small, create=False) as url, aiohttp.ClientSession() as s:
        results = await asyncio.gather(
            *(post(s, url + "/ingest", ndjson(f"r{r}", 40)) for r in range(8))
        )
    assert [status for status, _, _ in results] == [200] * 8
    assert rule.hits > 0
    found = _identities(aws, ready.stream)
    copies = Counter(len(v) for v in found.values())
    assert max(copies) > 1, "a lost answer must have caused a re-send"
    for name, landed in found.items():
        assert len({shard for shard, _ in landed}) == 1, name
        assert len({data for _, data in landed}) == 1, name
    assert len({pid for pid, _ in found}) == 1  # one serve process, one producer id


async def test_a_request_resent_with_its_idempotency_key_has_the_same_envelope_identities(
    aws: Aws, ready: Settings
) -> None:
    body = ndjson("keyed", 500, pad="z" * 200)
    small = ready.model_copy(update={"record_target_bytes": 4096})
    async with serving(small) as url, aiohttp.ClientSession() as s:
        first = await post(s, url + "/ingest", body, **{"Idempotency-Key": "batch-0042"})
        assert first[0] == 200 and first[1]["accepted"] == 500
        after_first = _identities(aws, ready.stream)
        second = await post(s, url + "/ingest", body, **{"Idempotency-Key": "batch-0042"})
        assert second[0] == 200
        other = await post(s, url + "/ingest", body, **{"Idempotency-Key": "batch-0043"})
        assert other[0] == 200
    found = _identities(aws, ready.stream)
    keyed = {name for name in found if name in after_first}
    assert len(after_first) > 1
    assert {seq for _, seq in after_first} == set(range(len(after_first)))
    for name in after_first:
        assert len(found[name]) == 2  # the re-send: same name, same shard
        assert len({shard for shard, _ in found[name]}) == 1
    assert len(found) == 2 * len(keyed)  # the other key: as many envelopes, other names


async def test_an_unreadable_idempotency_key_is_refused_400(ready: Settings) -> None:
    async with serving(ready, create=False) as url, aiohttp.ClientSession() as s:
        status, answer, _ = await post(
            s, url + "/ingest", ndjson("k", 2), **{"Idempotency-Key": "x" * 300}
        )
    assert status == 400
    assert "Idempotency-Key" in answer["error"]


def test_content_type_is_kept_in_keyed_envelopes() -> None:
    sealed = pack_keyed(
        [b'{"a":1}'],
        Header(ContentType.TEXT, "http", "svc"),
        Ticket(),
        producer_id=b"k" * 16,
        target_bytes=25_000,
        traceparent="",
        received_us=3,
    )
    env = envelope.decode(sealed[0].data)
    assert (env.content_type, env.source, env.service, env.producer_seq) == (
        ContentType.TEXT,
        "http",
        "svc",
        0,
    )
