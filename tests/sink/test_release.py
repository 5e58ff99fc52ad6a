"""A flush that takes over its records (``plan_flush(release=True)``, what the consumer does):
every record is left hollow, and the objects are those of a flush that kept them, byte for
byte, whatever the chunks; the gather over many-chunk columns is Arrow's ``take``."""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.decode.types import DecodedRecord, LineBatch, RecordMeta
from service.sink import build
from service.sink.gather import Gatherer
from service.sink.native import SCAN, name_groups, supports
from service.sink.plan import Layout, plan_flush
from service.sink.rules import FieldMapping
from tests.sink.test_writer import ARRIVAL, generated

native_only = pytest.mark.skipif(not supports(FieldMapping()), reason="the native path only")


def hostile(records: list[DecodedRecord]) -> list[DecodedRecord]:
    """``records`` with a line that is not an object and a record whose count is wrong."""
    first = records[0].batches[0]
    broken = dataclasses.replace(
        first, payload=first.payload + b"\nnot json", count=first.count + 1
    )
    miscounted = dataclasses.replace(records[1].batches[0], count=3)
    return [
        DecodedRecord(records[0].meta, (broken,)),
        DecodedRecord(records[1].meta, (miscounted,), raw=b"raw bytes as read"),
        *records[2:],
    ]


def objects(records: list[DecodedRecord], *, release: bool) -> list[tuple[str, bytes]]:
    plan = plan_flush("shardId-000", records, [], Layout("s"), FieldMapping(), release=release)
    return [(o.key, o.body) for o in plan.objects]


@native_only
@pytest.mark.parametrize("chunk", [1, 4096, 64 * 1024, 1 << 30])
def test_a_flush_that_takes_its_records_writes_the_same_objects_and_hollows_them(
    chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    kept = hostile(generated(3000, per_record=35))
    taken = list(kept)
    monkeypatch.setattr(build, "NATIVE_CHUNK_BYTES", chunk)
    assert objects(taken, release=True) == objects(kept, release=False)
    # Every record that mapped is hollow; the miscounted one keeps its bytes (dead letter).
    assert [r.meta for r in taken] == [r.meta for r in kept]
    assert [b.count for r in taken for b in r.batches] == [b.count for r in kept for b in r.batches]
    assert taken[1] is kept[1]
    assert all(not b.payload for r in taken[:1] + taken[2:] for b in r.batches)
    assert all(b.payload for r in kept for b in r.batches)


def test_on_either_path_release_writes_the_same_objects() -> None:
    """Native: the records are left hollow; Python (TIDEWAY_NO_EXTENSIONS=1, or a mapping
    the scanner cannot take): kept whole, as that path maps lines from them."""
    kept = hostile(generated(1000, per_record=35))
    taken = list(kept)
    assert objects(taken, release=True) == objects(kept, release=False)
    hollow = [not b.payload for r in taken for b in r.batches]
    assert any(hollow) is supports(FieldMapping())


def test_without_release_the_records_are_left_as_they_were() -> None:
    records = generated(700)
    before = list(records)
    plan_flush("shardId-000", records, [], Layout("s"), FieldMapping())
    assert all(a is b for a, b in zip(records, before, strict=True))


def test_a_tuple_of_records_cannot_be_taken_and_is_left_whole() -> None:
    records = tuple(generated(700))
    plan = plan_flush("shardId-000", records, [], Layout("s"), FieldMapping(), release=True)
    assert plan.rows == 700
    assert all(b.payload for r in records for b in r.batches)


def test_hollow_keeps_lineage_and_counts() -> None:
    batch = LineBatch(b'{"a":1}\n{"a":2}', 2, source="http", service="api", log_group="g")
    record = DecodedRecord(RecordMeta("shardId-000", 7, ARRIVAL), (batch,), raw=b"x")
    hollow = record.hollow()
    assert hollow.meta == record.meta
    assert hollow.batches == (dataclasses.replace(batch, payload=b""),)
    assert hollow.raw == b""


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 9), min_size=1, max_size=6),
    data=st.data(),
)
def test_the_gather_over_chunks_is_arrows_take(lengths: list[int], data: st.DataObject) -> None:
    total = sum(lengths)
    values = [None if i % 5 == 3 else f"v{i}" * (i % 4) for i in range(total)]
    numbers = list(range(total))
    batches, start = [], 0
    for n in lengths:
        columns = [
            pa.array(values[start : start + n], pa.string()),
            pa.array(numbers[start : start + n], pa.int64()),
        ]
        batches.append(pa.record_batch(columns, names=["s", "n"]))
        start += n
    table = pa.Table.from_batches(batches)
    rows = np.array(
        sorted(
            data.draw(st.sets(st.integers(0, max(total - 1, 0)), max_size=total)) if total else []
        ),
        dtype=np.int64,
    )
    got = Gatherer(table).take(rows)
    want = table.combine_chunks().take(rows)
    assert got.equals(want)
    assert all(column.num_chunks <= 1 for column in got.columns)


GROUPS = name_groups(FieldMapping())


@native_only
def test_the_scanner_lets_go_of_the_parts_it_mapped_whole() -> None:
    assert SCAN is not None
    left = b'{"message": "c", "n": 1e5}'  # an exponent: the Python path maps it
    parts: list[bytes | None] = [b'{"message": "a"}\n{"message": "b"}', left, b'{"message":"d"}']
    kept = list(parts)
    assert SCAN.map_lines(parts, 4, GROUPS, True) == SCAN.map_lines(kept, 4, GROUPS)
    assert parts == [None, left, None]
    assert kept[0] is not None


@native_only
def test_the_scanner_lets_go_past_its_trim_interval_and_only_with_a_list() -> None:
    """Over 16 MiB of parts: the drop under the GIL inside the scan runs, not only the last."""
    assert SCAN is not None
    line = b'{"message": "' + b"x" * 1000 + b'"}'
    parts: list[bytes | None] = [b"\n".join([line] * 1000) for _ in range(20)]
    mapped = SCAN.map_lines(parts, 20_000, GROUPS, True)[0]
    assert set(mapped) == {1}
    assert parts == [None] * 20
    with pytest.raises(TypeError, match="list"):
        SCAN.map_lines((line,), 1, GROUPS, True)
