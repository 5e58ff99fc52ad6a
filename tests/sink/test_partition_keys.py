"""Any partition key in the Hive template: columns, attribute paths, escaping, the guard."""

from __future__ import annotations

import io
import unicodedata
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.consume.context import extra_columns, partition_template
from service.decode.types import DecodedRecord, LineBatch, RecordMeta
from service.errors import SettingsError
from service.settings import Settings
from service.sink.glue import partition_values
from service.sink.opened import OpenedPartitions
from service.sink.partition import attribute_value, attribute_values
from service.sink.plan import FlushPlan, Layout, plan_document, plan_flush, plan_from_document
from service.sink.rules import FieldMapping
from service.sink.template import (
    MAX_VALUE_BYTES,
    PartitionTemplate,
    escape_value,
    unescape_value,
)

ARRIVAL = int(datetime(2026, 11, 20, 9, 30, tzinfo=UTC).timestamp() * 1e6)
WHEN = "2026-11-20T07:15:00Z"
ENV = PartitionTemplate("dt={date}/hour={hour}/service={service}/env={attributes.env}")


def flush(
    lines: list[dict[str, object]],
    template: PartitionTemplate,
    max_partitions: int = 1000,
    opened: OpenedPartitions | None = None,
    **batch: str,
) -> FlushPlan:
    chunks = [lines[i : i + 10] for i in range(0, len(lines), 10)]
    records = [
        DecodedRecord(
            RecordMeta("shardId-1", seq, ARRIVAL),
            (LineBatch(b"\n".join(orjson.dumps(x) for x in c), len(c), **batch),),  # type: ignore[arg-type]
        )
        for seq, c in enumerate(chunks, start=1)
    ]
    layout = Layout("s", template=template, max_partitions=max_partitions, opened=opened)
    return plan_flush("shardId-1", records, [], layout, FieldMapping())


def partitions(plan: FlushPlan) -> list[str]:
    return sorted({o.partition for o in plan.objects if o.key.endswith(".parquet")})


def rows(plan: FlushPlan) -> list[dict[str, object]]:
    out = []
    for o in plan.objects:
        if o.key.endswith(".parquet"):
            out += pq.read_table(io.BytesIO(o.body)).to_pylist()
    return out


def test_an_attribute_path_is_a_partition_key_and_a_missing_one_is_null() -> None:
    plan = flush(
        [
            {"timestamp": WHEN, "service": "api", "env": "prod"},
            {"timestamp": WHEN, "service": "api", "env": {"tier": 1}},
            {"timestamp": WHEN, "service": "api"},
        ],
        ENV,
    )
    assert partitions(plan) == [
        "dt=2026-11-20/hour=07/service=api/env=%7B%22tier%22%3A1%7D",
        "dt=2026-11-20/hour=07/service=api/env=__null__",
        "dt=2026-11-20/hour=07/service=api/env=prod",
    ]
    # The key stays in the data too: partition values are never the only copy.
    assert '{"env":"prod"}' in {str(r["attributes"]) for r in rows(plan)}


def test_nested_attribute_paths_and_columns_escape_into_one_folder() -> None:
    template = PartitionTemplate("dt={date}/lg={log_group}/service={service}/t={attributes.k8s.ns}")
    plan = flush(
        [{"timestamp": WHEN, "service": "api", "k8s": {"ns": "../etc"}}],
        template,
        log_group="/aws/lambda/x=1",
    )
    (path,) = partitions(plan)
    assert path == "dt=2026-11-20/lg=%2Faws%2Flambda%2Fx%3D1/service=api/t=%2E.%2Fetc"
    assert partition_values(path) == ["2026-11-20", "/aws/lambda/x=1", "api", "../etc"]


