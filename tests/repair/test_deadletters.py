"""The pure redrive planner: a dead-letter object's entries -> Parquet of what now maps and
the object's new body, deterministically."""

from __future__ import annotations

import base64
import dataclasses
import gzip
import io

import orjson
import pyarrow.parquet as pq
import pytest

from service.consume.dedupe import ShardDedupe
from service.decode import DecoderConfig, LineBatch, RecordMeta
from service.decode.types import DecodedRecord
from service.errors import DecodeError
from service.repair.deadletters import RedrivePlan, body_digest, parse_entries, plan_redrive
from service.sink.keys import key_in_range, object_prefix
from service.sink.plan import FlushObject, FlushPlan, Layout, plan_flush
from service.sink.rules import FieldMapping
from tests.repair.support import big_envelope

KEY = "dead-letter/dt=2026-12-01/logs-shardId-000000000000-7-9.ndjson.gz"


def entry(seq: int, data: bytes, reason: str, sub: int | None = None) -> dict[str, object]:
    fields: dict[str, object] = {
        "reason": reason,
        "kinesis_shard_id": "shardId-000000000000",
        "kinesis_sequence_number": str(seq),
    }
    if sub is not None:
        fields["kinesis_sub_sequence"] = sub
    fields["arrival_time"] = "2026-12-01T03:00:00.250000Z"
    fields["data"] = base64.b64encode(data).decode()
    return fields


def body(*entries: dict[str, object]) -> bytes:
    return gzip.compress(b"\n".join(orjson.dumps(e) for e in entries) + b"\n", mtime=0)


def plan(dead: bytes) -> RedrivePlan:
    entries = parse_entries(KEY, dead)
    return plan_redrive(body_digest(dead), entries, DecoderConfig(), Layout("logs"), FieldMapping())


def test_a_line_that_now_maps_lands_with_its_own_sub_sequence() -> None:
    line = b'{"message": "late", "service": "api", "severity_number": 9}'
    result = plan(body(entry(7, line, "unmappable: written by older code", sub=3)))
    assert (result.rows, result.still_dead, result.remaining) == (1, 0, None)
    (obj,) = result.objects
    table = pq.read_table(io.BytesIO(obj.body))
    assert table.column("kinesis_sub_sequence").to_pylist() == [3]
    assert table.column("kinesis_sequence_number").to_pylist() == ["7"]
    assert table.column("message").to_pylist() == ["late"]


def test_entries_that_still_fail_stay_with_todays_reason_and_the_rest_lands() -> None:
    good = b'{"message": "now fine"}\n{"message": "also"}'
    dead = body(
        entry(7, gzip.compress(good, mtime=0), "decompressed size over limit"),
        entry(9, bytes(range(128, 256)), "some reason of older code"),
    )
    result = plan(dead)
    assert (result.rows, result.still_dead) == (2, 1)
    assert result.remaining is not None
    (left,) = [orjson.loads(x) for x in gzip.decompress(result.remaining).splitlines()]
    assert left["reason"] == "record is neither a known format nor UTF-8 text"
    assert left["kinesis_sequence_number"] == "9"


def test_a_redrive_plan_is_deterministic_and_never_takes_a_consumer_key() -> None:
    dead = body(entry(7, b'{"message": "a"}', "decompressed size over limit"))
    first, second = plan(dead), plan(dead)
    assert [(o.key, o.body) for o in first.objects] == [(o.key, o.body) for o in second.objects]
    (obj,) = first.objects
    assert f"-redrive-{body_digest(dead)[:12]}-7-7.parquet" in obj.key
    consumer_prefix = object_prefix(obj.key.replace(f"-redrive-{body_digest(dead)[:12]}", ""))
    assert not key_in_range(obj.key, consumer_prefix, 0, 100)


def test_an_unreadable_dead_letter_object_is_named_with_its_line() -> None:
    with pytest.raises(DecodeError, match=rf"^dead-letter object {KEY} line 2 unreadable: "):
        plan(gzip.compress(orjson.dumps(entry(7, b"x", "r")) + b"\nnot json\n"))
    with pytest.raises(DecodeError, match=rf"^dead-letter object {KEY} is not gzip"):
        plan(b"plain bytes")
    odd = {**entry(7, b"{}", "r", sub=0), "batch": {"colour": "red"}}
    with pytest.raises(DecodeError, match=r"line 1 unreadable: .*unknown field 'colour'$"):
        plan(body(odd))


def test_a_redriven_line_lands_with_the_columns_it_would_have_had_the_first_time() -> None:
    """A line of a batch with a source, CloudWatch group and stream, default service,
    receive time and trace context: once dead-lettered by the writer and redriven, its row
    equals, column by column and in its partition, the row it has when it maps at once."""
    meta = RecordMeta("shardId-000000000000", 7, 1_796_094_000_250_000)
    batch = LineBatch(
        b"",
        3,
        source="otlp",
        service="checkout",
        log_group="/ecs/checkout",
        log_stream="task/1",
        observed_us=1_796_094_000_100_000,
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )
    line = b'{"message": "paid", "order": 17}'

    def flushed(middle: bytes) -> FlushPlan:
        payload = b"\n".join((b'{"message": "a"}', middle, b'{"message": "c"}'))
        record = DecodedRecord(meta, (dataclasses.replace(batch, payload=payload),))
        return plan_flush(meta.shard_id, [record], [], Layout("logs"), FieldMapping())

    live = rows_by_key(flushed(line).objects)
    dead_plan = flushed(b"[17]")  # written by code that could not map the line
    (dead_obj,) = [o for o in dead_plan.objects if o.key.startswith("dead-letter/")]
    (written,) = [orjson.loads(x) for x in gzip.decompress(dead_obj.body).splitlines()]
    assert written["kinesis_sub_sequence"] == 1
    written["data"] = base64.b64encode(line).decode()  # ... and that today's code maps
    ((key, row),) = rows_by_key(plan(body(written)).objects).items()
    assert key in live  # the same partition directory (service, hour)
    assert row == live[key]  # every column, lineage included
    assert (row["source"], row["log_group"], row["log_stream"]) == (
        "otlp",
        "/ecs/checkout",
        "task/1",
    )


def rows_by_key(objects: tuple[FlushObject, ...]) -> dict[str, dict[str, object]]:
    """Every Parquet row of ``objects`` by its partition directory (one row per key here)."""
    out = {}
    for obj in objects:
        if obj.key.endswith(".parquet"):
            for row in pq.read_table(io.BytesIO(obj.body)).to_pylist():
                out[f"{obj.key.rpartition('/')[0]}#{row['kinesis_sub_sequence']}"] = row
    return out


def test_a_second_copy_of_an_envelope_lands_nothing_as_the_consumer_drops_it() -> None:
    copy = big_envelope("resent", producer_seq=5)
    dead = body(entry(7, copy, "too big"), entry(9, copy, "too big"))
    state = ShardDedupe()
    result = plan_redrive(
        body_digest(dead),
        parse_entries(KEY, dead),
        DecoderConfig(),
        Layout("logs"),
        FieldMapping(),
        dedupe=state,
    )
    assert (result.rows, result.duplicates, result.remaining) == (40, 1, None)
    table = pq.read_table(io.BytesIO(result.objects[0].body))
    assert set(table.column("kinesis_sequence_number").to_pylist()) == {"7"}
    assert state.seen(bytes(range(16)), 5)
