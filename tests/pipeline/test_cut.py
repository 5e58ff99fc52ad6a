"""``cut`` (``_fields.cut``) against its specification, Arrow's ``split_pattern``: the same
lists, the same offsets and pieces (the delimited parsers take fields by offset), for any
lines, slices and nulls; bad buffers are refused."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyarrow import compute

from service.pipeline.parsers import PARSERS
from service.pipeline.parsers.cut import cut
from service.scanner import FIELDS
from tests.pipeline.samples import VPC_ACCEPT, VPC_REJECT

pc: Any = compute
needs_extension = pytest.mark.skipif(FIELDS is None, reason="TIDEWAY_NO_EXTENSIONS is set")


def assert_same(text: pa.Array[Any], separator: str) -> None:
    got, want = cut(text, separator), pc.split_pattern(text, separator)
    got.validate(full=True)
    assert got.type == want.type
    assert got.to_pylist() == want.to_pylist()
    assert got.offsets.to_pylist() == want.offsets.to_pylist()
    assert got.values.to_pylist() == want.values.to_pylist()


@settings(max_examples=300, deadline=None)
@given(
    lines=st.lists(st.one_of(st.none(), st.text(" \t-aé", max_size=12)), min_size=1, max_size=10),
    separator=st.sampled_from([" ", "\t", "a", "é", "--"]),
    start=st.integers(0, 3),
)
def test_cut_is_split_pattern(lines: list[str | None], separator: str, start: int) -> None:
    text = pa.array(lines, pa.string())
    assert_same(text.slice(min(start, len(lines) - 1)), separator)


def test_vpc_flow_lines_and_a_column_of_nulls() -> None:
    lines = [VPC_ACCEPT, None, VPC_REJECT, "", "  ", VPC_ACCEPT + " extra"] * 50
    assert_same(pa.array(lines, pa.string()), " ")
    assert_same(pa.array([None, None], pa.string()), " ")
    result = PARSERS["vpc_flow"](pa.array(lines, pa.string()))
    assert result.error.to_pylist()[:2] == [None, "message is null"]


@needs_extension
def test_bad_buffers_and_separators_are_refused() -> None:
    assert FIELDS is not None
    offsets = pa.array([0, 5, 3], pa.int32()).buffers()[1]
    with pytest.raises(ValueError, match="offsets outside the data"):
        FIELDS.cut(offsets, b"abcde", 0, 2, b"", 32)
    with pytest.raises(ValueError, match="do not fit the slice"):
        FIELDS.cut(offsets, b"abcde", 1, 5, b"", 32)
    with pytest.raises(ValueError, match="do not fit the slice"):
        FIELDS.cut(offsets, b"abcde", 0, 1, b"\x01\x01", 32)
    with pytest.raises(ValueError, match="one byte"):
        FIELDS.cut(offsets, b"abcde", 0, 1, b"", 256)