def test_hostile_tenant_values_cannot_open_unbounded_prefixes() -> None:
    lines = [{"timestamp": WHEN, "service": "api", "env": f"t{i}"} for i in range(600)]
    lines += [{"timestamp": WHEN, "service": "api", "env": "prod"}] * 100
    plan = flush(lines, ENV, max_partitions=20)
    found = partitions(plan)
    assert len(found) <= 20
    assert "dt=2026-11-20/hour=07/service=__other__/env=__other__" in found
    assert "dt=2026-11-20/hour=07/service=api/env=prod" in found
    got = rows(plan)
    assert len(got) == 700  # every row written once; the overflowed ones keep their values
    envs = sorted(orjson.loads(str(r["attributes"]))["env"] for r in got)
    assert envs == sorted(str(x["env"]) for x in lines)


def test_new_tenant_values_in_every_flush_open_at_most_the_limit_in_the_hour() -> None:
    opened, seen = OpenedPartitions(), set()
    for round_ in range(5):
        lines = [{"timestamp": WHEN, "service": "api", "env": f"r{round_}-{i}"} for i in range(30)]
        plan = flush(lines, ENV, max_partitions=8, opened=opened)
        assert plan.opened is not None
        opened = plan.opened
        seen |= set(partitions(plan))
    assert len(seen) <= 8
    assert "dt=2026-11-20/hour=07/service=__other__/env=__other__" in seen


def test_replays_write_identical_objects_through_the_pinned_plan() -> None:
    lines = [{"timestamp": WHEN, "service": "api", "env": f"é/{i % 7}"} for i in range(50)]
    first = flush(lines, ENV, max_partitions=5)
    layout, _ = plan_from_document(plan_document(Layout("s", template=ENV), FieldMapping()))
    assert layout.template == ENV
    again = flush(lines, layout.template, max_partitions=5)
    assert [(o.key, o.body) for o in first.objects] == [(o.key, o.body) for o in again.objects]


@pytest.mark.parametrize(
    ("template", "complaint"),
    [
        ("dt={date}/hour={hour}", "must use {date} and {service}"),
        ("dt={date}/service={service}/log_group={log_group}", "is a data column"),
        ("dt={date}/service={service}/x-{source}", "whole value of a name={field}"),
        ("dt={date}/service={service}/t={timestamp}", "not a column or attributes"),
        ("dt={date}/service={service}/a={tenant}/b={tenant}", "names a field twice"),
    ],
)
def test_bad_templates_are_refused_with_the_reason(template: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint.replace("{", r"\{").replace("}", r"\}")):
        PartitionTemplate(template)


def test_placeholders_and_long_values_have_fixed_forms() -> None:
    assert escape_value(None) == "__null__"
    assert escape_value("") == "__empty__"
    assert escape_value("__null__") == "%5F_null__"
    assert escape_value("__other__") == "%5F_other__"
    assert escape_value("..") == "%2E."
    assert escape_value("a b\x00\n") == "a%20b%00%0A"
    long = escape_value("x" * 5000)
    assert len(long) == 100 + 1 + 16 and long[100] == "~"
    assert escape_value("x" * 5000) == long != escape_value("x" * 5001)


def _segment_is_safe(segment: str) -> bool:
    return (
        0 < len(segment.encode(errors="surrogatepass")) <= MAX_VALUE_BYTES
        and not segment.startswith(".")
        and not any(c in segment for c in "/=\\{}^[]`\"<>#|*'?:& +")
        and all(unicodedata.category(c)[0] not in "CZ" for c in segment)
    )


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(st.none(), st.text(max_size=160)), min_size=2, max_size=2, unique=True))
def test_no_escaped_value_leaves_its_folder_or_collides(values: list[str | None]) -> None:
    a, b = (escape_value(v) for v in values)
    assert _segment_is_safe(a) and _segment_is_safe(b)
    assert a != b
    for value, escaped in zip(values, (a, b), strict=True):
        if "~" not in escaped:
            assert unescape_value(escaped) == value


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=st.sampled_from("/.=%_~\x00a"), max_size=300))
def test_slashes_dots_and_escapes_never_escape_a_folder(value: str) -> None:
    escaped = escape_value(value)
    path = f"logs/env={escaped}/file.parquet"
    assert path.split("/")[1] == f"env={escaped}" and escaped not in (".", "..")
    assert _segment_is_safe(escaped)


