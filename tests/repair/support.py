"""Builders of the repair tests: records the consumer dead-letters under a small decoder
limit (and that decode under the default one), and ``tideway`` subprocesses."""

from __future__ import annotations

import gzip
import subprocess
from pathlib import Path
from typing import Any

import orjson

from service.decode import RecordMeta
from service.envelope import EnvelopeRecord, encode
from service.settings import Settings
from service.sink.plan import DeadLetter, dead_entry
from tests.conftest import Aws

ROOT = Path(__file__).resolve().parents[2]
TIDEWAY = ROOT / ".venv" / "bin" / "tideway"
SMALL_LIMIT = 2048  # TIDEWAY_MAX_DECOMPRESSED_BYTES that makes the big records dead letters


def big_record(tag: str, lines: int = 40) -> bytes:
    """gzip NDJSON of ``lines`` lines, over SMALL_LIMIT decompressed: dead under the small
    limit, ``lines`` rows under the default."""
    text = b"\n".join(
        b'{"message": "%s-%d %s", "service": "api"}' % (tag.encode(), i, b"x" * 40)
        for i in range(lines)
    )
    assert len(text) > SMALL_LIMIT
    return gzip.compress(text, mtime=0)


def big_envelope(tag: str, producer_seq: int, lines: int = 40) -> bytes:
    """An envelope (version 2: producer identity and sequence) of ``lines`` lines, over
    SMALL_LIMIT decompressed: what serve sends, and re-sends after a lost answer."""
    payload = b"\n".join(
        b'{"message": "%s-%d %s"}' % (tag.encode(), i, b"x" * 40) for i in range(lines)
    )
    assert len(payload) > SMALL_LIMIT
    created = 1_796_094_000_000_000 + producer_seq
    return encode(
        EnvelopeRecord(
            payload,
            lines,
            created,
            service="api",
            producer_id=PRODUCER,
            producer_seq=producer_seq,
            created_us=created,
        )
    )


PRODUCER = bytes(range(16))
OLD_REASON = "unsupported envelope version 2"  # what a consumer older than envelope v2 said


def dead_letter_object(shard_id: str, records: list[tuple[int, bytes]]) -> bytes:
    """A dead-letter object's body as the writer writes it: ``(sequence, record)`` pairs,
    dead-lettered whole with OLD_REASON."""
    lines = [
        orjson.dumps(
            dead_entry(DeadLetter(RecordMeta(shard_id, seq, ARRIVAL_US), data, OLD_REASON))
        )
        for seq, data in records
    ]
    return gzip.compress(b"\n".join(lines) + b"\n", mtime=0)


ARRIVAL_US = 1_796_094_000_250_000  # 2026-12-01T03:00:00.25Z


def garbage_record() -> bytes:
    """gzip of bytes that are no format and not UTF-8: dead under either limit, for another
    reason once it may decompress."""
    return gzip.compress(bytes(range(128, 256)) * 20, mtime=0)


def put_records(
    aws: Aws, settings: Settings, records: list[bytes], partition_key: str | None = None
) -> None:
    """Each record put alone (under ``partition_key``, else one key per record)."""
    kinesis = aws.client("kinesis")
    for n, data in enumerate(records):
        key = partition_key or f"k{n}"
        kinesis.put_record(StreamName=settings.stream, Data=data, PartitionKey=key)


def tideway(aws: Aws, settings: Settings, *args: str, timeout: float = 60) -> Any:
    """Run ``tideway ARGS`` against the test backend with ``settings``; the finished process."""
    return subprocess.run(
        [str(TIDEWAY), *args],
        env=_env(aws, settings),
        capture_output=True,
        timeout=timeout,
        check=False,
    )


def tideway_process(
    aws: Aws, settings: Settings, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """``tideway ARGS`` started against the test backend (stdout and stderr piped), with
    ``env`` added to its environment (e.g. ``AWS_ENDPOINT_URL_S3`` of a fault proxy)."""
    return subprocess.Popen(
        [str(TIDEWAY), *args],
        env=_env(aws, settings) | (env or {}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _env(aws: Aws, settings: Settings) -> dict[str, str]:
    return aws.env(
        TIDEWAY_STREAM=settings.stream,
        TIDEWAY_BUCKET=settings.bucket,
        TIDEWAY_PREFIX=settings.prefix,
        TIDEWAY_LEASE_TABLE=settings.lease_table,
        TIDEWAY_LEASE_DURATION=str(settings.lease_duration),
        TIDEWAY_IDLE_WAIT=str(settings.idle_wait),
        AWS_ENDPOINT_URL=aws.endpoint,
    )
