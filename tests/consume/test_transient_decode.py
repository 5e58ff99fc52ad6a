"""Issue 14 item 3: a transient failure while decoding (MemoryError) must not turn a record
into a dead letter; the shard fails, backs off and reads the record again."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from service.aws import AwsClients
from service.consume.leases import LeaseTable
from service.consume.shard import ShardConsumer
from service.decode import DecoderConfig, detect
from service.errors import DecodeError
from service.settings import Settings
from tests.conftest import Aws, object_keys, read_table
from tests.consume.support import context, first_shard, owned


def out_of_memory_for(monkeypatch: pytest.MonkeyPatch, calls: int) -> None:
    """The allocator fails the decoder's first ``calls`` records (a passing memory spike)."""
    real = detect._dispatch
    left = [calls]

    def dispatch(data: bytes, config: DecoderConfig, *, nested: bool) -> Any:
        if left[0] > 0:
            left[0] -= 1
            raise MemoryError
        return real(data, config, nested=nested)

    monkeypatch.setattr(detect, "_dispatch", dispatch)


def test_a_memory_error_while_decoding_is_raised_not_a_decode_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out_of_memory_for(monkeypatch, 1)
    with pytest.raises(MemoryError):
        detect.decode_record(b'{"message": "m"}', DecoderConfig())
    assert detect.decode_record(b'{"message": "m"}', DecoderConfig()).line_count == 1


def test_a_decoder_bug_is_still_a_dead_letter_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(data: bytes, config: DecoderConfig, *, nested: bool) -> Any:
        raise IndexError

    monkeypatch.setattr(detect, "_dispatch", broken)
    with pytest.raises(DecodeError, match="decoder failed: IndexError"):
        detect.decode_record(b"{}", DecoderConfig())


async def test_a_shard_retries_a_record_that_hit_a_memory_error_and_lands_it(
    put_lines: Callable[..., list[int]],
    *,
    aws: Aws,
    clients: AwsClients,
    ready: Settings,
    table: LeaseTable,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    shard = await first_shard(clients, ready)
    seqs = put_lines(shard, 8)
    lease = await owned(table, shard, "w")
    out_of_memory_for(monkeypatch, 1)

    def consumer() -> ShardConsumer:
        return ShardConsumer(
            context(clients, ready, "w"),
            lease,
            lease.epoch,
            closed=False,
            budget_share=lambda: ready.memory_budget_bytes,
        )

    with pytest.raises(MemoryError):  # the worker backs this shard off (worker.py)
        await asyncio.wait_for(consumer().run(asyncio.Event(), drain=True), 30)
    assert object_keys(aws, ready.bucket) == []
    assert (await table.scan())[0][shard].checkpoint is None
    await asyncio.wait_for(consumer().run(asyncio.Event(), drain=True), 30)
    assert object_keys(aws, ready.bucket, f"{ready.prefix}dead-letter/") == []
    landed = read_table(aws, ready).column("kinesis_sequence_number").to_pylist()
    assert sorted(int(s) for s in landed) == seqs