def test_a_typed_extra_column_is_a_key_as_its_text(tmp_path: Path) -> None:
    schema = {"type": "record", "name": "X", "fields": [{"name": "tenant", "type": "int"}]}
    (tmp_path / "x.avsc").write_bytes(orjson.dumps(schema))
    settings = Settings.load(
        None,
        stream="s",
        bucket="bucket-x",
        extra_columns=tmp_path / "x.avsc",
        partition_template="dt={date}/service={service}/tenant_id={tenant}",
    )
    template = partition_template(settings)
    records = [
        DecodedRecord(
            RecordMeta("shardId-1", 1, ARRIVAL),
            (LineBatch(b'{"timestamp":"2026-11-20T07:15:00Z","tenant":42}\n{"tenant":"x"}', 2),),
        )
    ]
    mapping = FieldMapping(extra_columns=extra_columns(settings))
    plan = plan_flush("shardId-1", records, [], Layout("s", template=template), mapping)
    assert partitions(plan) == [
        "dt=2026-11-20/service=unknown/tenant_id=42",
        "dt=2026-11-20/service=unknown/tenant_id=__null__",
    ]


@pytest.mark.parametrize(
    ("template", "says"),
    [
        ("dt={date}/service={service}/t={tenant}", "{tenant} is neither a column nor an extra"),
        ("dt={date}/hour={hour}", "must use {date} and {service}"),
    ],
)
def test_a_bad_template_stops_the_start_in_one_line(template: str, says: str) -> None:
    settings = Settings.load(None, stream="s", bucket="bucket-x", partition_template=template)
    with pytest.raises(SettingsError) as err:
        partition_template(settings)
    text = str(err.value)
    assert text.startswith("setting TIDEWAY_PARTITION_TEMPLATE is invalid: ") and says in text
    assert "\n" not in text


def test_service_keeps_its_older_segment_shapes() -> None:
    template = PartitionTemplate("svc-{service}/{date}")
    plan = flush([{"timestamp": WHEN, "service": "a/b"}], template)
    assert partitions(plan) == ["svc-a_b/2026-11-20"]


# Documents a template's attribute key may or may not be in, and ways of writing it.
ATTRIBUTE_DOCUMENTS = st.sampled_from(
    [
        '{"http":{"status":200},"region":"eu-west-1"}',
        '{"stack":"at a\\nat b","note":"say \\"env\\""}',
        '{"env":"prod"}',
        '{"env":{"tier":"gold"},"x":1}',
        '{"env.tier":"flat"}',
        '{"\\u0065nv":{"tier":"escaped"}}',
        '{"a":{"env":"nested, not top level"}}',
        '{"env":null}',
        '"not an object"',
    ]
)


@settings(max_examples=80, deadline=None)
@given(
    st.lists(ATTRIBUTE_DOCUMENTS, min_size=1, max_size=60),
    st.integers(0, 200),
    st.sampled_from([("env",), ("env", "tier")]),
)
def test_attribute_values_are_each_documents_value_whichever_way_they_are_found(
    documents: list[str], absent: int, path: tuple[str, ...]
) -> None:
    # Documents that cannot hold the key are skipped undecoded: with the key in none, a
    # few or most of a flush's documents, each value is still the one decoding gives.
    column = documents + [f'{{"n":{i}}}' for i in range(absent)]
    expected = [attribute_value(d, path) for d in column]
    assert attribute_values(pa.array(column, pa.string()), path) == expected


def test_an_escaped_attribute_key_is_found() -> None:
    documents = ['{"\\u0074enant":"acme"}'] + [f'{{"n":{i}}}' for i in range(50)]
    assert attribute_values(pa.array(documents), ("tenant",))[0] == "acme"
