"""One seeded generator of realistic log lines, shared by the demo, tests and benchmarks (pure).

Lines look like what agents ship: several services, levels, mixed time formats (RFC 3339,
epoch s/ms, ``@timestamp``), nested attributes, trace ids, HTTP access fields, and times
spread over several hours. Same seed, same bytes.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import orjson

SERVICES = ("checkout", "payments", "search", "auth", "inventory", "gateway")
LEVELS = ("info", "info", "info", "info", "debug", "warn", "error")
PATHS = ("/api/cart", "/api/pay", "/api/search", "/login", "/api/items/{id}", "/health")
MESSAGES = (
    "request completed",
    "cache miss for key {k}",
    "upstream timeout after {n} ms",
    "user {u} logged in",
    "retrying payment authorisation attempt {n}",
    "query returned {n} rows",
    "connection pool exhausted; waiting",
)
BASE_TIME = datetime(2026, 11, 20, 6, 0, tzinfo=UTC)


def _time_value(rng: random.Random, when: datetime) -> tuple[str, object]:
    style = rng.randrange(5)
    if style == 0:
        return "timestamp", when.isoformat().replace("+00:00", "Z")
    if style == 1:
        return "@timestamp", when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    if style == 2:
        return "time", int(when.timestamp() * 1000)
    if style == 3:
        return "ts", round(when.timestamp(), 6)
    return "timestamp", when.isoformat()


def log_records(
    count: int, *, seed: int = 7, hours: int = 6, base: datetime = BASE_TIME
) -> Iterator[dict[str, object]]:
    """Yield ``count`` log objects over ``hours`` from ``base``; deterministic for a seed."""
    rng = random.Random(seed)
    span = hours * 3600
    for i in range(count):
        service = rng.choice(SERVICES)
        level = rng.choice(LEVELS)
        when = base + timedelta(seconds=rng.randrange(span), microseconds=rng.randrange(10**6))
        key, value = _time_value(rng, when)
        msg = rng.choice(MESSAGES).format(
            k=rng.randrange(10**6), n=rng.randrange(1, 5000), u=f"u{rng.randrange(10**5)}"
        )
        record: dict[str, object] = {
            key: value,
            "level" if i % 3 else "severity": level.upper() if i % 5 == 0 else level,
            "service" if i % 4 else "app": service,
            "message" if i % 6 else "msg": msg,
            "host": f"ip-10-0-{rng.randrange(4)}-{rng.randrange(256)}.ec2.internal",
            "trace_id": f"{rng.getrandbits(128):032x}",
            "span_id": f"{rng.getrandbits(64):016x}",
            "http": {
                "method": rng.choice(("GET", "POST", "PUT")),
                "path": rng.choice(PATHS),
                "status": rng.choice((200, 200, 200, 201, 304, 404, 500, 503)),
                "duration_ms": round(rng.expovariate(1 / 40), 3),
            },
            "region": rng.choice(("eu-west-1", "us-east-1")),
            "version": f"1.{rng.randrange(20)}.{rng.randrange(10)}",
        }
        if rng.random() < 0.2:
            record["user"] = {"id": rng.randrange(10**6), "tier": rng.choice(("free", "pro"))}
        if level == "error":
            record["error"] = {"kind": "TimeoutError", "stack": "at handler (app.py:42)\n" * 3}
        yield record


def ndjson_lines(count: int, *, seed: int = 7, hours: int = 6) -> list[bytes]:
    """The generated records serialized, one JSON object per line (no newline)."""
    return [orjson.dumps(r) for r in log_records(count, seed=seed, hours=hours)]
