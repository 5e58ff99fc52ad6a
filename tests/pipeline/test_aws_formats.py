"""The AWS formats on the samples of the AWS documentation (tests/pipeline/samples.py cites each page)."""

from __future__ import annotations

import datetime as dt

import orjson
import pyarrow as pa
import pytest

from service.pipeline.parsers import vpc_flow_parser
from tests.pipeline.samples import (
    ALB_HTTP,
    ALB_OLDER,
    CLOUDFRONT,
    CLOUDTRAIL,
    S3_ACCESS,
    VPC_ACCEPT,
    VPC_NODATA,
    VPC_REJECT,
    WAF,
    errors,
    parse,
    row,
)

UTC = dt.UTC


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
