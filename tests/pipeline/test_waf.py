"""The WAF use case end to end (issue 18): a CloudWatch Logs subscription of AWS WAF logs,
through the real consumer and the documented pipeline, lands as a typed, partitioned
``waf`` table; other log groups keep landing in ``logs``."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.dataset as ds

from service.settings import Settings
from tests.builders import cwl_data_message, cwl_record
from tests.conftest import Aws, drain, object_keys, s3fs
from tests.pipeline.samples import WAF

# The pipeline of docs/pipelines.md, "Recipe: AWS WAF logs".
WAF_PIPELINE = """
[[pipeline]]
name = "waf"
match = 'log_group == "aws-waf-logs-edge"'
parse = "aws_waf"
table = "waf"
"""


def waf_event(i: int, **changes: Any) -> str:
    """The AWS documentation's WAF record (a BLOCK by a rate-based rule), varied."""
    request = {**WAF["httpRequest"], **changes.pop("httpRequest", {})}
    return orjson.dumps(
        {**WAF, "timestamp": WAF["timestamp"] + i, **changes, "httpRequest": request}
    ).decode()


async def test_waf_logs_from_a_subscription_land_typed_in_the_waf_table(
    aws: Aws, ready: Settings, tmp_path: Path
) -> None:
    events = [
        waf_event(0),
        waf_event(1, httpRequest={"clientIp": "198.51.100.7", "country": "US", "uri": "/login"}),
        waf_event(
            2,
            action="ALLOW",
            terminatingRuleId="Default_Action",
            terminatingRuleType="REGULAR",
            rateBasedRuleList=[],
            httpRequest={"clientIp": "203.0.113.9", "country": "DE", "uri": "/"},
        ),
    ]
    kinesis = aws.client("kinesis")
    for i, payload in enumerate(
        [
            cwl_data_message(events, log_group="aws-waf-logs-edge", first_ms=WAF["timestamp"]),
            cwl_data_message(["GET / 200"], log_group="/ecs/web", first_ms=WAF["timestamp"]),
        ]
    ):
        kinesis.put_record(StreamName=ready.stream, Data=cwl_record(payload), PartitionKey=str(i))
    path = tmp_path / "pipelines.toml"
    path.write_text(WAF_PIPELINE)

    await drain(ready, pipelines=path)

    waf_keys = object_keys(aws, ready.bucket, f"{ready.prefix}waf/")
    # Partitions are the arrival hour (DESIGN §4) and the log group: an Athena query on a
    # day of WAF logs reads that day's objects of that log group only.
    partition = re.compile(
        rf"{ready.prefix}waf/dt=\d{{4}}-\d\d-\d\d/hour=\d\d/service=aws-waf-logs-edge/"
    )
    assert waf_keys and all(partition.match(k) for k in waf_keys)
    base = f"{ready.bucket}/{ready.prefix}waf"
    table = ds.dataset(base, filesystem=s3fs(aws), format="parquet", partitioning="hive").to_table()
    assert table.schema.field("time").type == pa.timestamp("us", tz="UTC")
    assert table.schema.field("response_code_sent").type == pa.int64()
    rows = sorted(table.to_pylist(), key=lambda r: r["time"])
    assert [
        (r["action"], r["terminating_rule_id"], r["client_ip"], r["country"], r["uri"])
        for r in rows
    ] == [
        ("BLOCK", "RateBasedRule", "52.46.82.45", "FR", "/CanaryTest"),
        ("BLOCK", "RateBasedRule", "198.51.100.7", "US", "/login"),
        ("ALLOW", "Default_Action", "203.0.113.9", "DE", "/"),
    ]
    first = rows[0]
    assert first["time"] == datetime(2023, 5, 6, 6, 46, 19, 981000, tzinfo=UTC)
    assert first["http_method"] == "GET" and first["http_host"].startswith("rjvegx5guh.")
    assert first["user_agent"] == "RateBasedRuleTestKoipOneKeyModulePV2"
    assert first["log_group"] == "aws-waf-logs-edge" and first["parse_error"] is None
    assert orjson.loads(first["rate_based_rule_list"])[0]["rateBasedRuleName"] == "RateBasedRule"
    logs = object_keys(aws, ready.bucket, f"{ready.prefix}logs/")
    assert len(logs) == 1  # the other log group's line, unchanged
