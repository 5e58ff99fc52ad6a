"""Closed label sets: free-text reasons and errors mapped to a few fixed classes (pure).

Prometheus labels and EMF dimensions must stay a small closed set; decoders, the sink and
AWS give free text (``"kpl md5 mismatch"``, ``"envelope truncated in payload"``). Every
function here maps any input onto its ``*_CLASSES`` tuple, so a new message in a decoder
can never create a new time series.
"""

from __future__ import annotations

from botocore.exceptions import BotoCoreError, ClientError, ConnectTimeoutError, ReadTimeoutError

from service.aws import error_code
from service.errors import LeaseLostError

DEAD_LETTER_CLASSES = (
    "envelope",
    "kpl",
    "cloudwatch",
    "avro",
    "compression",
    "json",
    "not_text",
    "unmappable",
    "decoder_error",
    "poisoned",
    "other",
)
# First words of DecodeError reasons (service/decode) and the sink's "unmappable: ..." prefix.
_DEAD_LETTER_PREFIXES = (
    ("unmappable", "unmappable"),
    ("envelope", "envelope"),
    ("kpl", "kpl"),
    ("cloudwatch", "cloudwatch"),
    ("avro", "avro"),
    ("gzip", "compression"),
    ("zstd", "compression"),
    ("decompressed size", "compression"),
    ("decoder failed", "decoder_error"),
    ("record is neither", "not_text"),
    ("poisoned", "poisoned"),  # a range the flush planner kept failing on (consume/flush.py)
)

SKIP_CLASSES = ("cloudwatch_control", "empty", "other")

REJECT_CLASSES = (
    "bad_request",
    "unauthorized",
    "not_found",
    "method_not_allowed",
    "too_large",
    "unsupported_media_type",
    "too_many_requests",
    "unavailable",
    "internal",
    "other",
)
_REJECT_BY_STATUS = {
    400: "bad_request",
    401: "unauthorized",
    403: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
    503: "unavailable",
}

ERROR_CLASSES = (
    "throttled",
    "expired_iterator",
    "aws_server",
    "aws_client",
    "timeout",
    "connection",
    "lease_lost",
    "other",
)
THROTTLE_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "LimitExceededException",
        "KMSThrottlingException",
        "RequestLimitExceeded",
        "SlowDown",
    }
)


def dead_letter_class(reason: str) -> str:
    """The class of a dead-letter reason; one of DEAD_LETTER_CLASSES."""
    for prefix, cls in _DEAD_LETTER_PREFIXES:
        if reason.startswith(prefix):
            return cls
    if "JSON" in reason or "json" in reason:
        return "json"
    return "other"


def skip_class(reason: str) -> str:
    """The class of a skip reason (a record holding no lines on purpose); one of SKIP_CLASSES."""
    if reason.startswith("cloudwatch control"):
        return "cloudwatch_control"
    if "empty" in reason or "blank" in reason or "no " in reason:
        return "empty"
    return "other"


def reject_class(status: int) -> str:
    """The class of a refused HTTP request by its status; one of REJECT_CLASSES."""
    if status in _REJECT_BY_STATUS:
        return _REJECT_BY_STATUS[status]
    if status >= 500:
        return "internal"
    return "other"


def error_class(exc: BaseException) -> str:
    """The class of an exception raised by an AWS call or a shard consumer; one of ERROR_CLASSES."""
    if isinstance(exc, LeaseLostError):
        return "lease_lost"
    if isinstance(exc, ClientError):
        code = error_code(exc)
        if code in THROTTLE_CODES:
            return "throttled"
        if code == "ExpiredIteratorException":
            return "expired_iterator"
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return "aws_server" if status >= 500 or code.startswith("Internal") else "aws_client"
    if isinstance(exc, TimeoutError | ReadTimeoutError | ConnectTimeoutError):
        return "timeout"
    if isinstance(exc, OSError | BotoCoreError):
        return "connection"
    return "other"
