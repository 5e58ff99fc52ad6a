"""The seeded adversary: what AWS may answer to each call, and what machines do.

One ``Injector`` per schedule. Call faults are drawn per call from their own seeded
generator, in the (deterministic) order the calls are made; machine faults are a timeline
drawn up front. Everything injected is written to ``schedule`` so a failing seed can be
read, not only replayed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError, ReadTimeoutError

# Error codes and HTTP statuses as the services send them.
THROTTLE = {
    "kinesis": ("ProvisionedThroughputExceededException", 400),
    "dynamodb": ("ProvisionedThroughputExceededException", 400),
    "s3": ("SlowDown", 503),
}
SERVER_ERROR = {
    "kinesis": ("InternalFailure", 500),
    "dynamodb": ("InternalServerError", 500),
    "s3": ("InternalError", 500),
}
DDB_THROTTLING = ("ThrottlingException", 400)


def client_error(code: str, status: int, operation: str, message: str = "") -> ClientError:
    """A botocore ClientError shaped as botocore builds it from a service's error response."""
    return ClientError(
        {
            "Error": {"Code": code, "Message": message or code},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        operation,
    )


def lost_response(operation: str) -> Exception:
    """What the caller sees when the request was applied but the answer never came back."""
    error: Exception = ReadTimeoutError(endpoint_url=f"https://sim/{operation}")
    return error


@dataclass(frozen=True)
class Profile:
    """Rates of each fault kind; a kind at 0 is never injected."""

    name: str
    throttle: float = 0.0
    server_error: float = 0.0
    slow: float = 0.0  # a call that takes 1-8 s
    lost_response: float = 0.0  # applied, then the caller gets a timeout
    resent_after_loss: float = 0.0  # applied, answer lost, botocore re-sends it
    empty_page: float = 0.0  # GetRecords returns nothing although records follow
    short_page: float = 0.0  # GetRecords returns fewer records than it could
    missing_lag: float = 0.0  # GetRecords without MillisBehindLatest
    expired_iterator: float = 0.0
    scan_pages: bool = False  # DynamoDB scans answered in small pages
    multipart: bool = False  # objects over 2 KiB go up in 1 KiB multipart parts
    crashes: int = 0  # kill -9 of a random node (a new node with a new id takes its place)
    pauses: int = 0  # a node's calls hang past the lease, then resume (zombie)
    restarts: int = 0  # SIGTERM then a new node with a new id
    reshards: int = 0  # splits and merges
    skew: float = 0.0  # max |clock skew| between nodes, seconds
    lost_put: float = 0.0  # a producer's put applied, its answer lost: the bytes are re-sent
    late_resend: float = 0.0  # such a re-send comes 5-30 s later (else 0.05-2 s)
    reshard_after_lost_put: float = 0.0  # a reshard between the lost put and its re-send
    very_late_resend: float = 0.0  # a re-send 60-200 s later (the window is 300 s)
    # A rolling deploy of code that cuts files differently: this share of the nodes started
    # after the first (replacements) run it, so replays of the other version's intents
    # delete the keys their plan no longer has (flush.remove_stale, S3 DeleteObjects).
    code_change: float = 0.0
    delete_errors: float = 0.0  # DeleteObjects answers 200 with some keys in Errors
    crash_after_upload: float = 0.0  # share of crashes placed right after an upload applied

    def kinds(self) -> list[str]:
        return [k for k, v in vars(self).items() if k != "name" and v]


@dataclass
class CallFault:
    """What happens to one call."""

    latency: float
    error: tuple[str, int] | None = None  # raised before the call is applied
    lost: bool = False
    resent: bool = False
    kind: str = ""


@dataclass
class Injector:
    seed: int
    profile: Profile
    enabled: bool = True
    schedule: list[str] = field(default_factory=list)
    kinds_seen: set[str] = field(default_factory=set)
    last_fault: dict[str, float] = field(default_factory=dict)  # node -> time of its last fault

    def __post_init__(self) -> None:
        self.rng = random.Random(f"calls-{self.seed}")

    def note(self, t: float, text: str, kind: str, node: str = "", until: float = 0.0) -> None:
        self.schedule.append(f"{t:9.3f} {text}")
        self.kinds_seen.add(kind)
        if node:
            self.last_fault[node] = max(self.last_fault.get(node, t), t, until)

    def chance(self, rate: float) -> bool:
        return self.enabled and rate > 0 and self.rng.random() < rate

    def draw(self, service: str, op: str, *, write: bool) -> CallFault:
        p = self.profile
        latency = self.rng.uniform(0.002, 0.03)
        if self.chance(p.slow):
            return CallFault(self.rng.uniform(1.0, 8.0), kind="slow_call")
        if self.chance(p.throttle):
            code = THROTTLE[service]
            if service == "dynamodb" and self.rng.random() < 0.5:
                code = DDB_THROTTLING
            return CallFault(latency, error=code, kind=f"{service}.throttle")
        if self.chance(p.server_error):
            return CallFault(latency, error=SERVER_ERROR[service], kind=f"{service}.5xx")
        if write and self.chance(p.lost_response):
            return CallFault(latency, lost=True, kind="lost_response")
        if write and self.chance(p.resent_after_loss):
            return CallFault(latency, lost=True, resent=True, kind="resent_after_loss")
        return CallFault(latency)

    def delete_refusals(self, node: str, t: float) -> Any:
        """Which keys of one DeleteObjects call S3 refuses (per key, in ``Errors``)."""
        if not self.chance(self.profile.delete_errors):
            return lambda key: False
        picked = random.Random(self.rng.random())

        def refuse(key: str) -> bool:
            if picked.random() < 0.5:
                self.note(
                    t,
                    f"{node} s3.delete_objects({key}) refused in Errors",
                    "s3.delete_errors",
                    node,
                )
                return True
            return False

        return refuse

    def page(self) -> dict[str, Any]:
        """Faults of one GetRecords answer (drawn only for calls that reached the service)."""
        p = self.profile
        out: dict[str, Any] = {}
        if self.chance(p.expired_iterator):
            out["expired"] = True
        elif self.chance(p.empty_page):
            out["empty"] = True
        elif self.chance(p.short_page):
            out["short"] = self.rng.randint(1, 3)
        if self.chance(p.missing_lag):
            out["missing_lag"] = True
        return out

    def scan_page_size(self) -> int | None:
        if not (self.enabled and self.profile.scan_pages):
            return None
        self.kinds_seen.add("dynamodb.scan_pages")
        return self.rng.randint(1, 4)


PROFILES = {
    p.name: p
    for p in (
        Profile("calm"),
        Profile(
            "aws",
            throttle=0.04,
            server_error=0.04,
            slow=0.01,
            lost_response=0.03,
            resent_after_loss=0.03,
            empty_page=0.15,
            short_page=0.15,
            expired_iterator=0.03,
            scan_pages=True,
            multipart=True,
        ),
        Profile("machines", crashes=2, pauses=0, restarts=2, slow=0.005),
        Profile("zombies", pauses=2, crashes=1),
        Profile("reshards", reshards=3, empty_page=0.1, short_page=0.1),
        Profile("missing_lag", missing_lag=0.3, empty_page=0.3, crashes=2, reshards=2),
        Profile("reshard_zombies", reshards=3, pauses=3, restarts=1, slow=0.08),
        Profile("shard_end_race", reshards=4, pauses=4, restarts=2, slow=0.15),
        Profile("skew", skew=12.0),
        # The producer half (service/consume/dedupe.py): lost PutRecords answers re-sent,
        # some late, some across a reshard, while consumers crash, pause and hand off.
        Profile(
            "producer",
            lost_put=0.25,
            late_resend=0.3,
            reshard_after_lost_put=0.15,
            crashes=1,
            pauses=1,
            restarts=1,
            reshards=1,
            lost_response=0.02,
            resent_after_loss=0.02,
        ),
        # Re-sends up to 200 s after the put: the dedupe state must outlive many checkpoints
        # and hand-offs (the fleet runs long after the faults end).
        Profile(
            "producer_late",
            lost_put=0.25,
            late_resend=0.3,
            very_late_resend=0.3,
            reshard_after_lost_put=0.15,
            crashes=2,
            restarts=1,
            reshards=1,
        ),
        # Two code versions in one fleet, each replaying the other's open intents: the replay
        # deletes the listed keys its own plan does not write, under lost answers and 5xx.
        Profile(
            "deploy",
            code_change=0.5,
            crashes=4,
            crash_after_upload=0.7,
            restarts=2,
            pauses=1,
            server_error=0.03,
            lost_response=0.04,
            resent_after_loss=0.03,
            delete_errors=0.3,
            slow=0.01,
        ),
        Profile(
            "everything",
            throttle=0.02,
            server_error=0.02,
            slow=0.01,
            lost_response=0.02,
            resent_after_loss=0.02,
            empty_page=0.1,
            short_page=0.1,
            expired_iterator=0.02,
            missing_lag=0.05,
            scan_pages=True,
            crashes=1,
            pauses=1,
            restarts=1,
            reshards=2,
            skew=3.0,
        ),
    )
}
