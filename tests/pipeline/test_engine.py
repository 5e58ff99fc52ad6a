"""Pipelines over a flush's table: first match wins, parse keeps what it cannot read,
transforms, redaction, drop and deterministic sampling, and the default table."""

from __future__ import annotations

import hashlib
import hmac
import random

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.pipeline.engine import Route, sampled
from tests.pipeline_support import flush_table, load

KEY = "0123456789abcdef"


def routes(document: str, rows: list[dict[str, object]]) -> dict[str, Route]:
    return {r.table: r for r in load(document).routes(flush_table(rows))}


def column(route: Route, name: str) -> list[object]:
    return route.columns.column(name).to_pylist()


TWO = """
[[pipeline]]
name = "waf"
match = 'log_group == "waf"'
table = "waf"

[[pipeline]]
name = "api"
match = 'service == "api"'
table = "api"
"""


def test_a_line_goes_to_the_first_pipeline_that_matches_and_the_rest_to_logs() -> None:
    out = routes(
        TWO,
        [
            {"log_group": "waf", "message": "a"},
            {"message": "b"},
            {"service": "web", "message": "c"},
            {"log_group": "waf", "service": "web", "message": "d"},
        ],
    )
    assert list(out) == ["waf", "api", "logs"]
    assert column(out["waf"], "message") == ["a", "d"]
    assert out["waf"].rows.tolist() == [0, 3]
    assert column(out["api"], "message") == ["b"]
    assert column(out["logs"], "message") == ["c"]
    assert "pipeline_version" not in out["logs"].columns.column_names  # untouched by any


def test_each_pipeline_row_says_which_document_version_wrote_it() -> None:
    version = load(TWO).version
    out = routes(TWO, [{"log_group": "waf"}, {}])
    assert column(out["waf"], "pipeline_version") == [version]
    assert column(out["api"], "pipeline_version") == [version]


def test_two_pipelines_writing_one_table_merge_in_row_order() -> None:
    doc = TWO.replace('table = "api"', 'table = "waf"')
    out = routes(doc, [{"message": "b"}, {"log_group": "waf", "message": "a"}, {"message": "c"}])
    assert list(out) == ["waf"]
    assert column(out["waf"], "message") == ["b", "a", "c"]
    assert out["waf"].rows.tolist() == [0, 1, 2]


PARSE = """
[[pipeline]]
name = "json"
parse = "json"
table = "app"
"""


def test_parsed_fields_become_typed_columns_and_unparsed_lines_keep_their_message() -> None:
    out = routes(
        PARSE,
        [
            {"message": '{"status": 503, "path": "/x", "host": "h1"}'},
            {"message": "not json at all"},
        ],
    )["app"]
    assert out.columns.schema.field("status").type == pa.int64()
    assert column(out, "status") == [503, None]
    assert column(out, "path") == ["/x", None]
    assert column(out, "host_parsed") == ["h1", None]  # ``host`` is a §4 column
    assert column(out, "message") == [
        '{"status": 503, "path": "/x", "host": "h1"}',
        "not json at all",
    ]
    assert column(out, "parse_error") == [None, "json: not a JSON object"]


def test_a_parsed_field_never_takes_the_name_of_a_column_the_writer_needs() -> None:
    line = (
        '{"hour": 3, "dt": "x", "_hour": 1, "parse_error": "e", "message_parsed": 1, "message": 2}'
    )
    out = routes(PARSE, [{"message": line}])["app"]
    names = out.columns.column_names
    assert len(names) == len(set(names))
    assert {"hour_parsed", "dt_parsed", "_hour_parsed", "parse_error_parsed"} <= set(names)
    # In the parser's column order (the stand-in sorts them): "message" comes first.
    assert column(out, "message_parsed") == [2]
    assert column(out, "message_parsed_parsed") == [1]
    assert column(out, "parse_error") == [None]


def test_a_regex_parser_takes_its_named_groups() -> None:
    doc = "[[pipeline]]\nname = 'r'\nparse = { regex = '^(?P<verb>[A-Z]+) (?P<uri>\\S+)' }\n"
    out = routes(doc, [{"message": "GET /a b"}, {"message": "nope"}])["logs"]
    assert column(out, "verb") == ["GET", None]
    assert column(out, "uri") == ["/a", None]
    assert column(out, "parse_error") == [None, "regex: no match"]


