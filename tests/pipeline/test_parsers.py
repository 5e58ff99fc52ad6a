"""The general parsers (json, kv, syslog, combined, regex), and what every parser guarantees for any line."""

from __future__ import annotations

import datetime as dt
import gc

import orjson
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.pipeline.parsers import PARSERS, documents, regex_parser
from service.pipeline.parsers.base import Kind, null_tokens, typed
from service.schema import COLUMN_NAMES
from tests.pipeline.samples import (
    ALB_HTTP,
    APACHE,
    CLOUDFRONT,
    CLOUDTRAIL,
    S3_ACCESS,
    VPC_ACCEPT,
    VPC_REJECT,
    WAF,
    errors,
    parse,
    row,
)

UTC = dt.UTC


@pytest.mark.parametrize("name", ["apache", "nginx"])
def test_combined_access_log(name: str) -> None:
    common = '10.1.2.3 - - [10/Oct/2000:13:55:36 +0000] "-" 400 -'
    result = parse(name, APACHE, common, "not an access log", None)
    assert errors(result) == [None, None, "not a combined access log line", "message is null"]
    got = row(result)
    assert got["time"] == dt.datetime(2000, 10, 10, 20, 55, 36, tzinfo=UTC)
    assert (got["client_ip"], got["user"], got["method"], got["url"], got["protocol"]) == (
        "127.0.0.1",
        "frank",
        "GET",
        "/apache_pb.gif",
        "HTTP/1.0",
    )
    assert (got["status"], got["bytes"], got["referer"]) == (
        200,
        2326,
        "http://www.example.com/start.html",
    )
    assert got["user_agent"] == "Mozilla/4.08 [en] (Win98; I ;Nav)"
    assert (
        row(result, 1)["method"] is None
        and row(result, 1)["bytes"] is None
        and row(result, 1)["status"] == 400
    )


def test_syslog_rfc5424_and_rfc3164_examples() -> None:
    # RFC 5424 section 6.5 example 1 and RFC 3164 section 5.4 example 1.
    modern = "<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - 'su root' failed for lonvick on /dev/pts/8"
    sd = '<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"] An application event log entry...'
    bsd = "<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8"
    too_high = "<999>1 2003-10-11T22:14:15.003Z host app - - - text"
    result = parse("syslog", modern, sd, bsd, too_high, "plain text")
    assert errors(result) == [None, None, None, "priority: above 191", "not a syslog line"]
    got = row(result)
    assert (got["priority"], got["facility"], got["severity"], got["version"]) == (34, 4, 2, 1)
    assert got["time"] == dt.datetime(2003, 10, 11, 22, 14, 15, 3000, tzinfo=UTC)
    assert (got["hostname"], got["app_name"], got["proc_id"], got["msg_id"]) == (
        "mymachine.example.com",
        "su",
        None,
        "ID47",
    )
    assert got["msg"] == "'su root' failed for lonvick on /dev/pts/8"
    assert (
        row(result, 1)["structured_data"]
        == '[exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"]'
    )
    old = row(result, 2)
    assert (old["facility"], old["severity"], old["hostname"], old["app_name"], old["time"]) == (
        4,
        2,
        "mymachine",
        "su",
        None,
    )
    assert row(result, 3)["priority"] is None and row(result, 3)["hostname"] is None


def test_json_object_columns_are_snake_case_and_text_whatever_the_batch_holds() -> None:
    result = parse(
        "json",
        '{"userId": 7, "latencyMs": 1.5, "ok": true, "tags": ["a"]}',
        '{"userId": 8, "latencyMs": 2}',
        "[1]",
        "{oops",
        None,
    )
    assert errors(result)[:3] == [None, None, "not a JSON object: a list"]
    assert errors(result)[3].startswith("invalid JSON: ") and errors(result)[4] == "message is null"
    assert sorted(result.columns) == ["latency_ms", "ok", "tags", "user_id"]
    # Text in every batch (a pipeline's `columns` declares types): never int in one flush
    # and string in the next.
    assert all(column.type == pa.string() for column in result.columns.values())
    assert result.columns["user_id"].to_pylist() == ["7", "8", None, None, None]
    assert result.columns["latency_ms"].to_pylist()[:2] == ["1.5", "2"]
    assert result.columns["ok"].to_pylist()[0] == "true"
    assert result.columns["tags"].to_pylist()[0] == '["a"]'


