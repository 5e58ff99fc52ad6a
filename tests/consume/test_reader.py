"""The shard reader against the AWS backend: pages, empty pages, renewed iterators."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError

from service.aws import AwsClients
from service.consume.reader import Position, ShardReader, list_shards
from service.consume.sequence import sequence_from_wire
from service.settings import Settings
from tests.conftest import Aws


async def first_shard(clients: AwsClients, settings: Settings) -> str:
    return sorted(await list_shards(clients.kinesis, settings.stream))[0]


async def read_all(reader: ShardReader, pages: int) -> list[int]:
    seqs: list[int] = []
    for _ in range(pages):
        batch = await reader.read()
        seqs.extend(sequence_from_wire(r["SequenceNumber"]) for r in batch.records)
    return seqs


async def test_pages_follow_each_other_and_an_empty_page_at_the_tip_is_no_error(
    put_lines: Callable[..., list[int]], aws: Aws, clients: AwsClients, ready: Settings
) -> None:
    shard = await first_shard(clients, ready)
    sent = put_lines(shard, 7)
    reader = ShardReader(clients.kinesis, ready.stream, shard, Position("TRIM_HORIZON"), limit=3)
    assert await read_all(reader, 3) == sent
    empty = await reader.read()
    assert empty.records == [] and not empty.shard_end
    assert reader.last_sequence == sent[-1]
    more = put_lines(shard, 2, tag="later")
    assert await read_all(reader, 1) == more


async def test_after_sequence_number_starts_past_the_checkpoint(
    put_lines: Callable[..., list[int]], aws: Aws, clients: AwsClients, ready: Settings
) -> None:
    shard = await first_shard(clients, ready)
    sent = put_lines(shard, 5)
    reader = ShardReader(
        clients.kinesis, ready.stream, shard, Position("AFTER_SEQUENCE_NUMBER", sent[1])
    )
    assert await read_all(reader, 1) == sent[2:]


class ExpiresOnce:
    """The backend's Kinesis client, but the second GetRecords answers ExpiredIterator once
    (moto never expires an iterator; Kinesis does after five minutes)."""

    def __init__(self, kinesis: Any) -> None:
        self._kinesis = kinesis
        self.calls = 0
        self.iterators = 0

    async def get_shard_iterator(self, **kwargs: Any) -> Any:
        self.iterators += 1
        return await self._kinesis.get_shard_iterator(**kwargs)

    async def get_records(self, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls == 2:
            error = {"Error": {"Code": "ExpiredIteratorException", "Message": "expired"}}
            raise ClientError(error, "GetRecords")  # type: ignore[arg-type]
        return await self._kinesis.get_records(**kwargs)


async def test_an_expired_iterator_is_renewed_after_the_last_record_read(
    put_lines: Callable[..., list[int]], aws: Aws, clients: AwsClients, ready: Settings
) -> None:
    shard = await first_shard(clients, ready)
    sent = put_lines(shard, 6)
    kinesis = ExpiresOnce(clients.kinesis)
    reader = ShardReader(
        kinesis, ready.stream, shard, Position("TRIM_HORIZON"), limit=4, max_backoff=0.01
    )
    assert await read_all(reader, 2) == sent  # nothing skipped, nothing read twice
    assert kinesis.iterators == 2 and reader.errors == {"ExpiredIteratorException": 1}


async def test_a_refused_call_surfaces(clients: AwsClients, ready: Settings) -> None:
    reader = ShardReader(clients.kinesis, ready.stream, "shardId-999999999999", Position("LATEST"))
    with pytest.raises(ClientError):
        await reader.read()