TRANSFORMS = f"""
[[pipeline]]
name = "t"
parse = "json"
table = "t"

[[pipeline.transform]]
rename = {{ status = "http_status", absent = "ignored" }}

[[pipeline.transform]]
drop = ["noise", "absent_too"]

[[pipeline.transform]]
set = {{ env = "prod", tier = 2, host = 7 }}

[[pipeline.transform]]
cast = {{ http_status = "int32", latency = "float64", when = "timestamp" }}

[[pipeline.transform]]
hash = ["client", "message"]
key = "{KEY}"
"""


def test_transforms_rename_drop_set_cast_and_hash_in_order() -> None:
    lines = [
        '{"status": "200", "noise": 1, "latency": "1.5", "client": "10.0.0.1", "when": "2026-11-20T09:00:00Z"}',
        '{"status": "teapot", "latency": "fast", "client": null}',
    ]
    out = routes(TRANSFORMS, [{"message": m} for m in lines])["t"]
    names = out.columns.column_names
    assert "status" not in names and "noise" not in names and "ignored" not in names
    assert out.columns.schema.field("http_status").type == pa.int32()
    assert column(out, "http_status") == [200, None]
    assert column(out, "latency") == [1.5, None]
    assert column(out, "env") == ["prod", "prod"] and column(out, "tier") == [2, 2]
    assert column(out, "host") == ["7", "7"]  # a canonical text column stays text
    assert column(out, "parse_error") == [
        None,
        "cast http_status to int32 failed; cast latency to float64 failed",
    ]
    digest = hmac.new(KEY.encode(), b"10.0.0.1", hashlib.sha256).hexdigest()
    assert column(out, "client") == [digest, None]
    assert (
        column(out, "message")[0]
        == hmac.new(KEY.encode(), lines[0].encode(), hashlib.sha256).hexdigest()
    )
    assert str(column(out, "when")[0]) == "2026-11-20 09:00:00+00:00"


def test_redaction_covers_every_string_column_but_the_lineage() -> None:
    doc = "[[pipeline]]\nname = 'r'\nparse = 'json'\nredact = ['email']\n"
    row = {
        "message": '{"user": "ann@example.com"}',
        "host": "bob@example.org",
        "attributes": '{"to":"cy@example.net"}',
        "log_group": "ops@example.com",
    }
    out = routes(doc, [row])["logs"]
    assert column(out, "user") == ["[REDACTED:email]"]
    assert column(out, "host") == ["[REDACTED:email]"]
    assert column(out, "attributes") == ['{"to":"[REDACTED:email]"}']
    assert column(out, "message") == ['{"user": "[REDACTED:email]"}']
    assert column(out, "log_group") == ["ops@example.com"]  # lineage is written as received


def test_drop_removes_the_lines_for_which_it_holds() -> None:
    doc = "[[pipeline]]\nname = 'd'\ndrop = 'severity_number < 9'\ntable = 'd'\n"
    out = routes(doc, [{"severity_number": 5}, {"severity_number": 13}, {}])["d"]
    assert out.rows.tolist() == [1, 2]  # unknown severity: the condition does not hold


