"""Attribute paths (``attributes.http.status``): the value at a nested key of each row's
attributes JSON, read column-wise, held to a reference that decodes every row."""

from __future__ import annotations

from typing import Any

import orjson
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from service.pipeline.condition import compile_condition
from service.pipeline.jsonpath import values_at
from tests.pipeline_support import flush_table

KEYS = st.sampled_from(["a", "b", "http", "status", "x-y", "é", 'q"k', "back\\slash"])
SCALARS = st.none() | st.booleans() | st.integers(-(10**12), 10**12) | st.text(max_size=8)
SCALARS |= st.floats(allow_nan=False, allow_infinity=False)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=12,
)
OBJECTS = st.dictionaries(KEYS, VALUES, max_size=5)


def reference(obj: Any, path: list[str]) -> str | None:
    """The value's text as the column-wise reader defines it, by decoding the row."""
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            return None
        obj = obj[key]
    if obj is None:
        return None
    if isinstance(obj, str):
        return orjson.dumps(obj).decode()[1:-1]  # a string's content as written
    return orjson.dumps(obj).decode()


@settings(max_examples=120, deadline=None)
@given(
    st.lists(st.none() | OBJECTS, max_size=8),
    st.lists(KEYS, min_size=1, max_size=3),
    st.integers(0, 3),
)
def test_a_path_reads_what_decoding_each_row_reads(
    rows: list[dict[str, Any] | None], path: list[str], skip: int
) -> None:
    texts = [None if r is None else orjson.dumps(r).decode() for r in rows]
    column = pa.array(texts, pa.string()).slice(min(skip, len(texts)))
    expected = [reference(r, path) for r in rows[min(skip, len(texts)) :]]
    assert values_at(column, path).to_pylist() == expected


def test_a_nested_key_is_not_confused_with_a_top_level_one() -> None:
    column = pa.array(
        [
            '{"http":{"status":503},"status":"top"}',
            '{"a":{"status":7},"note":"\\"status\\":9"}',
            '{"http":"status"}',
        ]
    )
    assert values_at(column, ["status"]).to_pylist() == ["top", None, None]
    assert values_at(column, ["http", "status"]).to_pylist() == ["503", None, None]
    assert values_at(column, ["http"]).to_pylist() == ['{"status":503}', None, "status"]


def test_conditions_read_nested_attribute_paths() -> None:
    table = flush_table(
        [
            {"attributes": '{"http":{"status":503,"method":"GET"},"status":200}'},
            {"attributes": '{"http":{"status":"404"},"status":500}'},
            {"attributes": '{"http":null}'},
            {"attributes": None},
        ]
    )

    def rows(text: str) -> list[bool]:
        return compile_condition(text).mask(table).to_pylist()

    assert rows("attributes.http.status >= 500") == [True, False, False, False]
    assert rows("attributes.status >= 500") == [False, True, False, False]
    assert rows('attributes.http.method == "GET"') == [True, False, False, False]
    assert rows("attributes.http.status in [404]") == [False, True, False, False]
    assert rows("attributes.http.status is null") == [False, False, True, True]
    assert compile_condition("attributes.http.status > 1").columns() == {"attributes"}
