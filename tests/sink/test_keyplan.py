"""The columnar path maps ECS objects (``{"host": {"name": ...}}``) and plain strings under
the same keys in bulk, not line by line, with the Parquet bytes of the specification."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.decode.types import DecodedRecord
from service.loggen import ndjson_lines
from service.sink.build import MappingPath, build_table
from service.sink.columns import ChunkMapper, LineChunk, add_record, map_chunk
from service.sink.mapping import build_table_reference
from service.sink.parquet import encode_parquet
from tests.builders import MAPPING, record

AGENT_LINES: list[dict[str, Any]] = [
    # Filebeat / Elastic Agent (ECS)
    {
        "@timestamp": "2026-11-20T08:00:00Z",
        "host": {"name": "fb-host", "os": {"family": "debian"}},
        "service": {"name": "fb-svc", "version": "1.2"},
        "message": "ecs",
        "log": {"level": "warn", "file": {"path": "/var/log/app.log"}},
    },
    {"host": {"name": "only-name"}, "service": {"name": "svc"}, "message": "names only"},
    # An object without a name is kept whole.
    {"host": {"ip": "10.0.0.1"}, "hostname": "h2", "msg": "no name"},
    # Fluent Bit, Vector, syslog: strings.
    {"host": "h1", "service": "api", "level": "info", "message": "string"},
    {"host": "h3", "hostname": "h4", "app": "x", "log": "fluent bit line"},
    {"service": "", "application": "fallback", "host": "h5"},
    {"service.name": "dotted", "host.name": "h6", "host": "h7"},
]


def _columnar_fallbacks(records: list[DecodedRecord]) -> int:
    """Key tuples the columnar path sent down the per-line path, mapping ``records``."""
    mapper = ChunkMapper(MAPPING)
    chunk = LineChunk()
    for one in records:
        assert add_record(chunk, one)
    map_chunk(chunk, mapper)
    return mapper.plans.fallbacks


def _assert_columnar_is_the_reference(records: list[DecodedRecord]) -> None:
    fast, fast_bad = build_table(records, MAPPING, MappingPath.COLUMNAR)
    ref, ref_bad = build_table_reference(records, MAPPING)
    assert fast.to_pylist() == ref.to_pylist()
    assert encode_parquet(fast) == encode_parquet(ref)
    assert [(u.line, u.reason) for u in fast_bad] == [(u.line, u.reason) for u in ref_bad]


def test_host_and_service_objects_and_strings_stay_on_the_fast_path() -> None:
    lines = [orjson.dumps(x) for x in AGENT_LINES] + ndjson_lines(500, seed=5)
    records = [record(lines[i : i + 50], seq=i) for i in range(0, len(lines), 50)]
    assert _columnar_fallbacks(records) == 0
    _assert_columnar_is_the_reference(records)


def test_a_column_reading_what_an_earlier_nested_match_may_take_stays_in_bulk() -> None:
    # Severity's ``log.level`` may take the inside of ``log`` (then message takes the rest),
    # or ``log`` is Fluent Bit's text line and message takes it whole.
    lines = [
        {"log": {"level": "warn", "x": 1}, "host": {"name": "h"}},
        {"log": {"level": "warn"}},
        {"log": "text", "host": "h"},
        {"log": {"file": "a"}, "msg": "m"},
    ]
    records = [record([orjson.dumps(x) for x in lines])]
    assert _columnar_fallbacks(records) == 0
    _assert_columnar_is_the_reference(records)


nested = st.dictionaries(
    st.sampled_from(["name", "level", "id", "os", "ip"]),
    st.text(max_size=3) | st.integers(0, 3) | st.just({"name": "deep"}),
    max_size=3,
)
agent_object = st.dictionaries(
    st.sampled_from(
        [
            "host",
            "hostname",
            "host.name",
            "service",
            "service.name",
            "app",
            "application",
            "log",
            "level",
            "message",
            "msg",
            "trace",
            "trace_id",
            "span",
            "severity_number",
            "other",
        ]
    ),
    st.text(max_size=3) | nested | st.integers(0, 30),
    max_size=7,
)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(agent_object, min_size=1, max_size=8))
def test_any_mix_of_nested_and_plain_mapped_keys_maps_like_the_specification(
    objs: list[dict[str, Any]],
) -> None:
    _assert_columnar_is_the_reference([record([orjson.dumps(o) for o in objs])])
