"""A ``matches`` pattern that is a literal text is searched without RE2 and answers as RE2."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.pipeline.condition import compile_condition
from service.pipeline.literal import literal_search

TEXTS = st.lists(st.one_of(st.none(), st.text("{}a.$^\\\n é", max_size=6)), max_size=8)
PIECES = st.sampled_from(["a", "\\{", "\\.", "\\$", "\\^", "\\\\", "é", " ", "\n", "x"])
PATTERNS = st.tuples(
    st.sampled_from(["", "^"]),
    st.lists(PIECES, max_size=4).map("".join),
    st.sampled_from(["", "$"]),
).map("".join)


@settings(max_examples=300, deadline=None)
@given(TEXTS, PATTERNS, st.booleans())
def test_a_literal_pattern_answers_as_re2(
    texts: list[str | None], pattern: str, large: bool
) -> None:
    values = pa.array(texts, pa.large_string() if large else pa.string())
    search = literal_search(pattern)
    assert search is not None, pattern
    assert search(values).to_pylist() == pc.match_substring_regex(values, pattern).to_pylist()


@pytest.mark.parametrize(
    "pattern", ["{", "a.b", "^\\d", "(?i)x", "a|b", "x*", "[a]", "a$b", "a\\n"]
)
def test_any_other_pattern_stays_with_re2(pattern: str) -> None:
    assert literal_search(pattern) is None


def test_a_condition_picks_json_lines_by_their_first_byte() -> None:
    table = pa.table({"message": ['{"a":1}', " {", None, "x{"]})
    mask = compile_condition('message matches "^\\\\{"').mask(table)
    assert mask.to_pylist() == [True, False, False, False]  # null reads as false