def test_sampling_keeps_about_one_in_n_and_the_same_lines_every_time() -> None:
    rows = [
        {"kinesis_sequence_number": str(4960 + i // 7), "kinesis_sub_sequence": i % 7}
        for i in range(3500)
    ]
    table = flush_table(rows)
    kept = sampled(table, 10)
    assert 280 < kept.sum() < 420
    assert (sampled(table, 10) == kept).all()
    assert (sampled(table.slice(1000, 500), 10) == kept[1000:1500]).all()  # per line, not per batch
    doc = "[[pipeline]]\nname = 's'\nsample = 10\ntable = 's'\n"
    out = next(load(doc).routes(table))
    assert out.rows.tolist() == [i for i in range(3500) if kept[i]]


@pytest.mark.parametrize("n", [1, 2, 3])
def test_sampling_depends_on_the_shard_too(n: int) -> None:
    rows = [{"kinesis_sub_sequence": i} for i in range(400)]
    a = sampled(flush_table(rows), 2)
    other = flush_table([{**r, "kinesis_shard_id": f"shardId-00{n}"} for r in rows])
    assert (sampled(other, 2) != a).any()


CONDITIONS = st.sampled_from(
    [
        'service == "api"',
        "severity_number >= 9",
        'message matches "^[a-m]"',
        "attributes.k == 1",
        "log_group is null",
        'host in ["a", "b"]',
        "nope > 3",
        "true",
    ]
)
PIPELINE = st.fixed_dictionaries(
    {
        "match": st.none() | CONDITIONS,
        "drop": st.none() | CONDITIONS,
        "sample": st.integers(1, 4),
        "table": st.sampled_from(["a", "b", "logs"]),
        "parse": st.booleans(),
    }
)
ROW = st.fixed_dictionaries(
    {
        "service": st.sampled_from(["api", "web", None]),
        "severity_number": st.none() | st.integers(0, 24),
        "message": st.none() | st.text(max_size=12) | st.just('{"k": 1, "v": "x"}'),
        "host": st.sampled_from(["a", "c", None]),
        "attributes": st.sampled_from([None, '{"k":1}', '{"k":"1"}', "{}"]),
        "kinesis_sub_sequence": st.integers(0, 1000),
    }
)


def document(pipelines: list[dict[str, object]]) -> str:
    parts = []
    for i, p in enumerate(pipelines):
        lines = [
            f'[[pipeline]]\nname = "p{i}"',
            f"sample = {p['sample']}",
            f'table = "{p["table"]}"',
        ]
        lines += [f"{k} = '{p[k]}'" for k in ("match", "drop") if p[k] is not None]
        lines += ['parse = "json"'] if p["parse"] else []
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


@settings(max_examples=60, deadline=None)
@given(st.lists(PIPELINE, max_size=3), st.lists(ROW, max_size=30))
def test_every_line_lands_once_in_order_or_was_dropped_by_its_pipeline(
    pipelines: list[dict[str, object]], rows: list[dict[str, object]]
) -> None:
    loaded = load(document(pipelines))
    table = flush_table(rows)
    out = list(loaded.routes(table))
    seen = np.concatenate([r.rows for r in out]) if out else np.zeros(0, np.int64)
    assert len(seen) == len(set(seen.tolist()))
    for route in out:
        assert route.rows.tolist() == sorted(route.rows.tolist())
        assert route.columns.num_rows == len(route.rows)
        assert route.columns.column("kinesis_sub_sequence").to_pylist() == [
            rows[i].get("kinesis_sub_sequence", 0) for i in route.rows
        ]
    if not any(p["drop"] is not None or p["sample"] != 1 for p in pipelines):
        assert sorted(seen.tolist()) == list(range(len(rows)))
    assert [r.rows.tolist() for r in loaded.routes(table)] == [r.rows.tolist() for r in out]


@settings(max_examples=60, deadline=None)
@given(st.lists(PIPELINE, max_size=3), st.lists(ROW, max_size=30), st.randoms())
def test_routes_taken_in_any_order_hold_the_same_rows_and_values(
    pipelines: list[dict[str, object]], rows: list[dict[str, object]], rng: random.Random
) -> None:
    """The writer takes each destination's rows in its partition order (sink/routes.py):
    the same destinations, rows and values as in input order, the rows in that order."""
    loaded = load(document(pipelines))
    table = flush_table(rows)
    order = np.array(rng.sample(range(len(rows)), len(rows)), dtype=np.int64)
    plain, ordered = list(loaded.routes(table)), list(loaded.routes(table, order))
    assert [r.table for r in ordered] == [r.table for r in plain]
    place = {row: i for i, row in enumerate(order.tolist())}
    for a, b in zip(plain, ordered, strict=True):
        expected = sorted(a.rows.tolist(), key=place.__getitem__)
        assert b.rows.tolist() == expected
        at = {row: i for i, row in enumerate(a.rows.tolist())}
        again = a.columns.take(pa.array([at[row] for row in expected], pa.int64()))
        assert b.columns.equals(again)