LINE = st.one_of(
    st.none(),
    st.sampled_from(['{"a": 1}', '{"b": "x", "a": [2]}', "{}", "[1]", "7", "{oops", "", '"s"']),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(LINE, max_size=12), st.integers(1, 5))
def test_json_blocks_decode_as_each_line_alone(lines: list[str | None], block: int) -> None:
    """A block is decoded at once when all its lines are objects, else line by line: the
    same objects and reasons as a line at a time, wherever the bad lines fall."""
    objects: list[object] = []
    reasons: list[str | None] = []
    documents._decode_lines(lines, objects, reasons)
    saved = documents._BLOCK
    documents._BLOCK = block
    try:
        assert documents._decode(lines) == (objects, reasons)
    finally:
        documents._BLOCK = saved


def test_json_two_spellings_of_one_name_give_a_line_the_same_value_in_any_flush_order() -> None:
    both = '{"user_id": "snake", "userId": "camel"}'
    lines = ['{"userId": "c"}', '{"user_id": "s"}', both]
    forward = parse("json", *lines).columns["user_id"].to_pylist()
    backward = parse("json", *reversed(lines)).columns["user_id"].to_pylist()
    # "userId" < "user_id" in code-point order, whichever spelling the flush met first.
    assert forward == ["c", "s", "camel"] and backward == ["camel", "s", "c"]


JSON_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([1e16, 1e-5, 1e-7, 123456789012345680.0, -0.0, 5e-324, 1e308]),
    st.text(max_size=4),
    st.lists(st.integers(-(2**63), 2**63 - 1), max_size=2),
    st.dictionaries(st.sampled_from("ba,"), st.floats(allow_nan=False), max_size=2),
)


@settings(max_examples=300, deadline=None)
@given(column=st.lists(st.one_of(JSON_VALUE, st.just("missing")), min_size=1, max_size=8))
def test_json_object_writes_each_value_as_orjson_does(column: list[object]) -> None:
    """Whatever a column mixes (numbers written a column at a time, the rest a value at a
    time), each value's text is orjson's for it alone, keys sorted; null and absent are null."""
    lines = [orjson.dumps({} if v == "missing" else {"v": v}).decode() for v in column]
    result = parse("json", *lines)
    want = [
        None
        if v is None or v == "missing"
        else v
        if isinstance(v, str)
        else orjson.dumps(v, option=orjson.OPT_SORT_KEYS).decode()
        for v in column
    ]
    got = result.columns["v"] if "v" in result.columns else pa.nulls(len(column), pa.string())
    assert got.type == pa.string()
    assert got.to_pylist() == want


ISO_TIMES = {  # text: the instant, or "bad" (present, not a valid iso_time)
    "2018-07-02T22:23:00.186641Z": dt.datetime(2018, 7, 2, 22, 23, 0, 186641, UTC),
    "2018-07-02T22:23:00+01:00": dt.datetime(2018, 7, 2, 21, 23, tzinfo=UTC),
    "2018-07-02 22:23:00-0130": dt.datetime(2018, 7, 2, 23, 53, tzinfo=UTC),
    "2018-07-02T22:23:00+01": dt.datetime(2018, 7, 2, 21, 23, tzinfo=UTC),
    "2018-07-02T22:23:00": dt.datetime(2018, 7, 2, 22, 23, tzinfo=UTC),  # no zone: UTC
    "2018-13-02T22:23:00Z": "bad",
    "2018-07-02T22:23:00z": "bad",
    "soon": "bad",
}


