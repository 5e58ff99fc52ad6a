"""Event-time partitioning: the arrival-time fallback, the cardinality guard, the template."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.decode.types import DecodedRecord, LineBatch, RecordMeta
from service.errors import DecodeError
from service.sink.opened import HOUR_US, OpenedPartitions
from service.sink.order import partition_order
from service.sink.partition import (
    OTHER_SERVICE,
    PartitionTemplate,
    guard_partitions,
    hour_path,
    safe_services,
)
from service.sink.plan import (
    FlushPlan,
    Layout,
    plan_document,
    plan_flush,
    plan_from_document,
)
from service.sink.rules import FieldMapping

ARRIVAL = int(datetime(2026, 11, 20, 9, 30, tzinfo=UTC).timestamp() * 1e6)


def records(lines: list[dict[str, object]], per_record: int = 10) -> list[DecodedRecord]:
    out = []
    for seq, start in enumerate(range(0, len(lines), per_record), start=1):
        chunk = [orjson.dumps(x) for x in lines[start : start + per_record]]
        out.append(
            DecodedRecord(
                RecordMeta("shardId-1", seq, ARRIVAL), (LineBatch(b"\n".join(chunk), len(chunk)),)
            )
        )
    return out


def data_keys(lines: list[dict[str, object]], **layout: object) -> list[str]:
    plan = plan_flush("shardId-1", records(lines), [], Layout("s", **layout), FieldMapping())  # type: ignore[arg-type]
    return [o.key for o in plan.objects if o.key.endswith(".parquet")]


def test_event_time_picks_the_partition() -> None:
    keys = data_keys([{"timestamp": "2026-11-20T07:15:00Z", "service": "api"}])
    assert keys == ["logs/dt=2026-11-20/hour=07/service=api/s-shardId-1-1-1.parquet"]


@pytest.mark.parametrize("when", ["garbage", "2001-01-01T00:00:00Z", "2030-01-01T00:00:00Z", None])
def test_missing_bad_or_out_of_window_time_falls_back_to_arrival(when: object) -> None:
    line = {"service": "api"} if when is None else {"timestamp": when, "service": "api"}
    assert data_keys([line])[0].startswith("logs/dt=2026-11-20/hour=09/service=api/")


def test_unsafe_service_names_become_one_path_segment() -> None:
    got = safe_services(pa.array(["a/b=c d", "..x..", "", "ok-1.2_3"])).to_pylist()
    assert got == ["a_b_c_d", "x", "unknown", "ok-1.2_3"]


def test_guard_keeps_the_busiest_partitions_and_sends_the_rest_to_other() -> None:
    services = pa.array(["a"] * 5 + ["b"] * 3 + ["c"] * 2 + ["d"] * 2)
    hours = pa.array([1] * 12, pa.int64())
    guarded, _ = guard_partitions(services, hours, limit=3)
    assert (
        guarded.to_pylist() == ["a"] * 5 + ["b"] * 3 + [OTHER_SERVICE] * 4
    )  # c/d tie: broken by name


def test_guard_overflow_keeps_the_original_service_in_attributes() -> None:
    lines = [{"service": f"svc-{i % 50}", "message": str(i), "k": i} for i in range(500)]
    plan = plan_flush(
        "shardId-1", records(lines), [], Layout("s", max_partitions=5), FieldMapping()
    )
    parts = {o.partition for o in plan.objects}
    assert len(parts) == 5 and any(OTHER_SERVICE in p for p in parts)
    assert plan.rows == 500


def spread(hours: int, services: int) -> list[dict[str, object]]:
    """One line per (hour, service), every hour inside the 7-day window before arrival."""
    return [
        {
            "timestamp": (datetime.fromtimestamp(ARRIVAL / 1e6, UTC) - timedelta(hours=h))
            .isoformat()
            .replace("+00:00", "Z"),
            "service": f"svc-{s}",
            "message": f"{h}/{s}",
        }
        for h in range(hours)
        for s in range(services)
    ]


@pytest.mark.parametrize(("hours", "services"), [(150, 1), (150, 3), (1, 150), (40, 40)])
def test_guard_caps_partitions_of_a_flush_whatever_the_spread(hours: int, services: int) -> None:
    lines = spread(hours, services)
    plan = plan_flush(
        "shardId-1", records(lines), [], Layout("s", max_partitions=20), FieldMapping()
    )
    data = [o for o in plan.objects if o.key.endswith(".parquet")]
    assert len({o.partition for o in data}) <= 20 and len(data) <= 20
    assert plan.rows == len(lines) == sum(o.rows for o in data)
    rows = pa.concat_tables([pq.read_table(io.BytesIO(o.body)) for o in data])
    services_kept = {
        orjson.loads(a or "{}").get("service") for a in rows.column("attributes").to_pylist()
    }
    assert {f"svc-{s}" for s in range(services)} <= services_kept | {
        p.rsplit("=", 1)[1] for p in {o.partition for o in data}
    }
    assert sorted(rows.column("message").to_pylist()) == sorted(x["message"] for x in lines)


def test_guard_is_deterministic_for_the_same_records() -> None:
    lines = spread(60, 5)
    plans = [
        plan_flush("shardId-1", records(lines), [], Layout("s", max_partitions=9), FieldMapping())
        for _ in range(2)
    ]
    assert [(o.key, o.body) for o in plans[0].objects] == [
        (o.key, o.body) for o in plans[1].objects
    ]


def test_honest_overflow_stays_in_its_own_hour() -> None:
    lines = spread(2, 30)
    plan = plan_flush(
        "shardId-1", records(lines), [], Layout("s", max_partitions=10), FieldMapping()
    )
    parts = {o.partition for o in plan.objects}
    assert len(parts) <= 10
    hours = {p.split("/")[1] for p in parts if OTHER_SERVICE in p}
    assert len(hours) == 2  # each hour's overflow in that hour's __other__


def test_sanitised_service_keeps_the_original_in_attributes() -> None:
    plan = plan_flush(
        "shardId-1",
        records([{"service": "billing api/v2", "k": 1}]),
        [],
        Layout("s"),
        FieldMapping(),
    )
    (obj,) = plan.objects
    assert obj.partition.endswith("service=billing_api_v2")
    attrs = orjson.loads(pq.read_table(io.BytesIO(obj.body)).column("attributes")[0].as_py())
    assert attrs == {"k": 1, "service": "billing api/v2"}


def test_template_is_configurable_and_validated() -> None:
    tpl = PartitionTemplate("service={service}/dt={date}")
    assert hour_path(0, "x", tpl) == "service=x/dt=1970-01-01"
    with pytest.raises(ValueError, match="partition_template"):
        PartitionTemplate("year={year}")
    keys = data_keys([{"timestamp": "2026-11-20T07:15:00Z", "service": "api"}], template=tpl)
    assert keys[0].startswith("logs/service=api/dt=2026-11-20/")


# ------------------------------------------------------------ across flushes of one hour


def flush_with(lines: list[dict[str, object]], layout: Layout, seq: int = 1) -> FlushPlan:
    recs = [
        DecodedRecord(
            RecordMeta("shardId-1", seq + i, ARRIVAL), (LineBatch(orjson.dumps(line), 1),)
        )
        for i, line in enumerate(lines)
    ]
    return plan_flush("shardId-1", recs, [], layout, FieldMapping())


def test_new_names_in_every_flush_open_at_most_the_limit_in_the_hour() -> None:
    opened = OpenedPartitions()
    partitions: set[str] = set()
    for flush in range(20):
        lines = [{"service": f"t-{flush}-{n}", "message": f"{flush}/{n}"} for n in range(3)]
        plan = flush_with(lines, Layout("s", max_partitions=5, opened=opened), seq=flush * 3)
        assert plan.rows == 3 and plan.opened is not None
        opened = plan.opened
        partitions |= {o.partition for o in plan.objects}
    assert len(partitions) == 5 and len(opened) == 5
    assert sum(OTHER_SERVICE in p for p in partitions) == 1


def test_a_partition_opened_earlier_in_the_hour_stays_open() -> None:
    first = flush_with(
        [{"service": "api"}], Layout("s", max_partitions=2, opened=OpenedPartitions())
    )
    assert first.opened is not None
    later = flush_with(
        [{"service": "api"}, {"service": "new"}], Layout("s", max_partitions=2, opened=first.opened)
    )
    assert sorted(o.partition.rsplit("=", 1)[1] for o in later.objects) == [OTHER_SERVICE, "api"]


def test_a_later_arrival_hour_starts_a_new_set() -> None:
    full = OpenedPartitions(ARRIVAL // HOUR_US - 1, frozenset({b"x" * 8, b"y" * 8}))
    plan = flush_with([{"service": "api"}], Layout("s", max_partitions=2, opened=full))
    assert plan.objects[0].partition.endswith("service=api")
    assert plan.opened is not None and plan.opened.hour == ARRIVAL // HOUR_US


def test_opened_partitions_are_pinned_by_the_plan_document() -> None:
    opened = flush_with(
        [{"service": f"s{i}"} for i in range(7)],
        Layout("s", max_partitions=4, opened=OpenedPartitions()),
    ).opened
    assert opened is not None
    assert OpenedPartitions.decode(opened.encode()) == opened
    layout = Layout("s", max_partitions=4, opened=opened)
    assert plan_from_document(plan_document(layout, FieldMapping()))[0] == layout
    with pytest.raises(DecodeError):
        OpenedPartitions.decode(b"OP1" + opened.encode()[3:-3])


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            # A few adjacent hours (codes from the hours themselves) or hours far apart
            # (codes from their ranks).
            st.one_of(st.integers(-3, 3), st.integers(-(10**6), 10**6)),
            st.one_of(st.none(), st.sampled_from(["a", "B", "_x", "é", "a.b"])),
        ),
        max_size=60,
    ),
    st.booleans(),
)
def test_partition_order_is_hour_then_name_in_arrow_order_with_rows_kept_in_place(
    rows: list[tuple[int, str | None]], encoded: bool
) -> None:
    hours = pa.array([h for h, _ in rows], pa.int64())
    services = pa.array([s for _, s in rows], pa.string())
    given: pa.Array = services
    if encoded:  # a dictionary that repeats its names (sink/order.py flush_order's)
        names = ["a", "B", "_x", "é", "a.b"]
        dictionary = pa.array(names + names[::-1], pa.string())
        picks = [
            None if s is None else names.index(s) + (5 if i % 2 else 0)
            for i, (_, s) in enumerate(rows)
        ]
        indices = pa.array(
            [None if p is None else p if p < 5 else 9 - (p - 5) for p in picks], pa.int32()
        )
        given = pa.DictionaryArray.from_arrays(indices, dictionary)
        assert given.cast(pa.string()).to_pylist() == services.to_pylist()
    order, ends = partition_order(hours.to_numpy(), given)
    expected = pc.sort_indices(
        pa.table({"h": hours, "s": services}), sort_keys=[("h", "ascending"), ("s", "ascending")]
    )
    assert order.tolist() == expected.to_pylist()
    runs = [rows[i] for i in order]
    assert ends == [i + 1 for i in range(len(runs)) if i + 1 == len(runs) or runs[i] != runs[i + 1]]
