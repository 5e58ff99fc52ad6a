"""Hostile records from foreign producers, for the consumer: decode + plan_flush in-process,
peak RSS watched (issue 15). Decoding a record stays within 2x its decoded size + 64 MB;
the whole flush within FLUSH_FACTOR x + 64 MB + ROW_ALLOWANCE a row (a row of 3 bytes
still costs its columns).

``python -m tests.hostile.consumer NAME`` measures one record in a fresh process and prints
one JSON object; the test runs every record that way so RSS kept by one hides nothing.
"""

from __future__ import annotations

import gzip
import hashlib
import sys
import threading
import time
from collections.abc import Callable

import orjson
import psutil
import zstandard

from service.decode import DecoderConfig, decode_record
from service.decode.kpl import MAGIC, _AggregatedRecord
from service.decode.types import DecodedRecord, RecordMeta
from service.errors import DecodeError
from service.sink.plan import Layout, plan_flush
from service.sink.rules import FieldMapping

MIB = 1024 * 1024
ARRIVAL_US = 1_790_000_000 * 10**6


def _kpl(payloads: list[bytes]) -> bytes:
    aggregated = _AggregatedRecord()
    aggregated.partition_key_table.append("p")
    for payload in payloads:
        aggregated.records.add(partition_key_index=0, data=payload)
    body = aggregated.SerializeToString()
    return MAGIC + body + hashlib.md5(body, usedforsecurity=False).digest()


def _cwl_empty_events(count: int) -> bytes:
    events = b",".join([b'{"id":"","timestamp":0,"message":""}'] * count)
    head = b'{"messageType":"DATA_MESSAGE","owner":"1","logGroup":"g","logStream":"s",'
    return gzip.compress(head + b'"subscriptionFilters":[],"logEvents":[' + events + b"]}")


RECORDS: dict[str, Callable[[], bytes]] = {
    "KPL, 100k tiny JSON user records": lambda: _kpl([b"{}"] * 100_000),
    "KPL, 100k tiny text user records": lambda: _kpl([b"x"] * 100_000),
    "CWL DATA_MESSAGE, 200k empty events": lambda: _cwl_empty_events(200_000),
    "JSON array of 1 MiB of {} ": lambda: b"[" + b",".join([b"{}"] * (MIB // 3)) + b"]",
    "deeply nested JSON, 1 MiB": lambda: b"[" * (MIB // 2) + b"]" * (MIB // 2),
    "deeply nested objects, 1 MiB": lambda: b'{"a":' * (MIB // 6) + b"}" * (MIB // 6),
    "NDJSON gzip, 8 MiB of {}": lambda: gzip.compress(b"{}\n" * (8 * MIB // 3)),
    "NDJSON zstd, 8 MiB of {}": lambda: zstandard.compress(b"{}\n" * (8 * MIB // 3)),
    "text gzip, 8 MiB of x": lambda: gzip.compress(b"x\n" * (4 * MIB)),
}


class PeakRss:
    """The largest RSS seen, sampled every ``every`` seconds on a thread."""

    def __init__(self, every: float = 0.002) -> None:
        self._process = psutil.Process()
        self.base = self._process.memory_info().rss
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every,), daemon=True)
        self._thread.start()

    def _run(self, every: float) -> None:
        while not self._stop.wait(every):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def close(self) -> int:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)
        return self.peak - self.base


# What a flushed row costs whatever its size: Arrow columns, lineage, the partition gather
# and the Parquet encoder (measured ~330 B a row for 2.8M rows of ``{}``).
ROW_ALLOWANCE = 1024
# What the flush costs per decoded byte: the lines, their Arrow column, the partition gather
# and Parquet's encode buffers (measured 8.6x for one 12 MiB text message; 1.1x for NDJSON).
FLUSH_FACTOR = 10


def measure(name: str) -> dict[str, object]:
    """Decode the record ``name``, then plan its flush; sizes, rows and peak RSS growth of
    the decode alone and of the whole, with their bounds."""
    data = RECORDS[name]()
    meta = RecordMeta("shardId-000000000000", 1, ARRIVAL_US)
    started = time.perf_counter()
    rows = dead = decoded_bytes = 0
    watch = PeakRss()
    try:
        decoded = decode_record(data, DecoderConfig())
    except DecodeError:
        decoded, dead = None, 1
    decode_growth = watch.close()
    total = decode_growth
    if decoded is not None:
        decoded_bytes = sum(len(b.payload) for b in decoded.batches)
        record = DecodedRecord(meta, decoded.batches, data)
        del decoded
        flush = PeakRss()
        plan = plan_flush(meta.shard_id, [record], [], Layout("s"), FieldMapping())
        rows, dead = plan.rows, plan.dead_letters
        total = max(total, flush.base - watch.base + flush.close())
    base = 2 * max(decoded_bytes, len(data)) + 64 * MIB
    return {
        "name": name,
        "record_bytes": len(data),
        "decoded_bytes": decoded_bytes,
        "rows": rows,
        "dead_letters": dead,
        "decode_rss_mb": round(decode_growth / MIB, 1),
        "decode_bound_mb": round(base / MIB, 1),
        "rss_growth_mb": round(total / MIB, 1),
        "bound_mb": round(
            (FLUSH_FACTOR * max(decoded_bytes, len(data)) + 64 * MIB + ROW_ALLOWANCE * rows) / MIB,
            1,
        ),
        "seconds": round(time.perf_counter() - started, 2),
    }


if __name__ == "__main__":
    sys.stdout.write(orjson.dumps(measure(sys.argv[1])).decode() + "\n")
