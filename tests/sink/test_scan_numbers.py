"""The C scanner and orjson agree on every number: whatever the scanner vouches for, orjson
reads (a number orjson refuses, such as one that overflows a double, is never vouched for
and never mapped natively), and a flush holding any number maps as the specification does
without raising. Differential over long digit runs, big exponents and boundary values."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service import _scan
from service.decode.types import DecodedRecord, LineBatch, RecordMeta
from service.sink.build import build_table
from service.sink.mapping import build_table_reference
from service.sink.native import name_groups
from service.sink.rules import FieldMapping
from tests.builders import BOUNDARY_NUMBERS as BOUNDARY
from tests.builders import unmapped

ARRIVAL = int(datetime(2026, 11, 20, 9, 0, tzinfo=UTC).timestamp() * 1e6)
MAPPING = FieldMapping()
GROUPS = name_groups(MAPPING)


digits = st.text("0123456789", min_size=1, max_size=320)
numbers = st.builds(
    lambda sign, head, frac, exp: sign + head + frac + exp,
    st.sampled_from(["", "-"]),
    st.one_of(
        st.just("0"),
        st.builds(
            lambda a, b: a + b, st.sampled_from("123456789"), st.text("0123456789", max_size=320)
        ),
    ),
    st.one_of(st.just(""), st.builds(lambda d: "." + d, digits)),
    st.one_of(
        st.just(""),
        st.builds(
            lambda e, s, d: e + s + d,
            st.sampled_from(["e", "E"]),
            st.sampled_from(["", "+", "-"]),
            st.text("0123456789", min_size=1, max_size=4),
        ),
    ),
)


def orjson_reads(text: bytes) -> bool:
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return True


def assert_agree(number: str) -> None:
    lines = [
        f'{{"a":{number}}}'.encode(),
        f'{{"timestamp":{number},"level":"info"}}'.encode(),
        f'{{"timestamp":{number},"x":{number}}}'.encode(),
        f'{{"message":{number}}}'.encode(),
    ]
    status, _ = _scan.check_lines(b"\n".join(lines), 1 << 20)
    taken = _scan.map_lines([b"\n".join(lines)], len(lines), GROUPS)[0]
    for line, unsure, took in zip(lines, status, taken, strict=True):
        if not unsure or took:
            assert orjson_reads(line), f"the scanner vouched for {line!r}, orjson refuses it"
    records = [
        DecodedRecord(RecordMeta("shardId-000", i, ARRIVAL), (LineBatch(line, 1),))
        for i, line in enumerate(lines)
    ]
    fast, fast_bad = build_table(records, MAPPING)
    ref, ref_bad = build_table_reference(records, MAPPING)
    assert fast.to_pylist() == ref.to_pylist()
    assert unmapped(fast_bad) == unmapped(ref_bad)


@pytest.mark.parametrize("number", BOUNDARY)
def test_boundary_numbers_are_vouched_for_only_when_orjson_reads_them(number: str) -> None:
    assert_agree(number)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(numbers)
def test_any_number_is_vouched_for_only_when_orjson_reads_it(number: str) -> None:
    assert_agree(number)
