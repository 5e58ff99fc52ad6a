"""Field mapping: the table of defaults, and the columnar builder held to the specification
(``ColumnBuilder``) row for row, byte for byte."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.decode.types import DecodedRecord, LineBatch, RecordMeta
from service.loggen import ndjson_lines
from service.sink.build import build_table
from service.sink.mapping import build_table_reference
from service.sink.rules import FieldMapping
from tests.builders import (
    ARRIVAL,
    MAPPING,
    assert_same_as_reference,
    json_object,
    one_row,
    record,
    us,
)


@pytest.mark.parametrize(
    ("line", "column", "expected"),
    [
        ({"timestamp": "2026-11-20T08:00:00Z"}, "timestamp", datetime(2026, 11, 20, 8, tzinfo=UTC)),
        (
            {"@timestamp": "2026-11-20T08:00:00.250+01:00"},
            "timestamp",
            datetime(2026, 11, 20, 7, 0, 0, 250000, tzinfo=UTC),
        ),
        (
            {"time": us("2026-11-20T08:00:00+00:00") // 1000},
            "timestamp",
            datetime(2026, 11, 20, 8, tzinfo=UTC),
        ),
        (
            {"ts": us("2026-11-20T08:00:00+00:00") / 1e6},
            "timestamp",
            datetime(2026, 11, 20, 8, tzinfo=UTC),
        ),
        (
            {"date": us("2026-11-20T08:00:00+00:00")},
            "timestamp",
            datetime(2026, 11, 20, 8, tzinfo=UTC),
        ),
        (
            {"ts": us("2026-11-20T08:00:00+00:00") * 1000},
            "timestamp",
            datetime(2026, 11, 20, 8, tzinfo=UTC),
        ),
        ({"ts": "1795161600"}, "timestamp", datetime(2026, 11, 20, 8, tzinfo=UTC)),
        ({"level": "WARN"}, "severity_number", 13),
        ({"severity": "error"}, "severity_text", "error"),
        ({"log": {"level": "debug"}}, "severity_number", 5),
        ({"severity_text": "Info", "severity_number": 10}, "severity_number", 10),
        ({"level": 17}, "severity_number", 17),
        ({"level": 17}, "severity_text", None),
        ({"level": 99}, "severity_text", "99"),
        ({"service": "api"}, "service", "api"),
        ({"service.name": "api"}, "service", "api"),
        ({"app": "api"}, "service", "api"),
        ({"msg": "hello"}, "message", "hello"),
        ({"log": "hello"}, "message", "hello"),
        ({"body": {"k": 1}}, "message", '{"k":1}'),
        ({"hostname": "h1"}, "host", "h1"),
        ({"traceId": "ab", "spanId": "cd"}, "trace_id", "ab"),
        ({"span.id": "cd"}, "span_id", "cd"),
        ({"message": "m", "msg": "other"}, "attributes", '{"msg":"other"}'),
        ({"a": {"b": [1, 2.5, None]}, "level": "info"}, "attributes", '{"a":{"b":[1,2.5,null]}}'),
        ({"message": "only"}, "attributes", None),
    ],
)
def test_default_field_mapping(line: dict[str, Any], column: str, expected: object) -> None:
    assert one_row(line)[column] == expected
    assert_same_as_reference([record([orjson.dumps(line)])])


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        # Filebeat and Elastic Agent (ECS): host and service are objects.
        (
            {
                "host": {"name": "fb-host", "os": {"family": "debian"}},
                "service": {"name": "fb-svc"},
            },
            {
                "host": "fb-host",
                "service": "fb-svc",
                "attributes": '{"host":{"os":{"family":"debian"}}}',
            },
        ),
        ({"host": {"name": "only-name"}}, {"host": "only-name", "attributes": None}),
        # An object without a name is kept whole, as any other value.
        ({"host": {"ip": "10.0.0.1"}}, {"host": '{"ip":"10.0.0.1"}', "attributes": None}),
        # A string host or service is taken as it is (loggen, syslog, most agents).
        ({"host": "h1", "hostname": "h2"}, {"host": "h1", "attributes": '{"hostname":"h2"}'}),
        ({"service": "api", "app": "x"}, {"service": "api", "attributes": '{"app":"x"}'}),
    ],
)
def test_ecs_host_and_service_objects_map_their_name(
    line: dict[str, Any], expected: dict[str, object]
) -> None:
    row = one_row(line)
    assert {k: row[k] for k in expected} == expected
    assert_same_as_reference([record([orjson.dumps(line)])])


def test_time_outside_window_falls_back_to_arrival_and_keeps_original() -> None:
    row = one_row({"timestamp": "2020-01-01T00:00:00Z", "message": "old"})
    assert row["timestamp"] == datetime.fromtimestamp(ARRIVAL / 1e6, UTC)
    assert orjson.loads(row["attributes"]) == {"timestamp": "2020-01-01T00:00:00Z"}


def test_unparseable_time_falls_back_to_arrival_and_keeps_original() -> None:
    row = one_row({"time": "yesterday"})
    assert row["timestamp"] == datetime.fromtimestamp(ARRIVAL / 1e6, UTC)
    assert orjson.loads(row["attributes"]) == {"time": "yesterday"}


def test_service_defaults_to_batch_service_then_log_group_then_unknown() -> None:
    assert one_row({"m": 1}, service="svc", log_group="/aws/lambda/x")["service"] == "svc"
    assert one_row({"m": 1}, log_group="/aws/lambda/x")["service"] == "/aws/lambda/x"
    assert one_row({"m": 1})["service"] == "unknown"


def test_lineage_columns_number_lines_inside_a_record() -> None:
    rec = DecodedRecord(
        RecordMeta("shardId-7", 42, ARRIVAL),
        (LineBatch(b'{"a":1}\n{"a":2}', 2, source="kpl"), LineBatch(b'{"a":3}', 1, observed_us=5)),
    )
    rows = assert_same_as_reference([rec]).to_pylist()
    assert [r["kinesis_sub_sequence"] for r in rows] == [0, 1, 2]
    assert {r["kinesis_sequence_number"] for r in rows} == {"42"}
    assert [r["source"] for r in rows] == ["kpl", "kpl", None]


def test_a_line_that_is_not_an_object_is_unmapped_by_itself() -> None:
    """Its record's other lines land with their own sub-sequences; only a record whose
    batches do not hold the lines they declare is unmapped whole."""
    good = record([b'{"message":"ok"}'], seq=1)
    not_object = record([b"[1,2]", b'{"message":"also ok"}'], seq=2)
    not_json = record([b"{nope"], seq=3)
    wrong_count = DecodedRecord(RecordMeta("s", 4, ARRIVAL, ""), (LineBatch(b'{"a":1}', 2),))
    table = assert_same_as_reference([good, not_object, not_json, wrong_count])
    assert table.column("message").to_pylist() == ["ok", "also ok"]
    assert table.column("kinesis_sub_sequence").to_pylist() == [0, 1]
    _, bad = build_table([good, not_object, not_json, wrong_count], MAPPING)
    assert [(u.record.meta.sequence_number, u.line, u.data) for u in bad] == [
        (2, 0, b"[1,2]"),
        (3, 0, b"{nope"),
        (4, None, b'{"a":1}'),
    ]
    assert bad[0].reason == "not a JSON object"
    assert bad[1].reason.startswith("not JSON: ")
    assert bad[2].reason == "batch declares 2 lines but holds 1"


def test_type_conflicts_between_lines_never_fail_the_batch() -> None:
    lines = [
        {"level": 9, "message": {"nested": True}, "severity_number": True},
        {"level": "warn", "message": 12, "severity_number": 10**12},
        {"level": None, "message": None, "host": ["a"], "timestamp": {"x": 1}},
        {"level": 3.5, "service": 7, "trace_id": False, "severity_number": 3},
    ]
    table = assert_same_as_reference([record([orjson.dumps(x) for x in lines])])
    assert table.column("severity_number").to_pylist() == [9, 13, None, 3]
    assert table.column("message").to_pylist() == ['{"nested":true}', "12", None, None]


def test_realistic_generated_lines_match_the_specification_byte_for_byte() -> None:
    lines = ndjson_lines(2000, seed=3)
    records = [record(lines[i : i + 50], seq=i) for i in range(0, 2000, 50)]
    fast = assert_same_as_reference(records)
    ref, _ = build_table_reference(records, MAPPING)
    assert fast.equals(ref)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(json_object, min_size=1, max_size=6))
def test_any_json_objects_map_exactly_like_the_specification(objs: list[dict[str, Any]]) -> None:
    assert_same_as_reference([record([orjson.dumps(o) for o in objs])])


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(json_object)
def test_any_json_object_round_trips_into_columns_and_attributes(obj: dict[str, Any]) -> None:
    """Nothing is lost: the original object is rebuilt from its row (mapped value or attributes)."""
    row = one_row(obj)
    rest = orjson.loads(row["attributes"]) if row["attributes"] else {}
    original = orjson.loads(orjson.dumps(obj))
    for key, value in original.items():
        if key in rest:
            assert rest[key] == value
            continue
        mapped = [
            row[c]
            for c in (
                "severity_text",
                "severity_number",
                "service",
                "message",
                "host",
                "trace_id",
                "span_id",
            )
        ]
        if key in MAPPING.time:
            assert (
                row["timestamp"] != datetime.fromtimestamp(ARRIVAL / 1e6, UTC) or value is not None
            )
            continue
        text = value if isinstance(value, str) else orjson.dumps(value).decode()
        # An empty service name means "none given" (the batch default applies), by design.
        empty_service = key in MAPPING.service and value == ""
        assert value is None or value in mapped or text in mapped or empty_service, (
            key,
            value,
            row,
        )


def test_custom_mapping_is_honoured() -> None:
    custom = FieldMapping(message=("text",), service=("component",), time=("when",))
    line = orjson.dumps(
        {"text": "t", "component": "c", "when": "2026-11-20T08:00:00Z", "message": "kept"}
    )
    table = assert_same_as_reference([record([line])], custom)
    row = table.to_pylist()[0]
    assert (row["message"], row["service"]) == ("t", "c")
    assert orjson.loads(row["attributes"]) == {"message": "kept"}


def test_dotted_names_that_reach_into_nested_objects_match_the_specification() -> None:
    """Whether ``log.level`` matches depends on the value of ``log``: such lines take the
    per-line path, mixed in a chunk with lines mapped in bulk."""
    lines = [
        {"log": {"level": "warn", "file": "a.py"}, "message": "m"},
        {"log": {"level": "warn"}, "level": "info"},
        {"log": {"level": "debug"}},
        {"log": "text only", "msg": "kept"},
        {"log": {"other": 1}},
        {"host": {"name": "h1"}, "service": {"name": "api"}, "trace": {"id": "t"}},
        {"service.name": "dotted", "host.name": "h2", "span": {"id": 7}},
        {"level": "error", "message": "plain", "severity_number": 2**40},
    ]
    records = [record([orjson.dumps(x) for x in lines], seq=s) for s in range(3)]
    assert_same_as_reference(records)


TIME_VALUES: list[object] = [
    "2026-11-20T08:00:00Z",
    "2026-11-20T08:00:00.5Z",
    "2026-11-20T08:00:00.123456+01:00",
    "2026-11-20T08:00:00.1234567Z",
    "2026-11-20T08:00:00,25Z",
    "2026-11-20T08:00:00",
    "2026-11-20 08:00:00Z",
    " 2026-11-20T08:00:00Z ",
    "2026-11-20t08:00:00z",
    "2026-02-30T08:00:00Z",
    "2026-11-20T24:00:00Z",
    "2026-11-20T08:00:00+24:00",
    "0000-11-20T08:00:00Z",
    "1795161600.5",
    "-1",
    "nan",
    1795161600,
    1795161600.4999995,
    1795161600123,
    1795161600500.5,
    1795161600123456,
    1795161600123456789,
    2**64 - 1,
    99999999999.99999,
    1e14 - 0.5,
    1e17 - 64,
    1e300,
    -1,
    0,
    True,
    None,
    [1],
]


def test_every_time_format_parses_like_the_specification() -> None:
    """Zoned RFC 3339 strings and epoch numbers are parsed in bulk; each must land exactly
    where ``parse_time_us`` puts it, including the window and unparseable fallbacks."""
    lines = [orjson.dumps({key: value, "m": 1}) for value in TIME_VALUES for key in ("ts", "date")]
    assert_same_as_reference([record(lines)])
    for value in TIME_VALUES:  # alone in its chunk, so one odd value cannot hide another
        assert_same_as_reference([record([orjson.dumps({"timestamp": value})])])


def test_a_time_key_that_is_also_a_candidate_elsewhere_is_mapped_like_the_specification() -> None:
    custom = FieldMapping(time=("ts", "log"), message=("ts", "log.level", "msg"))
    lines = [
        {"ts": "2026-11-20T08:00:00Z", "msg": "a"},
        {"ts": "yesterday", "msg": "b"},
        {"log": {"level": "warn"}, "msg": "c"},
        {"log": 1795161600, "msg": "d"},
    ]
    assert_same_as_reference([record([orjson.dumps(x) for x in lines])], custom)


def test_bad_lines_inside_a_large_flush_are_unmapped_in_record_order() -> None:
    lines = ndjson_lines(70 * 80, seed=4)
    records = [record(lines[i * 70 : (i + 1) * 70], seq=i) for i in range(80)]
    records[50] = record([lines[0], b"[1]"], seq=50)
    records[10] = record([b"{nope"], seq=10)
    records[70] = DecodedRecord(RecordMeta("shardId-000", 70, ARRIVAL), (LineBatch(b"{}", 2),))
    assert_same_as_reference(records)
    table, bad = build_table(records, MAPPING)
    assert [(u.record.meta.sequence_number, u.line) for u in bad] == [(10, 0), (50, 1), (70, None)]
    assert table.num_rows == 77 * 70 + 1


def test_lines_whose_keys_never_repeat_match_the_specification() -> None:
    lines = [
        orjson.dumps({f"k{i}": i, "level": "info", "message": "m", f"tail{i % 7}": None})
        for i in range(3000)
    ]
    records = [record(lines[i : i + 100], seq=i) for i in range(0, 3000, 100)]
    assert_same_as_reference(records)


@pytest.mark.parametrize("offset_ns", [-250_000_000, -1, -999_999_001])
def test_integer_nanosecond_epochs_become_exact_microseconds(offset_ns: int) -> None:
    # A float near 1.7e18 is 256 ns coarse: OTLP timeUnixNano used to land 1 µs early.
    ns = ARRIVAL * 1000 + offset_ns
    expected = datetime.fromtimestamp(0, UTC) + timedelta(microseconds=ns // 1000)
    for value in (ns, str(ns)):
        assert one_row({"timestamp": value, "message": "x"})["timestamp"] == expected, value
    assert_same_as_reference([record([orjson.dumps({"ts": ns}), orjson.dumps({"ts": str(ns)})])])
