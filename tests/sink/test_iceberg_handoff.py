"""The pure decisions of the hand-off to the elected committer (sink/iceberg_handoff.py)."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from service.sink.iceberg_handoff import (
    FOOTER_TAIL,
    MAX_FLUSHES_PER_SNAPSHOT,
    UNKNOWN_EPOCH,
    Handoff,
    Mark,
    Waited,
    decode_handoff,
    due,
    encode_handoff,
    footer_from_tail,
    footer_length,
    owner_decision,
    tail_range,
    unmarked,
)


def parquet(rows: int, columns: int = 2) -> bytes:
    out = io.BytesIO()
    table = pa.table({f"c{i}": list(range(rows)) for i in range(columns)})
    pq.write_table(table, out, row_group_size=max(1, rows // 4))
    return out.getvalue()


def test_a_handoff_round_trips_and_a_malformed_one_is_refused() -> None:
    blob = encode_handoff(7, [("logs/a.parquet", 10), ("waf/b.parquet", 20)])
    assert decode_handoff("s-1", 42, blob) == Handoff(
        "s-1", 42, 7, (("logs/a.parquet", 10), ("waf/b.parquet", 20))
    )
    with pytest.raises(ValueError, match="s-1"):
        decode_handoff("s-1", 42, b'{"files": []}')


def test_due_takes_only_flushes_above_their_watermark_in_shard_order() -> None:
    hs = [Handoff("b", 10, 1, ()), Handoff("a", 5, 1, ()), Handoff("c", 3, 2, ())]
    marks = {"a": 5, "b": 9}
    assert [h.shard_id for h in due(hs, marks.get)] == ["b", "c"]
    many = [Handoff(f"s{i:05d}", 1, 1, ()) for i in range(MAX_FLUSHES_PER_SNAPSHOT + 5)]
    assert len(due(many, {}.get)) == MAX_FLUSHES_PER_SNAPSHOT


def test_unmarked_names_flushes_in_the_table_nobody_marked() -> None:
    a, b, c = Handoff("a", 5, 1, ()), Handoff("b", 9, 1, ()), Handoff("c", 4, 3, ())
    pending = [(a, None), (b, None), (c, Mark(4, 3))]
    assert unmarked(pending, {"a": 5, "b": 8, "c": 4}.get) == [a]


@pytest.mark.parametrize(
    ("mark", "waited", "expected"),
    [
        (None, 0.0, Waited.WAIT),
        (None, 30.0, Waited.FALLBACK),
        (Mark(10, 3), 0.0, Waited.ADDED),  # this owner's hand-off was committed
        (Mark(10, 2), 0.0, Waited.PRESENT),  # a previous owner's objects are the table's
        (Mark(10, UNKNOWN_EPOCH), 0.0, Waited.PRESENT),
        (Mark(12, 3), 0.0, Waited.PRESENT),  # a later range: ours is in, objects unknown
        (Mark(9, 3), 0.0, Waited.WAIT),  # an older flush's mark says nothing of this one
        (Mark(9, 3), 31.0, Waited.FALLBACK),
    ],
)
def test_owner_decision(mark: Mark | None, waited: float, expected: Waited) -> None:
    assert owner_decision(mark, 10, 3, waited, 30.0) is expected


def test_the_footer_is_read_from_the_tail_alone() -> None:
    body = parquet(2000, columns=6)
    whole = pq.read_metadata(pa.BufferReader(body))
    first, last = tail_range(len(body), FOOTER_TAIL)
    assert (first, last) == (max(0, len(body) - FOOTER_TAIL), len(body) - 1)
    footer = footer_from_tail(body[first : last + 1])
    assert footer.num_rows == whole.num_rows == 2000
    assert footer.num_row_groups == whole.num_row_groups > 1
    assert footer.schema.to_arrow_schema() == whole.schema.to_arrow_schema()
    stats = footer.row_group(0).column(1).statistics
    assert (stats.min, stats.max) == (0, 499)


def test_a_tail_shorter_than_the_footer_says_how_much_to_read() -> None:
    body = parquet(100)
    need = footer_length(body[-8:]) + 8
    assert footer_from_tail(body[-need:]).num_rows == 100
    with pytest.raises(ValueError, match=f"needs {need}"):
        footer_from_tail(body[-(need - 1) :])
    with pytest.raises(ValueError, match="not a Parquet file"):
        footer_length(b"gzip....")
