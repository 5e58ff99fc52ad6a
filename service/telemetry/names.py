"""Names other parts depend on: the EMF namespace, dimensions and the autoscaling metric.

deploy/ (scaling policy, alarms, dashboard) and docs/telemetry.md use these exact names;
tests tie them together.
"""

from __future__ import annotations

EMF_NAMESPACE = "Tideway"
DIM_STREAM = "Stream"
DIM_ROLE = "Role"
ROLE_SERVE = "serve"
ROLE_CONSUME = "consume"

# The consumer lag that drives the consume service's target-tracking policy: the largest
# MillisBehindLatest over the shards this task owns, in milliseconds.
LAG_METRIC = "ConsumerLagMillis"
OLDEST_UNFLUSHED_METRIC = "OldestUnflushedAgeSeconds"
DEAD_LETTER_METRIC = "DeadLetterRecords"
FLUSH_POISONED_METRIC = "FlushesPoisoned"  # ranges dead-lettered whole: a planner bug
THROTTLE_METRIC = "KinesisThrottles"
HTTP_5XX_METRIC = "Http5xx"
LINES_ACCEPTED_METRIC = "LinesAccepted"
ROWS_WRITTEN_METRIC = "RowsWritten"
BYTES_RECEIVED_METRIC = "BytesReceived"  # request bodies as received (before decompression)
# HTTP requests refused, one metric per class of reasons.REJECT_CLASSES (same order): fixed
# names under the one dimension set, not a Reason dimension (CloudWatch bills per metric and
# dimension combination; ten fixed names cannot grow).
REFUSED_METRICS = {
    "bad_request": "RefusedBadRequest",
    "unauthorized": "RefusedUnauthorized",
    "not_found": "RefusedNotFound",
    "method_not_allowed": "RefusedMethodNotAllowed",
    "too_large": "RefusedTooLarge",
    "unsupported_media_type": "RefusedUnsupportedMediaType",
    "too_many_requests": "RefusedTooManyRequests",
    "unavailable": "RefusedUnavailable",
    "internal": "RefusedInternal",
    "other": "RefusedOther",
}
