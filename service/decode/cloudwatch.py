"""CloudWatch Logs subscription payloads (pure).

A subscription filter writes one gzip-compressed JSON object per Kinesis record:
``{messageType, owner, logGroup, logStream, subscriptionFilters, logEvents: [{id,
timestamp, message}]}``. ``DATA_MESSAGE`` carries events; ``CONTROL_MESSAGE`` is
CloudWatch checking that the destination is reachable and is skipped on purpose.
"""

from __future__ import annotations

from typing import Any

from service.decode.plain import object_lines
from service.decode.types import Decoded, LineBatch
from service.errors import DecodeError

SOURCE = "cloudwatch"
CONTROL_SKIPPED = "cloudwatch control message"


def is_subscription_payload(value: Any) -> bool:
    """True when a parsed JSON value has the shape of a subscription payload."""
    return type(value) is dict and "messageType" in value and "logEvents" in value


def decode_subscription(payload: dict[str, Any]) -> Decoded:
    """One batch of event lines ``{"timestamp", "message", "id", ...}``; raise DecodeError if malformed.

    Event objects pass through as CloudWatch wrote them (``extractedFields`` too), so the
    message stays the exact string that was logged, even when it is itself JSON.
    """
    kind = payload["messageType"]
    if kind == "CONTROL_MESSAGE":
        return Decoded(SOURCE, skipped=CONTROL_SKIPPED)
    if kind != "DATA_MESSAGE":
        raise DecodeError("cloudwatch messageType unknown")
    group = payload.get("logGroup")
    stream = payload.get("logStream")
    events = payload["logEvents"]
    if type(group) is not str or type(stream) is not str or type(events) is not list:
        raise DecodeError("cloudwatch payload malformed")
    # Per-event check: CloudWatch gives no cheaper guarantee that each event is well formed.
    for event in events:
        if (
            type(event) is not dict
            or type(event.get("timestamp")) is not int
            or type(event.get("message")) is not str
            or type(event.get("id")) is not str
        ):
            raise DecodeError("cloudwatch log event malformed")
    if not events:
        return Decoded(SOURCE, skipped="cloudwatch data message without events")
    batch = LineBatch(
        object_lines(events),  # never one orjson buffer per event held at once
        len(events),
        source=SOURCE,
        log_group=group,
        log_stream=stream,
    )
    return Decoded(SOURCE, (batch,))
