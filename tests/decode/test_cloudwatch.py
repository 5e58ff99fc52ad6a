"""CloudWatch Logs subscription payloads, as the AWS documentation shows them."""

from __future__ import annotations

import gzip

import orjson
import pytest

from service.decode import DecoderConfig, decode_record
from service.errors import DecodeError
from tests.builders import (
    CONTROL_MESSAGE,
    assert_contract,
    cwl_data_message,
    cwl_record,
)

CONFIG = DecoderConfig()
CLOUDTRAIL = '{"eventVersion":"1.03","userIdentity":{"type":"Root"}'


def test_cwl_data_message_yields_one_line_per_event_with_group_and_stream() -> None:
    decoded = decode_record(cwl_record(cwl_data_message([CLOUDTRAIL] * 3)), CONFIG)
    assert decoded.format == "cloudwatch"
    (batch,) = decoded.batches
    assert batch.source == "cloudwatch"
    assert batch.log_group == "CloudTrail/logs"
    assert batch.log_stream == "111111111111_CloudTrail/logs_us-east-1"
    assert batch.observed_us == 0  # CloudWatch gives no ingestion time: arrival time it is
    assert assert_contract(decoded) == [
        {
            "id": str(31953106606966983378809025079804211143289615424298221568 + i),
            "timestamp": 1432826855000 + i,
            "message": CLOUDTRAIL,
        }
        for i in range(3)
    ]


def test_cwl_json_message_stays_the_exact_logged_string() -> None:
    message = '{"level": "info",  "msg": "spaced"}'
    (line,) = assert_contract(decode_record(cwl_record(cwl_data_message([message])), CONFIG))
    assert line["message"] == message


def test_cwl_control_message_is_skipped_on_purpose() -> None:
    decoded = decode_record(cwl_record(CONTROL_MESSAGE), CONFIG)
    assert decoded.format == "cloudwatch"
    assert decoded.skipped == "cloudwatch control message"
    assert decoded.batches == ()


def test_cwl_extracted_fields_are_kept() -> None:
    payload = cwl_data_message(["GET /x 200"])
    payload["logEvents"][0]["extractedFields"] = {"verb": "GET", "status": "200"}
    (line,) = assert_contract(decode_record(cwl_record(payload), CONFIG))
    assert line["extractedFields"] == {"verb": "GET", "status": "200"}


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda p: p.update(messageType="SOMETHING_ELSE"), "cloudwatch messageType unknown"),
        (lambda p: p.update(logGroup=None), "cloudwatch payload malformed"),
        (lambda p: p.update(logEvents={"id": "1"}), "cloudwatch payload malformed"),
        (lambda p: p["logEvents"][1].update(timestamp="now"), "cloudwatch log event malformed"),
        (lambda p: p["logEvents"][0].pop("message"), "cloudwatch log event malformed"),
        (lambda p: p["logEvents"].append("x"), "cloudwatch log event malformed"),
    ],
)
def test_cwl_malformed_payload_is_rejected_with_reason(mutate: object, reason: str) -> None:
    payload = cwl_data_message(["a", "b"])
    mutate(payload)  # type: ignore[operator]
    with pytest.raises(DecodeError) as err:
        decode_record(cwl_record(payload), CONFIG)
    assert err.value.reason == reason


def test_cwl_data_message_without_events_is_skipped() -> None:
    decoded = decode_record(cwl_record(cwl_data_message([])), CONFIG)
    assert decoded.skipped == "cloudwatch data message without events"


def test_truncated_cwl_record_is_rejected() -> None:
    record = cwl_record(cwl_data_message(["x" * 100] * 50))
    with pytest.raises(DecodeError, match="gzip stream truncated"):
        decode_record(record[: len(record) // 2], CONFIG)


def test_gzip_json_that_is_not_cloudwatch_is_plain_json() -> None:
    body = orjson.dumps({"messageType": "mine", "value": 1})
    decoded = decode_record(gzip.compress(body), CONFIG)
    assert decoded.format == "json+gzip"
    assert assert_contract(decoded) == [{"messageType": "mine", "value": 1}]
