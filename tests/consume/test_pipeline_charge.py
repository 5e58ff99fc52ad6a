"""The memory budget charges what pipeline routing holds: a flush under pipelines is charged
more than the same flush without, in proportion to its bytes and lines, and the dearer the
document's steps the more; a consumer under pipelines flushes earlier for the same share."""

from __future__ import annotations

import asyncio
import dataclasses

from service.aws import AwsClients
from service.consume.buffer import LINE_CHARGE, ShardBuffer
from service.consume.leases import LeaseTable
from service.consume.shard import Outcome, ShardConsumer
from service.decode import DecoderConfig, RecordMeta
from service.pipeline.config import load_pipelines
from service.pipeline.cost import routing_cost
from service.settings import Settings
from tests.conftest import Aws, object_keys
from tests.consume.support import context, first_shard, owned, put_line_records

MATCH_ONLY = '[[pipeline]]\nname = "a"\nmatch = \'service == "api"\'\ntable = "a"\n'
JSON = '[[pipeline]]\nname = "a"\nparse = "json"\nredact = ["email"]\ntable = "a"\n'


def charged(records: int, routing: tuple[int, int]) -> tuple[int, int, int]:
    """(charge, decoded bytes, lines) of a buffer of ``records`` 10-line NDJSON records."""
    buffer = ShardBuffer(routing=routing)
    for r in range(records):
        data = b"\n".join(
            b'{"message":"GET /item/%03d-%d","service":"api"}' % (r, i) for i in range(10)
        )
        buffer.add(data, RecordMeta("shardId-000", r + 1, 0), DecoderConfig(), 0.0)
    return (
        buffer.charge,
        sum(len(b.payload) for rec in buffer.records for b in rec.batches),
        buffer.lines,
    )


def test_without_pipelines_nothing_more_is_charged() -> None:
    assert routing_cost(None) == (0, 0)


def test_routing_is_charged_per_decoded_byte_and_per_line_beside_the_flush() -> None:
    per_byte, per_line = routing_cost(load_pipelines(MATCH_ONLY))
    plain, payload, lines = charged(20, (0, 0))
    routed, _, _ = charged(20, (per_byte, per_line))
    assert routed - plain == payload * per_byte + lines * per_line
    assert per_byte >= 1 and per_line >= LINE_CHARGE // 2
    # In proportion: twice the records, twice the extra.
    plain2, _, _ = charged(40, (0, 0))
    routed2, _, _ = charged(40, (per_byte, per_line))
    assert routed2 - plain2 == 2 * (routed - plain)


def test_a_parser_that_decodes_each_line_into_objects_is_charged_more() -> None:
    match_only = routing_cost(load_pipelines(MATCH_ONLY))
    json = routing_cost(load_pipelines(JSON))
    assert json[0] > match_only[0] and json[1] > match_only[1]
    assert charged(20, json)[0] > charged(20, match_only)[0]


def _max_rows_per_object(aws: Aws, settings: Settings, prefix: str) -> int:
    ranges = [
        [int(n) for n in key.rsplit(".", 1)[0].split("-")[-2:]]
        for key in object_keys(aws, settings.bucket, prefix)
    ]
    return max(hi - lo + 1 for lo, hi in ranges) * 200  # records of 200 lines each


async def test_a_consumer_under_pipelines_flushes_earlier_for_the_same_share(
    aws: Aws, clients: AwsClients, ready: Settings, table: LeaseTable
) -> None:
    shard = await first_shard(clients, ready)
    lines = put_line_records(aws, ready, shard, records=40, lines=200)
    lease = await owned(table, shard, "w")
    ctx = context(clients, ready, "w")
    routed = dataclasses.replace(
        ctx, layout=dataclasses.replace(ctx.layout, pipelines=load_pipelines(JSON))
    )
    share = 512 * 1024
    consumer = ShardConsumer(routed, lease, lease.epoch, closed=False, budget_share=lambda: share)
    assert await asyncio.wait_for(consumer.run(asyncio.Event(), drain=True), 60) is Outcome.AT_TIP
    per_byte, per_line = routing_cost(load_pipelines(JSON))
    # Lines of ~12 bytes: each row is charged its routing beside the flush's own charge, so a
    # flush holds at most the share's worth of rows under that charge (plus the last record).
    row = 12 * (4 + per_byte) + LINE_CHARGE + per_line
    biggest = _max_rows_per_object(aws, ready, "a/")
    assert biggest <= share // row + 200
    assert biggest < share // (12 * 4 + LINE_CHARGE)  # what the charge without routing allows
    assert lines == 8000
