"""Extra typed columns declared by an Avro record schema (TIDEWAY_EXTRA_COLUMNS): types,
conflicts and nulls, the fast path held to the specification, loading, and S3 end to end."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.consume.runner import extra_columns
from service.errors import SettingsError
from service.loggen import ndjson_lines
from service.resources import setup
from service.schema import TIMESTAMP, extra_fields
from service.settings import Settings
from service.sink.build import build_table
from service.sink.mapping import build_table_reference
from service.sink.plan import Layout, plan_flush
from service.sink.rules import FieldMapping
from tests.builders import MAPPED_NAMES, assert_same_as_reference, json_value, record
from tests.conftest import Aws, Server, drain, read_table
from tests.ingest_support import post_body as post


def avro(*fields: dict[str, Any]) -> dict[str, Any]:
    return {"type": "record", "name": "Extra", "fields": list(fields)}


EXTRA = avro(
    {"name": "user", "type": ["null", "string"], "aliases": ["usr", "msg"]},
    {"name": "status", "type": "int"},
    {"name": "bytes", "type": "long"},
    {"name": "ratio", "type": "float"},
    {"name": "latency", "type": ["double", "null"]},
    {"name": "cached", "type": "boolean"},
    {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    {"name": "seen", "type": ["null", {"type": "long", "logicalType": "timestamp-micros"}]},
)
MAPPING = FieldMapping(extra_columns=extra_fields(EXTRA))
AT = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)


def row(obj: dict[str, Any]) -> dict[str, Any]:
    records = [record([orjson.dumps(obj)])]
    assert_same_as_reference(records, MAPPING)
    table, bad = build_table(records, MAPPING)
    assert not bad
    return dict(table.to_pylist()[0])


def attributes(r: dict[str, Any]) -> dict[str, Any]:
    return orjson.loads(r["attributes"]) if r["attributes"] else {}


def test_extra_columns_are_typed_nullable_and_follow_the_canonical_ones() -> None:
    table, _ = build_table([record([b'{"user":"u"}'])], MAPPING)
    names = table.schema.names
    assert names[names.index("kinesis_sub_sequence") + 1 :] == [
        "user",
        "status",
        "bytes",
        "ratio",
        "latency",
        "cached",
        "at",
        "seen",
        "service",
    ]
    types = {f.name: f.type for f in table.schema}
    assert types["status"] == pa.int32() and types["bytes"] == pa.int64()
    assert types["ratio"] == pa.float32() and types["latency"] == pa.float64()
    assert types["cached"] == pa.bool_() and types["at"] == TIMESTAMP == types["seen"]
    assert all(table.schema.field(n).nullable for n in names[-9:-1])
    assert table.schema.field("user").metadata is None  # aliases never reach the files


@pytest.mark.parametrize(
    ("column", "value", "expected"),
    [
        ("user", "ana", "ana"),
        ("status", 200, 200),
        ("status", -(2**31), -(2**31)),
        ("bytes", 2**40, 2**40),
        ("bytes", -(2**63), -(2**63)),
        ("ratio", 0.5, 0.5),
        ("ratio", 3, 3.0),
        ("ratio", 0.1, 0.10000000149011612),  # rounded to float32, as stored
        ("latency", 12.25, 12.25),
        ("latency", 7, 7.0),
        ("cached", True, True),
        ("cached", False, False),
        ("at", "2026-11-20T08:00:00Z", AT),
        ("at", "2026-11-20T09:00:00+01:00", AT),
        ("at", int(AT.timestamp() * 1000), AT),
        ("at", AT.timestamp(), AT),
        ("seen", int(AT.timestamp() * 10**6), AT),
        ("seen", str(int(AT.timestamp())), AT),
        ("at", "2020-01-01T00:00:00Z", datetime(2020, 1, 1, tzinfo=UTC)),  # no window here
    ],
)
def test_a_value_of_the_declared_type_fills_the_column_and_leaves_attributes(
    column: str, value: Any, expected: Any
) -> None:
    r = row({column: value, "keep": 1})
    assert r[column] == expected
    assert attributes(r) == {"keep": 1}


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("user", 5),
        ("user", {"id": 1}),
        ("status", "200"),
        ("status", True),
        ("status", 2**31),
        ("status", 1.5),
        ("status", 2.0),
        ("bytes", 2**63),
        ("bytes", 2**64 - 1),
        ("bytes", False),
        ("ratio", 1e39),
        ("ratio", "0.5"),
        ("ratio", True),
        ("latency", [1.0]),
        ("latency", False),
        ("cached", 1),
        ("cached", "true"),
        ("at", "yesterday"),
        ("at", True),
        ("at", -5),
        ("at", {"t": 1}),
        ("seen", 1e300),
    ],
)
def test_a_value_that_does_not_fit_gives_null_and_stays_in_attributes(
    column: str, value: Any
) -> None:
    r = row({column: value})
    assert r[column] is None
    assert attributes(r) == {column: value}


def test_absent_and_null_give_null_and_a_present_null_is_taken() -> None:
    absent = row({"other": 1})
    assert all(absent[c] is None for c in ("user", "status", "at", "cached"))
    nulls = row({"status": None, "at": None, "other": 1})
    assert nulls["status"] is None and nulls["at"] is None
    assert attributes(nulls) == {"other": 1}


def test_aliases_feed_the_column_first_present_wins() -> None:
    assert row({"usr": "a"})["user"] == "a"
    r = row({"usr": "a", "user": "b"})
    assert r["user"] == "b" and attributes(r) == {"usr": "a"}
    # The first present key decides; when it does not fit, later aliases are not tried.
    r = row({"user": 1, "usr": "a"})
    assert r["user"] is None and attributes(r) == {"user": 1, "usr": "a"}


def test_canonical_columns_take_their_keys_before_extra_columns() -> None:
    r = row({"msg": "hello"})  # "msg" is a message candidate and an alias of "user"
    assert r["message"] == "hello" and r["user"] is None
    r = row({"message": "hello", "msg": "ana"})
    assert r["message"] == "hello" and r["user"] == "ana" and r["attributes"] is None


def test_type_conflicts_between_lines_never_fail_the_batch() -> None:
    lines = [{"status": 200}, {"status": "oops"}, {"status": 2**40}, {"status": None}, {}]
    records = [record([orjson.dumps(o) for o in lines])]
    table = assert_same_as_reference(records, MAPPING)
    assert table.column("status").to_pylist() == [200, None, None, None, None]
    assert table.column("attributes").to_pylist() == [
        None,
        '{"status":"oops"}',
        '{"status":1099511627776}',
        None,
        None,
    ]


def test_no_extra_columns_gives_the_canonical_table() -> None:
    records = [record([b'{"status":200}'])]
    plain, _ = build_table(records, FieldMapping())
    assert plain.column("attributes").to_pylist() == ['{"status":200}']
    assert "status" not in plain.schema.names


EXTRA_NAMES = ["user", "usr", "status", "bytes", "ratio", "latency", "cached", "at", "seen"]
extra_value = (
    json_value
    | st.integers(-(2**31) - 2, 2**31 + 2)
    | st.floats(width=32, allow_nan=False, allow_infinity=False)
    | st.sampled_from(["2026-11-20T08:00:00Z", "1795161600", "2026-11-20 08:00", "", "x"])
    | st.integers(0, 2 * 10**18)
)
extra_object = st.dictionaries(
    st.sampled_from(MAPPED_NAMES + EXTRA_NAMES) | st.text(max_size=6), extra_value, max_size=8
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(extra_object, min_size=1, max_size=6))
def test_any_json_objects_fill_extra_columns_exactly_like_the_specification(
    objs: list[dict[str, Any]],
) -> None:
    records = [record([orjson.dumps(o) for o in objs])]
    fast = assert_same_as_reference(records, MAPPING)
    ref, _ = build_table_reference(records, MAPPING)
    assert fast.equals(ref)


def test_flushes_with_extra_columns_are_byte_identical_to_the_specification() -> None:
    lines = ndjson_lines(3000, seed=8)
    extra = extra_fields(
        avro(
            {"name": "http_status", "type": ["null", "int"], "aliases": ["status"]},
            {"name": "user_id", "type": ["null", "string"]},
            {"name": "duration_ms", "type": ["null", "double"]},
        )
    )
    mapping = FieldMapping(extra_columns=extra)
    records = [record(lines[i : i + 50], seq=i) for i in range(0, 3000, 50)]
    fast = assert_same_as_reference(records, mapping)
    ref, _ = build_table_reference(records, mapping)
    assert fast.equals(ref)
    plan = plan_flush("shardId-000", records, [], Layout("s"), mapping)
    again = plan_flush("shardId-000", list(records), [], Layout("s"), mapping)
    assert [(o.key, o.body) for o in plan.objects] == [(o.key, o.body) for o in again.objects]
    first = pq.read_table(io.BytesIO(plan.objects[0].body))
    assert first.schema.names[-3:] == ["http_status", "user_id", "duration_ms"]


def schema_file(tmp_path: Path, schema: Any) -> Path:
    path = tmp_path / "extra.avsc"
    path.write_bytes(schema if isinstance(schema, bytes) else orjson.dumps(schema))
    return path


def configured(path: Path, **more: Any) -> Settings:
    return Settings.load(None, stream="s", bucket="bucket-x", extra_columns=path, **more)


def test_the_loader_reads_the_configured_schema(tmp_path: Path) -> None:
    got = extra_columns(configured(schema_file(tmp_path, EXTRA)))
    assert got == extra_fields(EXTRA)
    assert extra_columns(Settings.load(None, stream="s", bucket="bucket-x")) == ()


@pytest.mark.parametrize(
    ("schema", "says"),
    [
        (b"{not json", "cannot read schema"),
        (avro({"type": "int"}), "invalid Avro schema"),
        (avro({"name": "n", "type": "nosuch"}), "invalid Avro schema"),
        ({"type": "record", "name": "R", "fields": []}, "declares no fields"),
        ("string", "must be an Avro record schema"),
        ({"type": "array", "items": "int"}, "must be an Avro record schema"),
        (avro({"name": "n", "type": "bytes"}), "unsupported type"),
        (avro({"name": "n", "type": ["null", "int", "string"]}), "unsupported type"),
        (avro({"name": "n", "type": {"type": "int", "logicalType": "date"}}), "unsupported type"),
        (avro({"name": "n", "type": {"type": "array", "items": "int"}}), "unsupported type"),
        (avro({"name": "message", "type": "string"}), "collides"),
        (avro({"name": "kinesis_sub_sequence", "type": "int"}), "collides"),
        (avro({"name": "dt", "type": "string"}), "collides"),
        (avro({"name": "hour", "type": "int"}), "collides"),
        (avro({"name": "service", "type": "string"}), "collides"),
        (avro({"name": "_hour", "type": "long"}), "collides"),
    ],
)
def test_a_bad_schema_is_refused_at_start_in_one_line(
    tmp_path: Path, schema: Any, says: str
) -> None:
    with pytest.raises(SettingsError) as err:
        extra_columns(configured(schema_file(tmp_path, schema)))
    text = str(err.value)
    assert text.startswith("setting TIDEWAY_EXTRA_COLUMNS is invalid: ") and says in text
    assert "\n" not in text


def test_a_name_taken_by_a_custom_partition_key_is_refused(tmp_path: Path) -> None:
    path = schema_file(tmp_path, avro({"name": "region", "type": "string"}))
    assert extra_columns(configured(path))
    custom = configured(path, partition_template="region={service}/dt={date}/hour={hour}")
    with pytest.raises(SettingsError, match=r"TIDEWAY_EXTRA_COLUMNS.*'region' collides"):
        extra_columns(custom)


def test_a_missing_schema_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"TIDEWAY_EXTRA_COLUMNS.*does not exist"):
        configured(tmp_path / "nope.avsc")
    ok = configured(schema_file(tmp_path, EXTRA))
    gone = ok.model_copy(update={"extra_columns": tmp_path / "gone.avsc"})
    with pytest.raises(SettingsError, match=r"TIDEWAY_EXTRA_COLUMNS.*cannot read schema"):
        extra_columns(gone)


async def test_extra_columns_land_typed_in_s3(
    aws: Aws, ready: Settings, server: Server, tmp_path: Path
) -> None:
    path = schema_file(
        tmp_path,
        avro(
            {"name": "status", "type": ["null", "int"], "aliases": ["http_status"]},
            {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        ),
    )
    lines = [
        {"message": "ok", "status": 200, "at": "2026-11-20T08:00:00Z"},
        {"message": "alias", "http_status": 404},
        {"message": "odd", "status": "teapot", "at": "soon"},
    ]
    body = b"\n".join(map(orjson.dumps, lines))
    assert (await post(server.url + "/ingest", body, "application/x-ndjson"))[0] == 200
    await drain(ready, extra_columns=path)
    table = read_table(aws, ready)
    assert table.schema.field("status").type == pa.int32()
    assert table.schema.field("at").type == TIMESTAMP
    rows = {r["message"]: r for r in table.to_pylist()}
    assert rows["ok"]["status"] == 200 and rows["ok"]["at"] == AT
    assert rows["ok"]["attributes"] is None
    assert rows["alias"]["status"] == 404 and rows["alias"]["at"] is None
    assert rows["odd"]["status"] is None and rows["odd"]["at"] is None
    assert orjson.loads(rows["odd"]["attributes"]) == {"status": "teapot", "at": "soon"}


async def test_setup_defines_the_extra_columns_in_glue(
    aws: Aws, settings: Settings, tmp_path: Path
) -> None:
    path = schema_file(tmp_path, EXTRA)
    glued = settings.model_copy(
        update={"glue_database": "logsdb", "glue_table": "events", "extra_columns": path}
    )
    assert (await setup(glued))["glue_table"] == "created"
    table = aws.client("glue").get_table(DatabaseName="logsdb", Name="events")["Table"]
    columns = [(c["Name"], c["Type"]) for c in table["StorageDescriptor"]["Columns"]]
    assert columns[-8:] == [
        ("user", "string"),
        ("status", "int"),
        ("bytes", "bigint"),
        ("ratio", "float"),
        ("latency", "double"),
        ("cached", "boolean"),
        ("at", "timestamp"),
        ("seen", "timestamp"),
    ]
    assert columns[0] == ("timestamp", "timestamp")
