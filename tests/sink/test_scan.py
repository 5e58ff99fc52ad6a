"""The C line scanner (service/_scan.c) against the specification, at the text level.

The scanner maps only lines that re-emit byte for byte as orjson would write them and
leaves every other line to the Python path; so whatever the text looks like, the native
builder, the Python builder and ``ColumnBuilder`` must give the same rows and the same bad
records. The lines here are written by a serializer that picks, per token, the spellings
agents and libraries really use: spaces, tabs and CRs between tokens, ``\\u`` and ``\\/``
escapes, exponents, trailing zeros, ``-0``, long floats, huge ints, duplicate keys at any
depth, deep nesting, and broken text.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service import _scan, scanner
from service.decode.types import DecodedRecord, LineBatch, RecordMeta
from service.ingest.lineblock import LineBlock
from service.ingest.lines import ParsedLines, check_object, parse_ndjson
from service.ingest.packer import Header, Packer, Ticket
from service.loggen import ndjson_lines
from service.sink.build import MappingPath, build_table
from service.sink.mapping import build_table_reference
from service.sink.native import miscounted, name_groups
from service.sink.rules import FieldMapping, line_count_fault
from tests.builders import unmapped

ARRIVAL = int(datetime(2026, 11, 20, 9, 0, tzinfo=UTC).timestamp() * 1e6)
MAPPING = FieldMapping()
# Tests of what the scanner buys (whole bodies as one block, one scanner call per flush);
# with TIDEWAY_NO_EXTENSIONS=1 the same lines take the pure path, tested everywhere else.
needs_scanner = pytest.mark.skipif(scanner.SCAN is None, reason="TIDEWAY_NO_EXTENSIONS is set")
GROUPS = name_groups(MAPPING)
KEYS = [
    "timestamp",
    "@timestamp",
    "time",
    "ts",
    "date",
    "level",
    "severity",
    "log",
    "severity_text",
    "severity_number",
    "service",
    "app",
    "host",
    "message",
    "msg",
    "body",
    "trace_id",
    "span_id",
    "a",
    "b",
    "é",
    "x/y",
]


def mapped(lines: list[bytes]) -> list[int]:
    return list(_scan.map_lines([b"\n".join(lines)], len(lines), GROUPS)[0])


def records_of(lines: list[bytes]) -> list[DecodedRecord]:
    # Two lines per record, so one odd line sends its neighbour to the Python path too.
    return [
        DecodedRecord(
            RecordMeta("shardId-000", i, ARRIVAL),
            (LineBatch(b"\n".join(lines[j : j + 2]), len(lines[j : j + 2]), source="http"),),
        )
        for i, j in enumerate(range(0, len(lines), 2))
    ]


def assert_three_agree(lines: list[bytes]) -> None:
    records = records_of(lines)
    native, native_bad = build_table(records, MAPPING)
    python, python_bad = build_table(records, MAPPING, MappingPath.COLUMNAR)
    ref, ref_bad = build_table_reference(records, MAPPING)
    assert native.schema == ref.schema
    assert native.to_pylist() == ref.to_pylist()
    assert python.to_pylist() == ref.to_pylist()
    assert unmapped(native_bad) == unmapped(ref_bad)
    assert unmapped(python_bad) == unmapped(ref_bad)


# --- a serializer with the spellings of real producers ---------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(
        [
            "2026-11-20T08:00:00Z",
            "2026-11-20T08:00:00.123456+01:00",
            "2026-11-20 08:00:00",
            "info",
            "WARN",
            " error ",
            "",
            'line\nbreak "quoted" back\\slash\ttab',
            "é ü 中 😀",
        ]
    )
    | st.sampled_from([1763625600, 1763625600.5, 1763625600123, 1763625600123456, 9, 24, 25, 0])
)


def _containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    keys = st.sampled_from(KEYS) | st.text(max_size=4)
    return st.lists(inner, max_size=3) | st.lists(st.tuples(keys, inner), max_size=3)


values = st.recursive(scalars, _containers, max_leaves=8)


def render(value: Any, draw: Any) -> str:
    """``value`` as JSON text, each token spelled one of the ways producers spell it."""
    ws = draw(st.sampled_from(["", "", "", " ", "\t", " \r"]))
    if isinstance(value, list) and value and all(isinstance(v, tuple) for v in value):
        pairs = [f"{render_str(k, draw)}{ws}:{ws}{render(v, draw)}" for k, v in value]
        if pairs and draw(st.integers(0, 9)) == 0:
            pairs.append(pairs[0])  # a duplicate key
        return "{" + ws + f"{ws},{ws}".join(pairs) + ws + "}"
    if isinstance(value, list):
        return "[" + ",".join(render(v, draw) for v in value) + "]"
    if isinstance(value, str):
        return render_str(value, draw)
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int):
        if value == 0 and draw(st.booleans()):
            return "-0"
        return (
            str(value)
            if draw(st.booleans())
            else f"{value}.0"
            if abs(value) < 2**53
            else str(value)
        )
    style = draw(st.sampled_from(["repr", "exp", "fixed", "trailing"]))
    if style == "exp" and value != 0:
        return f"{value:.17e}"
    if style == "fixed" and abs(value) < 1e20:
        return f"{value:.17f}"
    if style == "trailing" and math.isfinite(value) and "e" not in repr(value):
        return repr(value) + "00"
    return repr(value)


def render_str(text: str, draw: Any) -> str:
    style = draw(st.sampled_from(["orjson", "ascii", "slash"]))
    if style == "ascii":
        return json.dumps(text)  # non-ASCII as \u escapes
    out = orjson.dumps(text).decode()
    return out.replace("/", "\\/") if style == "slash" else out


@st.composite
def line(draw: Any) -> bytes:
    pairs = draw(st.lists(st.tuples(st.sampled_from(KEYS), values), max_size=8))
    text = render(pairs, draw) if pairs else "{}"
    broken = draw(st.integers(0, 19))
    if broken == 0:
        text = text[: draw(st.integers(0, len(text)))]  # truncated
    elif broken == 1:
        text = text + draw(st.sampled_from(["x", ",", "}", " ", "\r"]))
    data = text.encode()
    if draw(st.integers(0, 29)) == 0:
        data = data.replace(b"\xc3", b"\xff")  # invalid UTF-8
    return data


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(line(), min_size=1, max_size=8))
def test_any_spelling_maps_like_the_specification(lines: list[bytes]) -> None:
    assert_three_agree(lines)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=20))
def test_floats_are_taken_only_where_orjson_writes_them_the_same(floats: list[float]) -> None:
    spellings = [s for f in floats for s in (repr(f), f"{f:.15g}", f"{f:.17g}", f"{f:.6f}")]
    lines = [f'{{"v":{s}}}'.encode() for s in spellings if "n" not in s]
    for text, took in zip(lines, mapped(lines), strict=True):
        if took:  # the scanner's attributes are orjson's
            assert orjson.dumps(orjson.loads(text)) == text
    assert_three_agree(lines)


# --- the scanner does take what agents send ----------------------------------------------


def test_agent_shaped_lines_are_all_mapped_natively() -> None:
    """loggen's lines (several services, nested fields, mixed time formats, epoch floats
    with 16-17 digits) all take the native path: a regression here is a 3x slowdown."""
    lines = ndjson_lines(2000, seed=5)
    assert all(mapped(lines))
    assert_three_agree(lines)


@pytest.mark.parametrize(
    "text",
    [
        b'{"timestamp":"2026-11-20T08:00:00Z","level":"info","msg":"a \\"b\\"\\n","n":{"x":[1,2.5,true,null]}}',
        b'{ "level" : "warn" ,\t"message": "spaced out" }\r',
        b'{"date":1763625600.1234567,"log":"fluent bit line","stream":"stdout"}',
        b'{"ts":1.7636256e9,"msg":"exponent in the time field only"}',
        b'{"severity_number":9,"level":"x"}',
        b'{"a":0.30000000000000004,"b":-2.2250738585072014}',  # 17 digits, shortest forms
        b"{}",
    ],
)
def test_lines_the_scanner_takes(text: bytes) -> None:
    assert mapped([text]) == [1]
    assert_three_agree([text])


@pytest.mark.parametrize(
    "text",
    [
        b'{"a":1.50}',  # orjson writes 1.5
        b'{"a":1e5}',  # 100000.0
        b'{"a":0.000001}',  # 1e-6
        b'{"a":1.0000000000000001}',  # reads back as 1.0
        b'{"a":0.1000000000000000055}',  # past 17 digits
        b'{"a":-0}',  # 0
        b'{"a":12345678901234567890}',  # past 18 digits
        b'{"a":"caf\\u00e9"}',  # orjson writes the character
        b'{"a":"x\\/y"}',
        b'{"a":1,"a":2}',  # orjson keeps the last value
        b'{"a":{"b":1,"b":2}}',
        b'{"log":{"level":"info"},"message":"ECS nested level"}',
        b'{"a":1}x',
        b'{"a":"\xff"}',
        b"[1,2]",
        b"",
        b'{"a":' * 70 + b"1" + b"}" * 70,  # deeper than the scanner checks
    ],
)
def test_lines_left_to_the_python_path(text: bytes) -> None:
    assert mapped([text]) == [0]
    assert_three_agree([text])


def test_a_host_or_service_object_is_left_to_python_and_a_string_one_is_not() -> None:
    """ECS objects (``host: {"name": ...}``) depend on the value; strings stay native."""
    lines = [
        b'{"host":{"name":"fb-host"},"service":{"name":"fb-svc"},"message":"ecs"}',
        b'{"host":"h1","service":"api","message":"plain"}',
        b'{"service":{"name":"s"},"message":"ecs service only"}',
        b'{"host":[1],"service":"api","message":"a list is no object"}',
    ]
    assert mapped(lines) == [0, 1, 0, 1]
    assert_three_agree(lines)


def test_a_time_that_does_not_parse_keeps_its_key_in_attributes() -> None:
    lines = [b'{"timestamp":"yesterday","msg":"x"}', b'{"ts":1,"msg":"1970 is outside the window"}']
    assert mapped(lines) == [1, 1]  # scanned, then redone by Python for the time
    rows, _ = build_table(records_of(lines), MAPPING)
    assert [orjson.loads(a) for a in rows.column("attributes").to_pylist()] == [
        {"timestamp": "yesterday"},
        {"ts": 1},
    ]
    assert_three_agree(lines)


def test_scanner_refuses_a_wrong_line_count_and_non_bytes() -> None:
    with pytest.raises(ValueError, match="parts hold 2 lines, not 3"):
        _scan.map_lines([b"{}\n{}"], 3, GROUPS)
    with pytest.raises(TypeError, match="parts must be bytes"):
        _scan.map_lines(["{}"], 1, GROUPS)
    with pytest.raises(ValueError, match="7 name groups"):
        _scan.map_lines([b"{}"], 1, GROUPS[:3])


# --- check_lines: the ingest tier's validation ---------------------------------------------


def parse_with_orjson_only(body: bytes, max_line: int) -> ParsedLines:
    """The rule ``parse_ndjson`` keeps: every non-blank line, stripped, checked by orjson."""
    out = ParsedLines()
    for number, line in enumerate(body.split(b"\n"), start=1):
        stripped = line.strip()
        if not stripped:
            continue
        problem = check_object(stripped, max_line)
        if problem is None:
            out.lines.append(stripped)
        else:
            out.reject(number, *problem)
    return out


ingest_line = line() | st.sampled_from(
    [b"", b"   ", b"\r", b"{}", b' {"a":1} ', b"[1]", b'"text"', b"null", b'{"a":"\\ud800"}']
)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(ingest_line, min_size=1, max_size=10), st.sampled_from([8, 40, 1 << 20]))
def test_ndjson_validation_agrees_with_orjson(lines: list[bytes], max_line: int) -> None:
    body = b"\n".join(lines)
    for text in (body, body + b"\n"):
        got, want = parse_ndjson(text, max_line), parse_with_orjson_only(text, max_line)
        assert list(got.lines) == list(want.lines)
        assert [got.lines[i] for i in range(len(got.lines))] == list(want.lines)
        assert got.errors == want.errors
        assert got.rejected_by_reason == want.rejected_by_reason


def test_check_lines_vouches_for_agent_lines_only_when_sure() -> None:
    body = b"\n".join(
        [
            b'{"ts":1763625600.123456789,"msg":"x","n":{"a":[1,2,{"b":null}]}}',  # sure
            b'{"a":1,"a":2}',  # duplicate keys are valid JSON: sure
            b'{"a":"x\\/y"}',  # sure
            b'{"a":"\\u00e9"}',  # may be a lone surrogate: orjson decides
            b'{"a":1e400}',  # infinity: orjson refuses
            b"{}",  # empty: refused
            b' {"a":1}',  # whitespace around: stripped by the caller
            b'{"a":1}',
        ]
    )
    status, ends = _scan.check_lines(body, 1 << 20)
    assert list(status) == [0, 0, 0, 1, 1, 1, 1, 0]
    assert list(memoryview(ends).cast("q")) == [
        i + len(line) for i, line in zip(accumulate_starts(body), body.split(b"\n"), strict=True)
    ]
    assert list(_scan.check_lines(b'{"a":1}', 6)[0]) == [1]  # over max_line


def accumulate_starts(body: bytes) -> list[int]:
    starts, at = [], 0
    for line in body.split(b"\n"):
        starts.append(at)
        at += len(line) + 1
    return starts


@pytest.mark.parametrize(
    "lines",
    [
        [b'{"a":1}'],
        [b'{"a":1}', b'{"bb":22}', b'{"c":"333"}'],
        [orjson.dumps({"i": i, "pad": "y" * (i % 50), "r": i * 7919 % 1000}) for i in range(600)],
    ],
)
@needs_scanner
def test_a_line_block_packs_exactly_as_its_lines(lines: list[bytes]) -> None:
    """The packer takes a whole valid body as one buffer; records, counts and bytes are those
    of the same lines given one by one, with a target small enough to cut between them."""
    block = parse_ndjson(b"\n".join(lines), 1 << 20).lines
    assert isinstance(block, LineBlock)
    assert block.nbytes == sum(map(len, lines))
    sealed = []
    for source in (block, lines):
        packer = Packer(1024)
        got = packer.add(source, Header(), Ticket(), traceparent="", now=0.0, received_us=1)
        got += packer.due(now=1.0, linger=0)
        sealed.append([(r.data, r.lines, r.raw_bytes) for r in got])
    assert sealed[0] == sealed[1]
    assert sum(count for _, count, _ in sealed[0]) == len(lines)
    if len(lines) > 100:
        assert len(sealed[0]) > 1  # cut between lines, as the target demands


def test_one_odd_line_in_a_large_record_is_mapped_alone() -> None:
    """A record of 70 agent lines with one the scanner leaves (a \\u escape) and one whose
    time is outside the window: both are mapped by the Python path in place, the rest stay
    native, and the rows are the specification's; a broken line is reported by itself, with
    the specification's reason, and its record's other lines land."""
    lines = ndjson_lines(70, seed=3)
    lines[10] = b'{"msg":"caf\\u00e9","level":"info"}'
    lines[40] = b'{"ts":1,"msg":"1970"}'
    record = DecodedRecord(
        RecordMeta("shardId-000", 7, ARRIVAL), (LineBatch(b"\n".join(lines), 70, source="http"),)
    )
    broken = DecodedRecord(
        RecordMeta("shardId-000", 8, ARRIVAL),
        (LineBatch(b"\n".join([lines[0], b'{"a":', lines[1]]), 3, source="http"),),
    )
    native, native_bad = build_table([record, broken], MAPPING)
    ref, ref_bad = build_table_reference([record, broken], MAPPING)
    assert native.to_pylist() == ref.to_pylist()
    assert native.num_rows == 72
    assert unmapped(native_bad) == unmapped(ref_bad)
    assert [(u.record.meta.sequence_number, u.line, u.data) for u in native_bad] == [
        (8, 1, b'{"a":')
    ]
    assert native.column("message")[10].as_py() == "café"


@needs_scanner
def test_a_flush_cut_into_many_scanner_calls_maps_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Flushes past NATIVE_CHUNK_BYTES take several scanner calls (int32 offsets): the
    rows, in order, and the Parquet objects are those of one call."""
    from service.sink import build
    from service.sink.plan import Layout, plan_flush

    lines = ndjson_lines(700, seed=4)
    lines[5] = b'{"msg":"\\u00e9"}'  # one line for the Python path, inside the first call
    records = [
        DecodedRecord(
            RecordMeta("shardId-000", i, ARRIVAL),
            (LineBatch(b"\n".join(lines[j : j + 70]), 70, source="http"),),
        )
        for i, j in enumerate(range(0, 700, 70))
    ]
    whole = plan_flush("shardId-000", records, [], Layout("s"), MAPPING)
    monkeypatch.setattr(build, "NATIVE_CHUNK_BYTES", 10_000)
    cut, _ = build_table(records, MAPPING)
    assert len(cut.column("attributes").chunks) > 5
    ref, _ = build_table_reference(records, MAPPING)
    assert cut.to_pylist() == ref.to_pylist()
    again = plan_flush("shardId-000", records, [], Layout("s"), MAPPING)
    assert [(o.key, o.body) for o in again.objects] == [(o.key, o.body) for o in whole.objects]