@pytest.mark.parametrize("texts", [["2018-07-02T22:23:00.186641Z"], [*ISO_TIMES], [*ISO_TIMES][:5]])
def test_iso_times_with_and_without_a_zone_in_one_column(texts: list[str]) -> None:
    """Every text read as it would be alone, whichever others share its column: with a zone
    as it says, without one as UTC; a column that casts whole as it is takes the short way."""
    value, bad = typed(pa.array([*texts, "-", None]), Kind.ISO_TIME)
    want = [ISO_TIMES[t] for t in texts]
    assert value.to_pylist() == [None if w == "bad" else w for w in want] + [None, None]
    flagged = [False] * (len(texts) + 2) if bad is None else bad.to_pylist()
    assert flagged == [w == "bad" for w in want] + [False, False]


def test_kv_pairs_with_quoted_values() -> None:
    result = parse(
        "kv", 'level=info msg="disk \\"sda\\" full" user_id=42 took=1.5s', "no pairs here", None
    )
    assert errors(result) == [None, "no key=value pair", "message is null"]
    assert row(result) == {
        "level": "info",
        "msg": 'disk "sda" full',
        "took": "1.5s",
        "user_id": "42",
    }


def test_regex_parser_named_groups_become_columns() -> None:
    parser = regex_parser(r"^(?P<user>\w+) logged in from (?P<client_ip>\S+)$")
    result = parser(pa.array(["alice logged in from 192.0.2.1", "bob logged out", None]))
    assert errors(result) == [None, "does not match the regex", "message is null"]
    assert result.columns["user"].to_pylist() == ["alice", None, None]
    assert result.columns["client_ip"].to_pylist() == ["192.0.2.1", None, None]


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        (r"(?P<a>x", "missing \\)"),
        (r"no groups", "no named group"),
        (r"(?P<Bad>x)", "group name 'Bad' is not a snake_case column name"),
        (r"(\d+)(?P<a>x)", "write \\(\\?:…\\) for a group that is not a column"),
        (
            r"(?P<a>x)(?=y)",
            "regex",
        ),  # RE2 has no lookaheads: refused when configured, not at run time
    ],
)
def test_regex_parser_refuses_a_bad_pattern_with_its_reason(pattern: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        regex_parser(pattern)


SAMPLES = {
    "json": '{"a": 1}',
    "kv": "a=1",
    "syslog": "<34>Oct 11 22:14:15 mymachine su: x",
    "apache": APACHE,
    "nginx": APACHE,
    "alb": ALB_HTTP,
    "cloudfront": CLOUDFRONT,
    "vpc_flow": VPC_ACCEPT,
    "s3_access": S3_ACCESS,
    "cloudtrail": orjson.dumps(CLOUDTRAIL).decode(),
    "aws_waf": orjson.dumps(WAF).decode(),
}
HOSTILE = [
    None,
    "",
    " ",
    "\t\t",
    "#",
    '"',
    "\x00\xff",
    "é" * 50,
    "{" * 1000,
    "-" * 100,
    "<34>",
    "a=" * 200,
]


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_every_parser_keeps_every_line_and_never_raises(name: str) -> None:
    lines = [SAMPLES[name], *HOSTILE]
    result = parse(name, *lines)
    assert len(result.error) == len(lines)
    assert result.error[0].as_py() is None
    for column_name, column in result.columns.items():
        assert len(column) == len(lines), column_name
        assert column_name == column_name.lower() and " " not in column_name
    for i in range(1, len(lines)):
        if result.error[i].as_py() is not None:
            assert all(column[i].as_py() is None for column in result.columns.values()), (
                name,
                lines[i],
            )


@pytest.mark.parametrize("name", sorted(set(PARSERS) - {"json", "kv"}))
def test_fixed_parsers_never_shadow_a_canonical_column(name: str) -> None:
    assert not set(parse(name, SAMPLES[name]).columns) & set(COLUMN_NAMES)


def test_parsers_read_large_strings_and_chunked_columns() -> None:
    chunked = pa.chunked_array(
        [pa.array([VPC_ACCEPT], pa.large_string()), pa.array([VPC_REJECT], pa.large_string())]
    )
    result = PARSERS["vpc_flow"](chunked)  # type: ignore[arg-type]
    assert result.columns["action"].to_pylist() == ["ACCEPT", "REJECT"]


def test_escaped_quotes_inside_quoted_fields() -> None:
    line = '1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "GET /a\\"b HTTP/1.1" 200 5 "-" "Mozilla \\"quoted\\" \\\\ end"'
    result = parse("apache", line)
    assert errors(result) == [None]
    got = row(result)
    assert (got["url"], got["user_agent"], got["referer"]) == (
        '/a"b',
        'Mozilla "quoted" \\ end',
        None,
    )


def test_escaped_quotes_are_read_in_a_slice_and_beside_lines_without_escapes() -> None:
    escaped = '1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "GET /a\\"b HTTP/1.1" 200 5 "-" "-"'
    plain = '1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "GET /c\x1dd HTTP/1.1" 200 5 "-" "-"'
    column = pa.array([escaped, plain, escaped, plain])
    assert PARSERS["apache"](column.slice(1, 2)).columns["url"].to_pylist()[1] == '/a"b'


@pytest.mark.parametrize("name", ["apache", "alb", "s3_access"])
@pytest.mark.parametrize("control", ["\x1d", "\x1e"])
def test_a_raw_parking_character_is_refused_whatever_its_neighbours(
    name: str, control: str
) -> None:
    """These formats escape control characters (``\\xhh``): a line holding one raw is not of
    the format, and is read the same beside a line with an escape as alone (it was read as a
    backslash or a quote beside one)."""
    sample = {"apache": APACHE, "alb": ALB_HTTP, "s3_access": S3_ACCESS}[name]
    at = sample.index('"') + 2
    odd = sample[:at] + control + sample[at:]
    neighbour = sample[:at] + '\\"' + sample[at:]  # an escaped quote: the batch parks escapes
    alone = PARSERS[name](pa.array([odd]))
    beside = PARSERS[name](pa.array([odd, neighbour, sample]))
    reason = errors(alone)[0]
    assert reason is not None and reason.startswith("not a")
    assert errors(beside)[0] == errors(alone)[0]
    assert errors(beside)[2] is None
    for column, values in alone.columns.items():
        assert beside.columns[column].to_pylist()[0] == values.to_pylist()[0], column


@pytest.mark.parametrize("name", ["vpc_flow", "alb", "cloudfront"])
def test_parsers_read_a_slice_of_a_larger_column(name: str) -> None:
    sample = {"vpc_flow": VPC_ACCEPT, "alb": ALB_HTTP, "cloudfront": CLOUDFRONT}[name]
    column = pa.array(["x", "y", sample, sample, "z"]).slice(2, 2)
    result = PARSERS[name](column)
    assert errors(result) == [None, None]
    assert len(result.columns[next(iter(result.columns))]) == 2
    assert result.columns[next(iter(result.columns))].to_pylist()[0] is not None


def test_dash_and_empty_fields_read_as_null_in_a_column_or_a_slice_of_one() -> None:
    column = pa.array(["-", "", None, "x", "-x", " "])
    assert null_tokens(column).to_pylist() == [None, None, None, "x", "-x", " "]
    assert null_tokens(column.slice(3)).to_pylist() == ["x", "-x", " "]
    null_tokens(column).validate(full=True)


def test_json_record_parsers_leave_the_cyclic_collector_as_they_found_it() -> None:
    assert gc.isenabled()
    assert errors(PARSERS["aws_waf"](pa.array([orjson.dumps(WAF).decode()]))) == [None]
    assert gc.isenabled()
    gc.disable()
    try:
        PARSERS["cloudtrail"](pa.array(["not json"]))
        assert not gc.isenabled()
    finally:
        gc.enable()
