"""Each parser on real samples from the AWS documentation (page cited beside each), and on bad lines."""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson
import pyarrow as pa
import pytest

from service.pipeline.parsers import PARSERS, ParseResult, regex_parser, vpc_flow_parser
from service.schema import COLUMN_NAMES
from tests.pipeline.samples import (
    ALB_HTTP,
    ALB_OLDER,
    APACHE,
    CLOUDFRONT,
    CLOUDTRAIL,
    S3_ACCESS,
    VPC_ACCEPT,
    VPC_NODATA,
    VPC_REJECT,
    WAF,
)

UTC = dt.UTC


def parse(name: str, *lines: str | None) -> ParseResult:
    return PARSERS[name](pa.array(list(lines), pa.string()))


def row(result: ParseResult, i: int = 0) -> dict[str, Any]:
    return {name: column[i].as_py() for name, column in result.columns.items()}


def errors(result: ParseResult) -> list[str | None]:
    return result.error.to_pylist()


def test_alb_http_entry_becomes_typed_columns() -> None:
    result = parse("alb", ALB_HTTP, ALB_OLDER)
    assert errors(result) == [None, None]
    got = row(result)
    assert got["time"] == dt.datetime(2018, 7, 2, 22, 23, 0, 186641, tzinfo=UTC)
    assert (got["client_ip"], got["client_port"], got["target_ip"], got["target_port"]) == (
        "192.168.131.39",
        2817,
        "10.0.0.1",
        80,
    )
    assert (got["elb_status_code"], got["received_bytes"], got["sent_bytes"]) == (200, 34, 366)
    assert got["target_processing_time"] == 0.001
    assert (got["request_method"], got["request_url"], got["request_protocol"]) == (
        "GET",
        "http://www.example.com:80/",
        "HTTP/1.1",
    )
    assert got["user_agent"] == "curl/7.46.0"
    assert got["ssl_cipher"] is None and got["domain_name"] is None
    assert got["amzn_trace_id"] == "Root=1-58337262-36d228ad5d99923122bbe354"
    assert got["actions_executed"] == "forward" and got["conn_trace_id"] == "TID_1234abcd5678ef90"
    older = row(result, 1)
    assert (
        older["target_ip"] is None
        and older["target_port"] is None
        and older["conn_trace_id"] is None
    )
    assert result.columns["time"].type == pa.timestamp("us", tz="UTC")
    assert result.columns["sent_bytes"].type == pa.int64()


def test_cloudfront_standard_log_line_and_its_header() -> None:
    result = parse("cloudfront", "#Version: 1.0", CLOUDFRONT, "2019-12-04\t21:02:31\tLAX1-C2")
    assert errors(result) == [
        "a CloudFront header line, not a record",
        None,
        "expected 24 to 33 fields separated by '\\t', found 3",
    ]
    got = row(result, 1)
    assert got["time"] == dt.datetime(2019, 12, 4, 21, 2, 31, tzinfo=UTC)
    assert (got["x_edge_location"], got["sc_bytes"], got["c_ip"], got["sc_status"]) == (
        "LAX1-C2",
        392,
        "192.0.2.100",
        200,
    )
    assert (got["cs_method"], got["cs_uri_stem"], got["x_edge_result_type"]) == (
        "GET",
        "/index.html",
        "Hit",
    )
    assert (got["time_taken"], got["c_port"], got["sc_content_len"], got["sc_range_start"]) == (
        0.001,
        11040,
        78,
        None,
    )
    assert row(result, 0)["c_ip"] is None


def test_vpc_flow_default_format() -> None:
    result = parse("vpc_flow", VPC_ACCEPT, VPC_REJECT, VPC_NODATA, "2 123456789010 eni-1 x")
    assert errors(result)[:3] == [None, None, None]
    assert errors(result)[3] == "expected 14 fields separated by ' ', found 4"
    got = row(result)
    assert (got["srcaddr"], got["dstaddr"], got["srcport"], got["dstport"], got["protocol"]) == (
        "172.31.16.139",
        "172.31.16.21",
        20641,
        22,
        6,
    )
    assert (got["packets"], got["bytes"], got["action"], got["log_status"]) == (
        20,
        4249,
        "ACCEPT",
        "OK",
    )
    assert got["start"] == dt.datetime.fromtimestamp(1418530010, UTC)
    assert row(result, 1)["action"] == "REJECT"
    nodata = row(result, 2)
    assert (
        nodata["srcaddr"] is None and nodata["bytes"] is None and nodata["log_status"] == "NODATA"
    )


def test_vpc_flow_custom_field_list() -> None:
    # The documentation's custom-format example: ${vpc-id} ${subnet-id} ... written as a field list.
    parser = vpc_flow_parser(
        [
            "${version}",
            "${vpc-id}",
            "${subnet-id}",
            "${instance-id}",
            "${tcp-flags}",
            "${flow-direction}",
        ]
    )
    result = parser(
        pa.array(
            ["3 vpc-abcdefab012345678 subnet-aaaaaaaa012345678 i-01234567890123456 19 ingress"]
        )
    )
    assert errors(result) == [None]
    assert row(result) == {
        "version": 3,
        "vpc_id": "vpc-abcdefab012345678",
        "subnet_id": "subnet-aaaaaaaa012345678",
        "instance_id": "i-01234567890123456",
        "tcp_flags": 19,
        "flow_direction": "ingress",
    }
    with pytest.raises(ValueError, match="vpc_flow: unknown field 'srcadr'"):
        vpc_flow_parser(["srcadr"])
    with pytest.raises(ValueError, match="listed twice"):
        vpc_flow_parser(["srcaddr", "srcaddr"])