def test_the_scanner_groups_are_the_rules_groups() -> None:
    """The C scanner's group table and the mapping rules name the same groups in order."""
    from service.sink import rules

    assert _scan.GROUPS == rules.GROUPS
    assert _scan.NGROUPS == len(rules.GROUPS) == len(MAPPING.groups())
    assert _scan.SEVERITY_NUMBER == rules.SEVERITY_NUMBER


# --- newlines: the writer's line-count check --------------------------------------------------


@needs_scanner
@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=40) | st.sampled_from([b"", b"\n", b"\n\n", b"a\nb"])))
def test_newlines_counts_what_bytes_count_counts(parts: list[bytes]) -> None:
    counts = np.frombuffer(_scan.newlines(parts), dtype=np.int64).tolist()
    assert counts == [p.count(b"\n") for p in parts]


def batch_shapes() -> st.SearchStrategy[list[list[tuple[int, int]]]]:
    """Records of batches as (lines held, lines declared), declared off by one or zero at times."""
    held = st.integers(min_value=1, max_value=4)
    declared = st.sampled_from([0, -1, 0, 1])
    batch = st.tuples(held, declared).map(lambda t: (t[0], max(0, t[0] + t[1]) if t[1] else t[0]))
    return st.lists(st.lists(batch, min_size=1, max_size=3), max_size=6)


@needs_scanner
@settings(max_examples=200, deadline=None)
@given(batch_shapes())
def test_miscounted_names_the_records_line_count_fault_names(
    shapes: list[list[tuple[int, int]]],
) -> None:
    records = [
        DecodedRecord(
            RecordMeta("s", seq, 0),
            tuple(LineBatch(b"\n".join([b"{}"] * held), declared) for held, declared in shape),
        )
        for seq, shape in enumerate(shapes)
    ]
    expected = [any(line_count_fault(b) for b in r.batches) for r in records]
    assert miscounted(records) == expected
