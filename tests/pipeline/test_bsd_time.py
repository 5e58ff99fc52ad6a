"""RFC 3164 syslog stamps have no year: it comes from the record's Kinesis arrival time,
the year closest to it (a December line arriving in January is last year's), the same on
every replay."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from service.decode.types import DecodedRecord, LineBatch, RecordMeta
from service.pipeline.config import load_pipelines
from service.pipeline.parsers import PARSERS
from service.pipeline.parsers.bsd_time import bsd_times
from service.schema import TIMESTAMP
from service.sink.plan import Layout, plan_flush
from service.sink.rules import FieldMapping


def at(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def times(stamps: list[str | None], arrivals: list[datetime]) -> list[datetime | None]:
    arrival = pa.array(arrivals, TIMESTAMP)
    return bsd_times(pa.array(stamps, pa.string()), arrival).to_pylist()


def test_the_year_is_the_arrivals_when_the_stamp_is_near_it() -> None:
    assert times(["Oct 11 22:14:15", "Oct  1 02:00:00"], [at(2026, 10, 11, 22, 14, 20)] * 2) == [
        at(2026, 10, 11, 22, 14, 15),
        at(2026, 10, 1, 2),
    ]


def test_a_december_line_arriving_in_january_belongs_to_the_year_before() -> None:
    assert times(["Dec 31 23:59:58"], [at(2027, 1, 1, 0, 0, 3)]) == [at(2026, 12, 31, 23, 59, 58)]


def test_a_january_line_from_a_clock_ahead_arriving_on_new_years_eve_is_next_year() -> None:
    assert times(["Jan  1 00:00:02"], [at(2026, 12, 31, 23, 59, 59)]) == [at(2027, 1, 1, 0, 0, 2)]


def test_the_29th_of_february_is_never_moved_to_another_day() -> None:
    # 2027 has no 29 February: the leap year nearest the arrival (2028) is taken, never 1 March.
    assert times(["Feb 29 10:00:00"], [at(2027, 3, 1)]) == [at(2028, 2, 29, 10)]
    assert times(["Feb 29 10:00:00", None], [at(2024, 2, 29)] * 2) == [at(2024, 2, 29, 10), None]


def _syslog_flush(arrival_us: int) -> pa.Table:
    lines = [
        {"message": "<34>Dec 31 23:59:58 gw su: 'su root' failed", "service": "gw"},
        {"message": "<34>1 2026-12-31T23:59:59.000Z gw su - ID47 - modern", "service": "gw"},
    ]
    rec = DecodedRecord(
        RecordMeta("shardId-000", 5, arrival_us),
        (LineBatch(b"\n".join(orjson.dumps(x) for x in lines), len(lines)),),
    )
    document = '[[pipeline]]\nname = "sys"\nparse = "syslog"\ntable = "sys"\n'
    plan = plan_flush(
        "shardId-000", [rec], [], Layout("s", pipelines=load_pipelines(document)), FieldMapping()
    )
    assert len(plan.objects) == 1
    return pq.read_table(io.BytesIO(plan.objects[0].body))


def test_a_flush_reads_the_rfc3164_year_from_the_records_arrival_and_never_stores_it() -> None:
    arrival = int(at(2027, 1, 1, 0, 0, 4).timestamp() * 1_000_000)
    table = _syslog_flush(arrival)
    assert table.column("time").to_pylist() == [
        at(2026, 12, 31, 23, 59, 58),
        at(2026, 12, 31, 23, 59, 59),
    ]
    assert table.column("parse_error").to_pylist() == [None, None]
    assert "_arrival" not in table.column_names
    assert _syslog_flush(arrival) == table  # a replay reads the same year


def test_without_arrival_times_an_rfc3164_time_stays_null() -> None:
    result = PARSERS["syslog"](pa.array(["<34>Oct 11 22:14:15 mymachine su: failed"]))
    assert result.columns["time"].to_pylist() == [None]


def test_only_a_parser_or_condition_that_reads_arrival_times_gets_them() -> None:
    # The writer adds the working column ``_arrival`` to the routed table only then.
    alb = '[[pipeline]]\nname = "a"\nparse = "alb"\ntable = "a"\n'
    syslog = '[[pipeline]]\nname = "s"\nparse = "syslog"\ntable = "s"\n'
    named = '[[pipeline]]\nname = "n"\nmatch = "_arrival is not null"\ntable = "n"\n'
    assert not load_pipelines(alb).reads_arrival()
    assert load_pipelines(syslog).reads_arrival()
    assert load_pipelines(alb + named).reads_arrival()
