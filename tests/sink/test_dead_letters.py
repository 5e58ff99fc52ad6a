"""A line that cannot be mapped is dead-lettered by itself; its record's other lines land.

An envelope record is shared by concurrent requests (group commit), so one hostile line
must never cost another request's lines (issue 15, tenant isolation)."""

from __future__ import annotations

import base64
import gzip

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from service.decode.types import DecodedRecord, LineBatch, RecordMeta
from service.sink.build import MappingPath, build_table
from service.sink.plan import DeadLetter, FlushObject, Layout, plan_flush
from service.sink.rules import FieldMapping
from tests.builders import ARRIVAL, assert_same_as_reference

# orjson refuses this number (infinity); the scanner once vouched for it.
POISON = b'{"timestamp":1' + b"0" * 210 + b'e99,"message":"hostile"}'


def envelope_of_requests(seq: int) -> tuple[DecodedRecord, list[bytes]]:
    """One envelope record packing 4 honest 500-line requests and 4 one-line hostile ones,
    interleaved as group commit packs concurrent requests."""
    lines: list[bytes] = []
    for request in range(4):
        lines += [
            orjson.dumps({"message": f"request {request} line {i}", "level": "info"})
            for i in range(500)
        ]
        lines.append(POISON)
    batch = LineBatch(b"\n".join(lines), len(lines), source="http", service="api")
    record = DecodedRecord(RecordMeta("shardId-000", seq, ARRIVAL), (batch,), raw=b"envelope")
    return record, lines


def dead_entries(objects: tuple[FlushObject, ...]) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for obj in objects:
        if "dead-letter/" in obj.key:
            out += [orjson.loads(x) for x in gzip.decompress(obj.body).splitlines()]
    return out


def test_hostile_one_line_requests_cost_honest_requests_no_line() -> None:
    record, lines = envelope_of_requests(seq=42)
    plan = plan_flush("shardId-000", [record], [], Layout("s"), FieldMapping())
    assert plan.rows == 2000
    assert plan.dead_letters == 4
    dead = dead_entries(plan.objects)
    poison_at = [i for i, line in enumerate(lines) if line == POISON]
    assert [d["kinesis_sub_sequence"] for d in dead] == poison_at
    assert {base64.b64decode(str(d["data"])) for d in dead} == {POISON}
    assert all(str(d["reason"]).startswith("unmappable: not JSON: ") for d in dead)
    assert all(d["kinesis_sequence_number"] == "42" for d in dead)


def test_good_lines_keep_their_position_and_replays_are_byte_identical() -> None:
    record, lines = envelope_of_requests(seq=7)
    first = plan_flush("shardId-000", [record], [], Layout("s"), FieldMapping())
    again = plan_flush("shardId-000", [record], [], Layout("s"), FieldMapping())
    assert [(o.key, o.body) for o in first.objects] == [(o.key, o.body) for o in again.objects]
    subs = sorted(
        sub
        for o in first.objects
        if o.key.endswith(".parquet")
        for sub in pq.read_table(pa.BufferReader(o.body)).column("kinesis_sub_sequence").to_pylist()
    )
    assert subs == [i for i, line in enumerate(lines) if line != POISON]


def test_a_record_that_fails_to_decode_keeps_its_whole_record_entry() -> None:
    meta = RecordMeta("shardId-000", 3, ARRIVAL)
    plan = plan_flush(
        "shardId-000",
        [],
        [DeadLetter(meta, b"\x00garbage", "kpl md5 mismatch")],
        Layout("s"),
        FieldMapping(),
    )
    (entry,) = dead_entries(plan.objects)
    assert list(entry) == [
        "reason",
        "kinesis_shard_id",
        "kinesis_sequence_number",
        "arrival_time",
        "data",
    ]
    assert base64.b64decode(str(entry["data"])) == b"\x00garbage"


def test_a_line_orjson_reads_but_cannot_write_back_is_dead_lettered_alone() -> None:
    """orjson reads objects nested up to 1024 deep but writes only 254: such a line once
    failed every flush of its shard. Every path reports it alone, the same way."""
    deep = b'{"a":' + b"[" * 300 + b"]" * 300 + b"}"
    deep_message = b'{"message":' + b"[" * 300 + b"]" * 300 + b"}"
    lines = [b'{"message":"before"}', deep, deep_message, b'{"message":"after"}']
    record = DecodedRecord(
        RecordMeta("shardId-000", 5, ARRIVAL), (LineBatch(b"\n".join(lines), 4, service="x"),)
    )
    table = assert_same_as_reference([record])
    assert table.column("message").to_pylist() == ["before", "after"]
    for path in MappingPath:
        _, bad = build_table([record], FieldMapping(), path)
        assert [(u.line, u.data) for u in bad] == [(1, deep), (2, deep_message)]
        assert {u.reason for u in bad} == {"nested too deeply to write back as JSON"}
