"""Each parser on real samples from the AWS documentation (page cited beside each), and on bad lines."""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson
import pyarrow as pa
import pytest

from service.pipeline.parsers import PARSERS, ParseResult, regex_parser, vpc_flow_parser
from service.schema import COLUMN_NAMES

UTC = dt.UTC


def parse(name: str, *lines: str | None) -> ParseResult:
    return PARSERS[name](pa.array(list(lines), pa.string()))


def row(result: ParseResult, i: int = 0) -> dict[str, Any]:
    return {name: column[i].as_py() for name, column in result.columns.items()}


def errors(result: ParseResult) -> list[str | None]:
    return result.error.to_pylist()


# https://docs.aws.amazon.com/elasticloadbalancing/latest/application/load-balancer-access-logs.html
# ("Example log entries": HTTP entry)
ALB_HTTP = (
    "http 2018-07-02T22:23:00.186641Z app/my-loadbalancer/50dc6c495c0c9188 192.168.131.39:2817 10.0.0.1:80 "
    '0.000 0.001 0.000 200 200 34 366 "GET http://www.example.com:80/ HTTP/1.1" "curl/7.46.0" - - '
    "arn:aws:elasticloadbalancing:us-east-2:123456789012:targetgroup/my-targets/73e2d6bc24d8a067 "
    '"Root=1-58337262-36d228ad5d99923122bbe354" "-" "-" 0 2018-07-02T22:22:48.364000Z "forward" "-" "-" '
    '"10.0.0.1:80" "200" "-" "-" TID_1234abcd5678ef90'
)
# Same page, the older layout (no target lists, classification or connection trace id).
ALB_OLDER = (
    "http 2018-11-30T22:23:00.186641Z app/my-loadbalancer/50dc6c495c0c9188 192.168.131.39:2817 - "
    '0.000 0.001 0.000 200 200 34 366 "GET http://www.example.com:80/ HTTP/1.1" "curl/7.46.0" - - '
    "arn:aws:elasticloadbalancing:us-east-2:123456789012:targetgroup/my-targets/73e2d6bc24d8a067 "
    '"Root=1-58337364-23a8c76965a2ef7629b185e3" "-" "-" 0 2018-11-30T22:22:48.364000Z "forward" "-" "-"'
)


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


# https://docs.aws.amazon.com/AmazonCloudFront/latest/DeveloperGuide/standard-logs-reference.html (example log file)
CLOUDFRONT = "\t".join(
    [
        "2019-12-04", "21:02:31", "LAX1-C2", "392", "192.0.2.100", "GET", "d111111abcdef8.cloudfront.net", "/index.html",
        "200", "-",
        "Mozilla/5.0%20(Windows%20NT%2010.0;%20Win64;%20x64)%20AppleWebKit/537.36%20(KHTML,%20like%20Gecko)%20Chrome/78.0.3904.108%20Safari/537.36",
        "-", "-", "Hit", "SOX4xwn4XV6Q4rgb7XiVGOHms_BGlTAC4KyHmureZmBNrjGdRLiNIQ==", "d111111abcdef8.cloudfront.net", "https",
        "23", "0.001", "-", "TLSv1.2", "ECDHE-RSA-AES128-GCM-SHA256", "Hit", "HTTP/2.0", "-", "-", "11040", "0.001", "Hit",
        "text/html", "78", "-", "-",
    ]
)  # fmt: skip


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


# https://docs.aws.amazon.com/vpc/latest/userguide/flow-logs-records-examples.html (accepted, rejected, no data)
VPC_ACCEPT = "2 123456789010 eni-1235b8ca123456789 172.31.16.139 172.31.16.21 20641 22 6 20 4249 1418530010 1418530070 ACCEPT OK"
VPC_REJECT = "2 123456789010 eni-1235b8ca123456789 172.31.9.69 172.31.9.12 49761 3389 6 20 4249 1418530010 1418530070 REJECT OK"
VPC_NODATA = "2 123456789010 eni-1235b8ca123456789 - - - - - - - 1431280876 1431280934 - NODATA"


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


