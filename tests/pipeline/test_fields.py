"""The access log layouts' native reading (service/_fields.c through tokens.Layout.native)
against their specification (Layout.specified: RE2's check, Arrow's splits and takes): the
same lines pass the check and every field has the same text, on real lines, on real lines
with delimiters spliced in, and on lines of nothing but delimiters; bad buffers are refused."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.parsers import make_lines
from service.pipeline.parsers.access import ALB, COMBINED, S3_ACCESS
from service.pipeline.parsers.tokens import Field, Layout
from service.scanner import FIELDS
from tests.pipeline.samples import ALB_HTTP, ALB_OLDER, APACHE

needs_extension = pytest.mark.skipif(FIELDS is None, reason="TIDEWAY_NO_EXTENSIONS is set")
LAYOUTS = {"alb": ALB.layout, "s3": S3_ACCESS.layout, "combined": COMBINED.layout}
# What the check and the splits turn on: spaces, quotes, escapes, the parking characters,
# "-" (null), the newline ('.' in the check's tail does not take it), non-ASCII.
DELIMITERS = ' "\\-\n\x1d\x1e[]aé'
S3_LINE = (
    "79a59df900b949e55d96a1e698fbaced fd6e862e5b7d8d0e5e43d8fe4c0cb2c8c2bcc7c7b5d25c8d "
    "awsexamplebucket1 [06/Feb/2019:00:00:38 +0000] 192.0.2.3 "
    "arn:aws:iam::123456789012:user/x 3E57427F3EXAMPLE REST.GET.VERSIONING - "
    '"GET /awsexamplebucket1?versioning HTTP/1.1" 200 - 113 - 7 - "-" "S3Console/0.4" - '
    "s9lzHYrFp76ZVxRcpX9+5cjAnEH2ROuNkd2BHfIa6UkFVdtjf5mKR3/eTPFvsiP/XV/VLi31234= SigV4 "
    "ECDHE-RSA-AES128-GCM-SHA256 AuthHeader awsexamplebucket1.s3.us-west-1.amazonaws.com TLSV1.2"
)
REAL = [ALB_HTTP, ALB_OLDER, APACHE, S3_LINE]
COMBINED_LINE = APACHE.rsplit(' "', 2)[0]  # without its optional referer and user agent


def assert_same(layout: Layout, column: pa.Array[Any]) -> None:
    ok, fields = layout.native(column)
    want_ok, want = layout.specified(column)
    assert ok.to_pylist() == want_ok.to_pylist()
    assert list(fields) == list(want)
    for name, values in fields.items():
        assert values.type == pa.string()
        values.validate(full=True)
        assert values.to_pylist() == want[name].to_pylist(), name


@needs_extension
@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_generated_and_real_lines_read_the_same(name: str) -> None:
    lines = make_lines("alb", 2_000) + REAL + [None, "", " ", '"', "-", "\\"]
    for line in REAL:
        lines += [line + " trailing", line + " \n", line[:-1], line.replace('"', '\\"', 1)]
    column = pa.array(lines, pa.string())
    assert_same(LAYOUTS[name], column)
    assert_same(LAYOUTS[name], column.slice(3, 1_500))


@needs_extension
def test_columns_grow_past_the_lines_that_sized_them() -> None:
    """The native columns are sized from their first lines (64): later, longer fields grow
    them, and lines that match every field then go on (a tail with quotes and escapes) are
    read from the check's walk, as the splits read them."""
    short = [ALB_OLDER] * 70
    long_request = ALB_HTTP.replace("GET http://", "GET http://" + "a" * 3_000 + ".", 1)
    tails = [ALB_HTTP + ' "x \\" y" z\\', ALB_HTTP + ' "-"', long_request + " -"]
    column = pa.array(short + [long_request] * 200 + tails + short, pa.string())
    assert_same(ALB.layout, column)
    assert_same(ALB.layout, column.slice(69))


@st.composite
def spliced(draw: st.DrawFn) -> str:
    """A real line with delimiters spliced in, cut short or lengthened."""
    line = draw(st.sampled_from(REAL))
    for _ in range(draw(st.integers(0, 4))):
        at = draw(st.integers(0, len(line)))
        cut = draw(st.integers(0, 3))
        line = line[:at] + draw(st.text(DELIMITERS, max_size=3)) + line[at + cut :]
    return line


LINES = st.lists(
    st.one_of(spliced(), st.text(DELIMITERS, max_size=24), st.none()), min_size=1, max_size=12
)


@needs_extension
@settings(max_examples=300, deadline=None)
@given(lines=LINES, name=st.sampled_from(sorted(LAYOUTS)), start=st.integers(0, 2))
def test_hostile_lines_read_the_same(lines: list[str | None], name: str, start: int) -> None:
    column = pa.array(lines, pa.string())
    assert_same(LAYOUTS[name], column.slice(min(start, len(lines) - 1)))


FIELD = st.one_of(
    st.builds(Field, st.just("f"), quoted=st.just(True)),
    st.builds(Field, st.just("f"), words=st.integers(1, 3)),
)


@needs_extension
@settings(max_examples=300, deadline=None)
@given(
    fields=st.lists(FIELD, min_size=1, max_size=6),
    required=st.integers(1, 6),
    lines=st.lists(st.text(' "\\-\nab', max_size=20), min_size=1, max_size=8),
)
def test_any_layout_reads_the_same(fields: list[Field], required: int, lines: list[str]) -> None:
    named = tuple(Field(f"f{i}", f.kind, f.quoted, f.words) for i, f in enumerate(fields))
    layout = Layout("test", named, min(required, len(named)))
    assert_same(layout, pa.array(lines, pa.string()))


@needs_extension
def test_bad_buffers_and_layouts_are_refused() -> None:
    assert FIELDS is not None
    offsets = pa.array([0, 5, 3], pa.int32()).buffers()[1]
    with pytest.raises(ValueError, match="offsets outside the data"):
        FIELDS.split(offsets, b"abcde", 0, 2, b"", "1", 1)
    with pytest.raises(ValueError, match="offsets outside the data"):
        FIELDS.split(pa.array([0, 9], pa.int32()).buffers()[1], b"abc", 0, 1, b"", "1", 1)
    with pytest.raises(ValueError, match="do not fit the slice"):
        FIELDS.split(offsets, b"abcde", 1, 5, b"", "1", 1)
    with pytest.raises(ValueError, match="do not fit the slice"):
        FIELDS.split(offsets, b"abcde", 0, 1, b"\x01\x01", "1", 1)
    for spec, required in (("x", 1), ("", 1), ("q1", 3), ("1", 0), ("1" * 65, 1)):
        with pytest.raises(ValueError, match=r"a layout has|a field is"):
            FIELDS.split(offsets, b"abcde", 0, 1, b"", spec, required)


@pytest.mark.parametrize("tail", [' "a\x1eb"', " x\x1d", ' "\x1e"'])
def test_a_parking_byte_anywhere_refuses_the_line(tail: str) -> None:
    """The check refuses 0x1d and 0x1e in the optional fields and the tail too: such a line
    once passed, and a neighbour's escape turned its parking byte into a quote or a slash."""
    for lines in ([COMBINED_LINE + tail], [COMBINED_LINE + tail, 'a "\\\\" b']):
        result = COMBINED(pa.array(lines, pa.string()))
        assert result.error.to_pylist()[0] == "not a combined access log line"
        assert result.columns["referer"].to_pylist()[0] is None
