"""The ALB address and request splits (pieces.py) against ``split_pattern``, their
specification, on values with no separator, several, leading or trailing ones, empty
values, nulls and slices."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.pipeline.parsers.tokens import split_host_port, split_request

VALUES = [
    "10.0.0.1:80",
    "2001:db8::1:443",
    "-",
    "",
    ":",
    ":80",
    "host:",
    "no-colon",
    None,
    "GET http://a.example:80/x?y=1 HTTP/1.1",
    "GET  /two-spaces HTTP/1.1 extra words",
    "- - -",
    " ",
    "GET",
    "GET ",
    "é:ü ñ",
]


def _pieces(text: pa.Array[Any], pattern: str, count: int, reverse: bool) -> list[Any]:
    parts = pc.split_pattern(text, pattern, max_splits=count - 1, reverse=reverse)
    return [None if p is None else p + [None] * (count - len(p)) for p in parts.to_pylist()]


def _host_port_spec(text: pa.Array[Any]) -> tuple[list[Any], list[Any]]:
    pieces = _pieces(text, ":", 2, reverse=True)
    two = [p is not None and p[1] is not None for p in pieces]
    return (
        [p[0] if ok else None for p, ok in zip(pieces, two, strict=True)],
        [p[1] if ok else None for p, ok in zip(pieces, two, strict=True)],
    )


def _request_spec(text: pa.Array[Any]) -> list[list[Any]]:
    pieces = _pieces(text, " ", 3, reverse=False)
    clean = [None if p is None else [None if v in ("-", "") else v for v in p] for p in pieces]
    return [[None if p is None else p[i] for p in clean] for i in range(3)]


def _check(values: list[str | None]) -> None:
    for text in (
        pa.array(values, pa.string()),
        pa.array(["x", *values, "y"]).slice(1, len(values)),
    ):
        ip, port = split_host_port(text)
        ip.validate(full=True)
        assert (ip.to_pylist(), port.to_pylist()) == _host_port_spec(text)
        got = split_request(text, "r_")
        spec = _request_spec(text)
        for i, name in enumerate(("r_method", "r_url", "r_protocol")):
            got[name].validate(full=True)
            assert got[name].to_pylist() == spec[i], name


def test_the_splits_equal_split_pattern_on_awkward_values() -> None:
    _check(VALUES)


@pytest.mark.parametrize("values", [[], [None], [None, None], ["", ""], ["a:b c"]])
def test_the_splits_of_columns_without_separators_or_values(values: list[str | None]) -> None:
    _check(values)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.none() | st.text(alphabet=": -aé", max_size=8), max_size=12))
def test_the_splits_equal_split_pattern_on_any_values(values: list[str | None]) -> None:
    _check(values)
