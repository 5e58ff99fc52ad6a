"""Real samples of each log format (each cites its page) and the helpers the parser tests share."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from service.pipeline.parsers import PARSERS, ParseResult


def parse(name: str, *lines: str | None) -> ParseResult:
    return PARSERS[name](pa.array(list(lines), pa.string()))


def row(result: ParseResult, i: int = 0) -> dict[str, Any]:
    """Line ``i`` of the result: column name -> Python value."""
    return {name: column[i].as_py() for name, column in result.columns.items()}


def errors(result: ParseResult) -> list[str | None]:
    return list(result.error.to_pylist())


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

# https://docs.aws.amazon.com/vpc/latest/userguide/flow-logs-records-examples.html (accepted, rejected, no data)
VPC_ACCEPT = "2 123456789010 eni-1235b8ca123456789 172.31.16.139 172.31.16.21 20641 22 6 20 4249 1418530010 1418530070 ACCEPT OK"

VPC_REJECT = "2 123456789010 eni-1235b8ca123456789 172.31.9.69 172.31.9.12 49761 3389 6 20 4249 1418530010 1418530070 REJECT OK"

VPC_NODATA = "2 123456789010 eni-1235b8ca123456789 - - - - - - - 1431280876 1431280934 - NODATA"

# https://docs.aws.amazon.com/AmazonS3/latest/userguide/LogFormat.html (the first of the five example records)
S3_ACCESS = (
    "79a59df900b949e55d96a1e698fbacedfd6e09d98eacf8f8d5218e7cd47ef2be amzn-s3-demo-bucket1 [06/Feb/2019:00:00:38 +0000] "
    "192.0.2.3 79a59df900b949e55d96a1e698fbacedfd6e09d98eacf8f8d5218e7cd47ef2be 3E57427F3EXAMPLE REST.GET.VERSIONING - "
    '"GET /amzn-s3-demo-bucket1?versioning HTTP/1.1" 200 - 113 - 7 - "-" "S3Console/0.4" - '
    "s9lzHYrFp76ZVxRcpX9+5cjAnEH2ROuNkd2BHfIa6UkFVdtjf5mKR3/eTPFvsiP/XV/VLi31234= SigV4 ECDHE-RSA-AES128-GCM-SHA256 "
    "AuthHeader amzn-s3-demo-bucket1.s3.us-west-1.amazonaws.com TLSV1.2 "
    "arn:aws:s3:us-west-1:123456789012:accesspoint/example-AP Yes us-east-1"
)

# https://docs.aws.amazon.com/waf/latest/developerguide/logging-examples.html (rate-based rule 1: blocked request),
# trimmed to the fields the parser reads.
WAF: dict[str, Any] = {
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

# https://docs.aws.amazon.com/awscloudtrail/latest/userguide/cloudtrail-log-file-examples.html
# (Amazon EC2 log example: StartInstances), one record as CloudWatch Logs delivers it.
CLOUDTRAIL: dict[str, Any] = {
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

# Apache's own documentation (httpd.apache.org/docs/current/logs.html, Combined Log Format);
# Nginx's default `combined` format writes the same shape.
APACHE = '127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326 "http://www.example.com/start.html" "Mozilla/4.08 [en] (Win98; I ;Nav)"'
