"""Hostile records from foreign producers, for the consumer: decode + plan_flush in-process,
peak RSS watched (issue 15). Decoding a record stays within 2x its decoded size + 64 MB;
the whole flush within FLUSH_FACTOR x + 64 MB + ROW_ALLOWANCE a row (a row of 3 bytes
still costs its columns).

``python -m tests.hostile.consumer NAME`` measures one record in a fresh process and prints
one JSON object; the test runs every record that way so RSS kept by one hides nothing.
``python -m tests.hostile.consumer --table`` measures every Avro attack that way and prints
the rows of docs/security.md's Avro table.
"""

from __future__ import annotations

import gzip
import hashlib
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson
import psutil
import zstandard

from service.decode import DecoderConfig, decode_record
from service.decode.avro import parse_schema
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


# Hostile Avro (Confluent wire format, schema id 7) from a foreign producer: each must be
# dead-lettered with a reason naming what lies, within the decode bound (issue 15).
AVRO_ID = 7


def zigzag(n: int) -> bytes:
    """A zig-zag varint as Avro writes longs (any size: callers write lies)."""
    u = (n << 1) ^ (n >> 63) if n < 0 else n << 1
    out = bytearray()
    while u > 0x7F:
        out.append((u & 0x7F) | 0x80)
        u >>= 7
    out.append(u)
    return bytes(out)


def _record(name: str, fields: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "record", "name": name, "fields": fields}


STRING = _record("S", [{"name": "s", "type": "string"}])
BYTES = _record("B", [{"name": "b", "type": "bytes"}])
LONGS = _record("A", [{"name": "a", "type": {"type": "array", "items": "long"}}])
MAP = _record("M", [{"name": "m", "type": {"type": "map", "values": "long"}}])
LONG = _record("L", [{"name": "n", "type": "long"}])
NODE = _record("Node", [{"name": "next", "type": ["null", "Node"]}])
ONE = zigzag(1)
TOP = 2**62

# name -> (writer schema, datum, a fragment the dead-letter reason must hold)
AVRO: dict[str, tuple[dict[str, Any], Callable[[], bytes], str]] = {
    "Avro string declaring 2^62 bytes": (STRING, lambda: zigzag(TOP) + b"abc", "string length"),
    "Avro bytes declaring 2^62 bytes": (BYTES, lambda: zigzag(TOP) + b"abc", "bytes length"),
    "Avro string of negative length": (STRING, lambda: zigzag(-1) + b"abc", "string length -1"),
    "Avro array of 2^62 longs, 1 MiB": (LONGS, lambda: zigzag(TOP) + ONE * MIB, "array count"),
    "Avro map of 2^62 entries, 1 MiB": (
        MAP,
        lambda: zigzag(TOP) + (zigzag(1) + b"k" + ONE) * (MIB // 3),
        "map count",
    ),
    "Avro array block count lying (1M declared, 1,000 present)": (
        LONGS,
        lambda: zigzag(10**6) + ONE * 1000 + b"\x00",
        "array count 1000000",
    ),
    "Avro negative block count, byte size 2^62": (
        LONGS,
        lambda: zigzag(-3) + zigzag(TOP) + ONE * 3 + b"\x00",
        "array block size",
    ),
    "Avro recursive schema, a datum 1 MiB deep": (
        NODE,
        lambda: b"\x02" * MIB + b"\x00",
        "nested deeper than",
    ),
    "Avro varint of 1 MiB continuation bytes": (
        LONG,
        lambda: b"\xff" * MIB + b"\x01",
        "varint over 10 bytes",
    ),
    "Avro varint past 64 bits (10 bytes)": (
        LONG,
        lambda: b"\xff" * 9 + b"\x7f",
        "varint over 64 bits",
    ),
    "Avro union index 2^62": (NODE, lambda: zigzag(TOP) + b"\x00", "union index"),
    # An object container file: magic, a metadata map holding a 1 MiB avro.schema, the sync
    # marker. Not a record format Tideway decodes (one datum per record); not UTF-8 either.
    "Avro object container header of 1 MiB": (
        STRING,
        lambda: (
            b"Obj\x01"
            + zigzag(1)
            + zigzag(len("avro.schema"))
            + b"avro.schema"
            + zigzag(MIB)
            + b'"' * MIB
            + b"\x00"
            + b"\xff" * 16
        ),
        "neither",
    ),
}


def record_and_config(name: str) -> tuple[bytes, DecoderConfig]:
    """The record ``name`` and the decoder configuration it is read with."""
    if name not in AVRO:
        return RECORDS[name](), DecoderConfig()
    schema, datum, _ = AVRO[name]
    header = (
        b"" if name.endswith("container header of 1 MiB") else b"\x00" + AVRO_ID.to_bytes(4, "big")
    )
    return header + datum(), DecoderConfig(avro_schemas_by_id={AVRO_ID: parse_schema(schema)})


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
    data, config = record_and_config(name)
    meta = RecordMeta("shardId-000000000000", 1, ARRIVAL_US)
    started = time.perf_counter()
    rows = dead = decoded_bytes = 0
    reason = ""
    watch = PeakRss()
    try:
        decoded = decode_record(data, config)
    except DecodeError as exc:
        decoded, dead, reason = None, 1, exc.reason
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
        "reason": reason,
        "decode_rss_mb": round(decode_growth / MIB, 1),
        "decode_bound_mb": round(base / MIB, 1),
        "rss_growth_mb": round(total / MIB, 1),
        "bound_mb": round(
            (FLUSH_FACTOR * max(decoded_bytes, len(data)) + 64 * MIB + ROW_ALLOWANCE * rows) / MIB,
            1,
        ),
        "seconds": round(time.perf_counter() - started, 2),
    }


def in_fresh_process(name: str) -> dict[str, Any]:
    """``measure(name)`` in a new interpreter; a crash (SIGSEGV) is reported as such."""
    out = subprocess.run(
        [sys.executable, "-m", "tests.hostile.consumer", name],
        capture_output=True,
        timeout=300,
        check=False,
    )
    if out.returncode:
        return {"name": name, "crashed": out.returncode}
    result: dict[str, Any] = orjson.loads(out.stdout.splitlines()[-1])
    return result


def table_row(got: dict[str, Any]) -> str:
    """One row of docs/security.md: attack, status, decode RSS (bound), lines landed."""
    if "crashed" in got:
        return f"| {got['name']} | **worker killed** (exit {got['crashed']}) | | |"
    status = f"dead letter `{got['reason']}`" if got["dead_letters"] else "decoded"
    rss = f"+{got['decode_rss_mb']} MB ({got['decode_bound_mb']})"
    return f"| {got['name']} ({got['record_bytes']:,} B) | {status} | {rss} | {got['rows']} |"


if __name__ == "__main__":
    if sys.argv[1] == "--table":
        for attack in AVRO:
            sys.stdout.write(table_row(in_fresh_process(attack)) + "\n")
    else:
        sys.stdout.write(orjson.dumps(measure(sys.argv[1])).decode() + "\n")
