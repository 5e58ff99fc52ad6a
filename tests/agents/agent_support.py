"""Shared builders for the agent tests: where `make agents` put the binaries, the lines an
agent tails, the agent as a foreground subprocess, and what a line must look like in S3."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from service.loggen import log_records
from service.settings import ApiKey, Settings
from tests.conftest import Aws
from tests.ingest_support import stream_lines

REPO = Path(__file__).resolve().parents[2]
AGENTS_ROOT = REPO / ".tools" / "agents" / "root"
NODE_MODULES = REPO / ".tools" / "node" / "node_modules"
KEY = "agent-key-0123456789"


def require(path: Path, what: str) -> Path:
    """``path`` if `make agents` installed it; otherwise skip, or fail under CI=true (where
    `.ci/run` runs `make agents` first, so an absent binary is a broken install step)."""
    if path.exists():
        return path
    reason = f"{what} is not installed at {path}: run `make agents` (as root, for apt-get)"
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def with_key(settings: Settings) -> Settings:
    """``settings`` that accept KEY (Bearer, X-API-Key, or as a Basic password)."""
    digest = hashlib.sha256(KEY.encode()).hexdigest()
    return settings.model_copy(update={"api_keys": (ApiKey(sha256=digest),)})


def agent_records(count: int, run: str) -> list[dict[str, Any]]:
    """Generated lines from the last hour (inside the event-time window), each numbered."""
    base = datetime.now(UTC) - timedelta(hours=1)
    return [
        {**record, "seq": i, "run": run}
        for i, record in enumerate(log_records(count, seed=11, hours=1, base=base))
    ]


def write_lines(path: Path, records: Sequence[dict[str, Any]]) -> None:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))


def _first(record: dict[str, Any], names: Sequence[str]) -> Any:
    return next((record[n] for n in names if n in record), None)


def event_time(record: dict[str, Any]) -> datetime:
    """The time a generated record carries, in whichever of loggen's styles it uses."""
    value = _first(record, ("timestamp", "@timestamp", "time", "ts"))
    if isinstance(value, str):
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    seconds = value / 1000 if isinstance(value, int) else value
    return datetime.fromtimestamp(seconds, UTC)


def expected_columns(record: dict[str, Any]) -> tuple[str, str, str]:
    """(message, host, service) as a reader of the table must see them for ``record``."""
    return (
        _first(record, ("message", "msg")),
        record["host"],
        _first(record, ("service", "app")),
    )


def assert_landed_once(rows: list[dict[str, Any]], records: Sequence[dict[str, Any]]) -> None:
    """Every record is exactly one row, with its message, host, service and event time."""
    by_seq: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        # int(): syslog-ng 3.x's format-json writes every value as a string.
        by_seq.setdefault(int(orjson.loads(row["attributes"])["seq"]), []).append(row)
    counts = {seq: len(found) for seq, found in by_seq.items() if len(found) != 1}
    missing = [r["seq"] for r in records if r["seq"] not in by_seq]
    assert (counts, missing[:20], len(rows)) == ({}, [], len(records)), rows[:1]
    for record in records:
        row = by_seq[record["seq"]][0]
        assert (row["message"], row["host"], row["service"]) == expected_columns(record)
        drift = abs(row["timestamp"] - event_time(record))
        assert drift < timedelta(milliseconds=1), (record, row["timestamp"])


async def wait_for_lines(aws: Aws, stream: str, count: int, deadline_s: float = 90) -> int:
    """Poll the Kinesis stream until ``count`` lines are in it or the deadline passes."""
    deadline = time.monotonic() + deadline_s
    while True:
        seen = len(await asyncio.to_thread(stream_lines, aws, stream))
        if seen >= count or time.monotonic() > deadline:
            return seen
        await asyncio.sleep(0.5)


@dataclass
class Agent:
    """A running agent subprocess and the file its stdout and stderr go to."""

    proc: asyncio.subprocess.Process
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@contextlib.asynccontextmanager
async def running(
    argv: Sequence[str], workdir: Path, env: dict[str, str] | None = None
) -> AsyncIterator[Agent]:
    """Run ``argv`` in the foreground as a child; SIGTERM it (then SIGKILL) on the way out."""
    log = workdir / "agent.out"
    with log.open("wb") as sink:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=workdir,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=sink,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
    agent = Agent(proc, log)
    try:
        yield agent
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()


def node_binary() -> str:
    found = shutil.which("node")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("node is not on PATH")
        pytest.skip("node is not on PATH")
    return found
