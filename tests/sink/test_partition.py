"""Event-time partitioning: the arrival-time fallback, the cardinality guard, the template."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pyarrow as pa
import pytest

from service.decode.types import DecodedRecord, LineBatch, RecordMeta
from service.sink.partition import (
    OTHER_SERVICE,
    PartitionTemplate,
    guard_services,
    hour_path,
    safe_services,
)
from service.sink.plan import Layout, plan_flush
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
    guarded = guard_services(services, hours, limit=3).to_pylist()
    assert guarded == ["a"] * 5 + ["b"] * 3 + [OTHER_SERVICE] * 4  # c/d tie: broken by name


def test_guard_overflow_keeps_the_original_service_in_attributes() -> None:
    lines = [{"service": f"svc-{i % 50}", "message": str(i), "k": i} for i in range(500)]
    plan = plan_flush(
        "shardId-1", records(lines), [], Layout("s", max_partitions=5), FieldMapping()
    )
    parts = {o.partition for o in plan.objects}
    assert len(parts) == 5 and any(OTHER_SERVICE in p for p in parts)
    assert plan.rows == 500


def test_template_is_configurable_and_validated() -> None:
    tpl = PartitionTemplate("service={service}/dt={date}")
    assert hour_path(0, "x", tpl) == "service=x/dt=1970-01-01"
    with pytest.raises(ValueError, match="partition_template"):
        PartitionTemplate("year={year}")
    keys = data_keys([{"timestamp": "2026-11-20T07:15:00Z", "service": "api"}], template=tpl)
    assert keys[0].startswith("logs/service=api/dt=2026-11-20/")