# https://docs.aws.amazon.com/AmazonS3/latest/userguide/LogFormat.html (the first of the five example records)
S3_ACCESS = (
    "79a59df900b949e55d96a1e698fbacedfd6e09d98eacf8f8d5218e7cd47ef2be amzn-s3-demo-bucket1 [06/Feb/2019:00:00:38 +0000] "
    "192.0.2.3 79a59df900b949e55d96a1e698fbacedfd6e09d98eacf8f8d5218e7cd47ef2be 3E57427F3EXAMPLE REST.GET.VERSIONING - "
    '"GET /amzn-s3-demo-bucket1?versioning HTTP/1.1" 200 - 113 - 7 - "-" "S3Console/0.4" - '
    "s9lzHYrFp76ZVxRcpX9+5cjAnEH2ROuNkd2BHfIa6UkFVdtjf5mKR3/eTPFvsiP/XV/VLi31234= SigV4 ECDHE-RSA-AES128-GCM-SHA256 "
    "AuthHeader amzn-s3-demo-bucket1.s3.us-west-1.amazonaws.com TLSV1.2 "
    "arn:aws:s3:us-west-1:123456789012:accesspoint/example-AP Yes us-east-1"
)


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


# https://docs.aws.amazon.com/waf/latest/developerguide/logging-examples.html (rate-based rule 1: blocked request),
# trimmed to the fields the parser reads.
WAF = {
    "timestamp": 1683355579981,
    "formatVersion": 1,
    "webaclId": "arn:aws:wafv2:eu-west-3:111122223333:regional/webacl/RateBasedRuleTestKoipOneKeyModulePV2/EXAMPLE",
    "terminatingRuleId": "RateBasedRule",
    "terminatingRuleType": "RATE_BASED",
    "action": "BLOCK",
    "terminatingRuleMatchDetails": [],
    "httpSourceName": "APIGW",
    "httpSourceId": "EXAMPLE11:rjvegx5guh:CanaryTest",
    "ruleGroupList": [],
    "rateBasedRuleList": [
        {
            "rateBasedRuleName": "RateBasedRule",
            "limitKey": "CUSTOMKEYS",
            "maxRateAllowed": 100,
            "evaluationWindowSec": "120",
            "customValues": [{"key": "HEADER", "name": "dogname", "value": "ella"}],
        }
    ],
    "nonTerminatingMatchingRules": [],
    "requestHeadersInserted": None,
    "responseCodeSent": None,
    "httpRequest": {
        "clientIp": "52.46.82.45",
        "country": "FR",
        "headers": [
            {"name": "X-Forwarded-For", "value": "52.46.82.45"},
            {"name": "Host", "value": "rjvegx5guh.execute-api.eu-west-3.amazonaws.com"},
            {"name": "dogname", "value": "ella"},
            {"name": "User-Agent", "value": "RateBasedRuleTestKoipOneKeyModulePV2"},
        ],
        "uri": "/CanaryTest",
        "args": "",
        "httpVersion": "HTTP/1.1",
        "httpMethod": "GET",
        "requestId": "Ed0AiHF_CGYF-DA=",
    },
}


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


# https://docs.aws.amazon.com/awscloudtrail/latest/userguide/cloudtrail-log-file-examples.html
# (Amazon EC2 log example: StartInstances), one record as CloudWatch Logs delivers it.
CLOUDTRAIL = {
    "eventVersion": "1.08",
    "userIdentity": {
        "type": "IAMUser",
        "principalId": "EXAMPLE6E4XEGITWATV6R",
        "arn": "arn:aws:iam::123456789012:user/Mateo",
        "accountId": "123456789012",
        "accessKeyId": "AKIAIOSFODNN7EXAMPLE",
        "userName": "Mateo",
    },
    "eventTime": "2023-07-19T21:17:28Z",
    "eventSource": "ec2.amazonaws.com",
    "eventName": "StartInstances",
    "awsRegion": "us-east-1",
    "sourceIPAddress": "192.0.2.0",
    "userAgent": "aws-cli/2.13.5 Python/3.11.4 Linux/4.14.255-314-253.539.amzn2.x86_64 exe/x86_64.amzn.2 prompt/off command/ec2.start-instances",
    "requestParameters": {
        "instancesSet": {
            "items": [{"instanceId": "i-EXAMPLE56126103cb"}, {"instanceId": "i-EXAMPLEaff4840c22"}]
        }
    },
    "responseElements": {"requestId": "e4336db0-149f-4a6b-844d-EXAMPLEb9d16"},
    "requestID": "e4336db0-149f-4a6b-844d-EXAMPLEb9d16",
    "eventID": "e755e09c-42f9-4c5c-9064-EXAMPLE228c7",
    "readOnly": False,
    "eventType": "AwsApiCall",
    "managementEvent": True,
    "recipientAccountId": "123456789012",
    "eventCategory": "Management",
}


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


# Apache's own documentation (httpd.apache.org/docs/current/logs.html, Combined Log Format);
# Nginx's default `combined` format writes the same shape.
APACHE = '127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326 "http://www.example.com/start.html" "Mozilla/4.08 [en] (Win98; I ;Nav)"'


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