def test_s3_server_access_log_record() -> None:
    result = parse("s3_access", S3_ACCESS, "79a59df9 bucket [not a time] rest")
    assert errors(result) == [None, "not a S3 server access log line"]
    got = row(result)
    assert got["time"] == dt.datetime(2019, 2, 6, 0, 0, 38, tzinfo=UTC)
    assert (got["bucket"], got["remote_ip"], got["operation"], got["key"]) == (
        "amzn-s3-demo-bucket1",
        "192.0.2.3",
        "REST.GET.VERSIONING",
        None,
    )
    assert (
        got["http_status"],
        got["bytes_sent"],
        got["object_size"],
        got["total_time"],
        got["turn_around_time"],
    ) == (200, 113, None, 7, None)
    assert (got["request_method"], got["request_url"]) == (
        "GET",
        "/amzn-s3-demo-bucket1?versioning",
    )
    assert (got["user_agent"], got["signature_version"], got["tls_version"]) == (
        "S3Console/0.4",
        "SigV4",
        "TLSV1.2",
    )
    assert (got["access_point_arn"], got["acl_required"], got["source_region"]) == (
        "arn:aws:s3:us-west-1:123456789012:accesspoint/example-AP",
        "Yes",
        "us-east-1",
    )


def test_aws_waf_record() -> None:
    result = parse(
        "aws_waf",
        orjson.dumps(WAF).decode(),
        '{"action": "ALLOW"}',
        '{"timestamp": "x", "action": "BLOCK", "httpRequest": {}}',
    )
    assert errors(result) == [
        None,
        "not a AWS WAF record: no timestamp",
        "time: not a epoch_millis",
    ]
    got = row(result)
    assert got["time"] == dt.datetime(2023, 5, 6, 6, 46, 19, 981000, tzinfo=UTC)
    assert (got["action"], got["terminating_rule_id"], got["terminating_rule_type"]) == (
        "BLOCK",
        "RateBasedRule",
        "RATE_BASED",
    )
    assert (got["client_ip"], got["country"], got["uri"], got["http_method"]) == (
        "52.46.82.45",
        "FR",
        "/CanaryTest",
        "GET",
    )
    assert (got["http_host"], got["user_agent"]) == (
        "rjvegx5guh.execute-api.eu-west-3.amazonaws.com",
        "RateBasedRuleTestKoipOneKeyModulePV2",
    )
    assert orjson.loads(got["rate_based_rule_list"])[0]["maxRateAllowed"] == 100
    assert got["format_version"] == 1 and got["response_code_sent"] is None


def test_cloudtrail_record_from_cloudwatch_logs() -> None:
    result = parse("cloudtrail", orjson.dumps(CLOUDTRAIL).decode(), '{"eventName": "x"}', "{")
    assert errors(result)[:2] == [None, "not a CloudTrail record: no eventVersion"]
    assert errors(result)[2].startswith("invalid JSON: ")
    got = row(result)
    assert got["event_time"] == dt.datetime(2023, 7, 19, 21, 17, 28, tzinfo=UTC)
    assert (got["event_source"], got["event_name"], got["aws_region"]) == (
        "ec2.amazonaws.com",
        "StartInstances",
        "us-east-1",
    )
    assert (
        got["user_identity_type"],
        got["user_identity_user_name"],
        got["user_identity_access_key_id"],
    ) == ("IAMUser", "Mateo", "AKIAIOSFODNN7EXAMPLE")
    assert (got["read_only"], got["management_event"], got["error_code"]) == (False, True, None)
    assert (
        orjson.loads(got["request_parameters"])["instancesSet"]["items"][1]["instanceId"]
        == "i-EXAMPLEaff4840c22"
    )


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


def test_json_object_columns_are_snake_case_and_typed_per_batch() -> None:
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
    assert result.columns["user_id"].to_pylist() == [7, 8, None, None, None]
    assert (
        result.columns["latency_ms"].type == pa.float64()
        and result.columns["ok"].type == pa.bool_()
    )
    assert result.columns["tags"].to_pylist()[0] == '["a"]'


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


@pytest.mark.parametrize(
    ("name", "line", "reason"),
    [
        (
            "alb",
            ALB_HTTP.replace("2018-07-02T22:23:00.186641Z", "2018-13-45T99:00:00Z"),
            "time: not a valid iso_time",
        ),
        (
            "alb",
            ALB_HTTP.replace("192.168.131.39:2817", "192.168.131.39:port"),
            "client_port: not a valid int",
        ),
        ("vpc_flow", VPC_ACCEPT.replace(" 20641 ", " port "), "srcport: not a valid int"),
        (
            "cloudfront",
            CLOUDFRONT.replace("2019-12-04", "2019-12-99"),
            "time: not a valid date and time",
        ),
        (
            "cloudtrail",
            orjson.dumps({**CLOUDTRAIL, "readOnly": "no"}).decode(),
            "read_only: not a bool",
        ),
    ],
)
def test_a_field_of_the_wrong_type_fails_the_whole_line(name: str, line: str, reason: str) -> None:
    result = parse(name, line)
    assert errors(result) == [reason]
    assert all(value is None for value in row(result).values())
