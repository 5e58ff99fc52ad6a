"""The hostile-input corpus of issue 15: every finding, and generated variants (pure).

Each Attack is one HTTP request with the statuses serve may answer and the decompressed
size its memory bound is judged by (2x that + 64 MB over the RSS before it).
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import orjson
import zstandard
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

MIB = 1024 * 1024
NDJSON = "application/x-ndjson"
OK = frozenset({200})
REFUSED = frozenset({400, 413})


@dataclass(frozen=True)
class Attack:
    name: str
    path: str
    body: bytes
    content_type: str
    statuses: frozenset[int]
    decompressed: int  # bytes after Content-Encoding, for the memory bound
    headers: dict[str, str] = field(default_factory=dict)
    method: str = "POST"

    def encoded(self, encoding: str, pack: Callable[[bytes], bytes]) -> Attack:
        return Attack(
            f"{self.name} ({encoding})",
            self.path,
            pack(self.body),
            self.content_type,
            self.statuses,
            self.decompressed,
            {**self.headers, "Content-Encoding": encoding},
            self.method,
        )


def _gz(body: bytes) -> bytes:
    return gzip.compress(body, 9)


def _zst(body: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=19).compress(body)


def _otlp(records: int, text: str = "x", varied: bool = False) -> bytes:
    request = ExportLogsServiceRequest()
    logs = request.resource_logs.add().scope_logs.add().log_records
    pad = "".join(map(chr, range(35, 127))) * (len(text) // 92 + 2)
    for i in range(records):
        logs.add().body.string_value = f"{i} {pad[i % 94 : i % 94 + len(text)]}" if varied else text
    return request.SerializeToString()


def _bomb(payload: bytes, size: int) -> bytes:
    """``payload`` repeated to ``size`` bytes, gzip'd a MiB at a time (never held whole)."""
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = payload * (MIB // len(payload))
    parts = [c.compress(block) for _ in range(size // len(block))]
    return b"".join([*parts, c.flush()])


def findings() -> Iterator[Attack]:
    """The requests of the issue, as reported."""
    yield Attack(
        "1 KB gzip of 'x\\n' x 524288, text/plain",
        "/ingest",
        _gz(b"x\n" * 524_288),
        "text/plain",
        REFUSED,
        MIB,
        {"Content-Encoding": "gzip"},
    )
    array = b"[" + b",".join([b'{"a":1}'] * 400_000) + b"]"
    yield Attack(
        "1.5 KB gzip JSON array of {'a':1}",
        "/ingest",
        _gz(array),
        "application/json",
        REFUSED,
        len(array),
        {"Content-Encoding": "gzip"},
    )
    proto = _otlp(400_000)
    yield Attack(
        "1.5 KB gzip OTLP protobuf",
        "/v1/logs",
        _gz(proto),
        "application/x-protobuf",
        REFUSED,
        len(proto),
        {"Content-Encoding": "gzip"},
    )
    yield Attack(
        "16 MiB text 'x\\n'", "/ingest", b"x\n" * (8 * MIB), "text/plain", REFUSED, 16 * MIB
    )
    yield Attack("16 MiB NDJSON '1\\n'", "/ingest", b"1\n" * (8 * MIB), NDJSON, REFUSED, 16 * MIB)
    deletes = b'{"delete":{}}\n' * (16 * MIB // 14)
    yield Attack("16 MiB ES {'delete':{}}", "/_bulk", deletes, NDJSON, REFUSED, len(deletes))
    for path in ("/_index_template/t", "/_ilm/policy/p"):
        yield Attack(
            f"16 MiB PUT {path}",
            path,
            b" " * (16 * MIB - 1),
            "application/json",
            frozenset({413}),
            0,
            method="PUT",
        )
    two = _gz(b'{"m":"a"}\n') + _gz(b'{"m":"b"}\n')
    yield Attack("multi-member gzip", "/ingest", two, NDJSON, OK, 20, {"Content-Encoding": "gzip"})
    yield Attack(
        "gzip + trailing garbage",
        "/ingest",
        _gz(b'{"m":1}') + b"garbage",
        NDJSON,
        frozenset({400}),
        7,
        {"Content-Encoding": "gzip"},
    )
    yield Attack(
        "9 MiB ES _index",
        "/_bulk",
        b'{"index":{"_index":"' + b"i" * (9 * MIB) + b'"}}\n{"m":1}\n',
        NDJSON,
        OK,
        9 * MIB,
    )
    yield Attack(
        "_index inside a source",
        "/_bulk",
        b'{"index":{"_index":"a"}}\n{"_index":"b"}\n',
        NDJSON,
        OK,
        40,
    )
    yield Attack(
        "poison number",
        "/ingest",
        b'{"timestamp": 1' + b"0" * 210 + b"e99}\n",
        NDJSON,
        frozenset({200, 400}),
        230,
    )


def _lines(n: int, line: bytes) -> bytes:
    return line * n


def variants(max_lines: int = 500_000, max_decompressed: int = 64 * MIB) -> Iterator[Attack]:
    """Generated: bombs of each encoding and content type, line-count bombs at and past
    the cap, number edge cases, deep nesting, huge keys and indexes, mislabelled encodings."""
    zeros = _bomb(b"\n", 2 * max_decompressed)
    for ctype, path in [
        (NDJSON, "/ingest"),
        ("application/json", "/ingest"),
        ("text/plain", "/ingest"),
        ("application/x-protobuf", "/v1/logs"),
        (NDJSON, "/_bulk"),
    ]:
        yield Attack(
            f"gzip bomb {ctype} {path}",
            path,
            zeros,
            ctype,
            REFUSED,
            0,
            {"Content-Encoding": "gzip"},
        )
        yield Attack(
            f"zstd bomb {ctype} {path}",
            path,
            zstandard.ZstdCompressor(level=19).compress(b"\n" * (2 * max_decompressed)),
            ctype,
            REFUSED,
            0,
            {"Content-Encoding": "zstd"},
        )
    # The heaviest requests within the caps: accepted, and within the memory bound.
    text = _lines(max_lines - 1, b"x\n")
    yield Attack("text at the line cap", "/ingest", text, "text/plain", OK, len(text))
    yield Attack(
        "text past the line cap",
        "/ingest",
        text + b"x\nx\n",
        "text/plain",
        frozenset({413}),
        len(text),
    )
    nd = _lines(max_lines - 1, b'{"a":1}\n')
    yield Attack("NDJSON at the line cap", "/ingest", nd, NDJSON, OK, len(nd))
    arr = b"[" + b",".join([b'{"a":1}'] * (max_lines - 1)) + b"]"
    yield Attack("JSON array at the cap", "/ingest", arr, "application/json", OK, len(arr))
    yield Attack(
        "JSON array of numbers",
        "/ingest",
        b"[" + b"1," * (4 * MIB) + b"1]",
        "application/json",
        frozenset({400, 413}),
        8 * MIB,
    )
    bulk = _lines(99_999, b'{"index":{}}\n{"a":1}\n')
    yield Attack("ES bulk at the action cap", "/_bulk", bulk, NDJSON, OK, len(bulk))
    proto = _otlp(max_lines // 4)
    yield Attack("OTLP within the cap", "/v1/logs", proto, "application/x-protobuf", OK, len(proto))
    long_text = b"y" * (1024 * 1024 - 64) + b"\n"
    big = _lines(15, long_text)
    yield Attack("15 lines of 1 MiB text", "/ingest", big, "text/plain", OK, len(big))
    for number in [
        b"1e999",
        b"-1e999",
        b"1" + b"0" * 400,
        b"1e-400",
        b"18446744073709551616",
        b"-0",
        b"0." + b"0" * 300 + b"1",
        b"1" * 5000 + b"e-4990",
        b"NaN",
    ]:
        yield Attack(
            f"number {number[:24]!r}",
            "/ingest",
            b'{"n":' + number + b"}\n",
            NDJSON,
            frozenset({200, 400}),
            len(number) + 6,
        )
    deep = b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}\n"
    yield Attack("deep nesting NDJSON", "/ingest", deep, NDJSON, frozenset({400}), len(deep))
    yield Attack(
        "deep nesting JSON", "/ingest", deep, "application/json", frozenset({400}), len(deep)
    )
    deep_otlp = b'{"resourceLogs":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    yield Attack(
        "deep nesting OTLP JSON",
        "/v1/logs",
        deep_otlp,
        "application/json",
        frozenset({400}),
        len(deep_otlp),
    )
    key = orjson.dumps({"k" * (2 * MIB): 1}) + b"\n"
    yield Attack("2 MiB key", "/ingest", key, NDJSON, frozenset({400}), len(key))
    keys = orjson.dumps({f"k{i}": i for i in range(200_000)})
    yield Attack(
        "200k keys in one object", "/ingest", keys, "application/json", frozenset({400}), len(keys)
    )
    yield Attack(
        "gzip labelled zstd",
        "/ingest",
        _gz(b'{"a":1}'),
        NDJSON,
        frozenset({400}),
        7,
        {"Content-Encoding": "zstd"},
    )
    yield Attack(
        "zstd labelled gzip",
        "/ingest",
        _zst(b'{"a":1}'),
        NDJSON,
        frozenset({400}),
        7,
        {"Content-Encoding": "gzip"},
    )
    yield Attack(
        "plain labelled gzip",
        "/ingest",
        b'{"a":1}',
        NDJSON,
        frozenset({400}),
        7,
        {"Content-Encoding": "gzip"},
    )
    yield Attack(
        "brotli", "/ingest", b'{"a":1}', NDJSON, frozenset({415}), 7, {"Content-Encoding": "br"}
    )
    yield Attack(
        "long _id",
        "/_bulk",
        b'{"index":{"_id":"' + b"d" * 4096 + b'"}}\n{"a":1}\n',
        NDJSON,
        OK,
        4200,
    )
    yield Attack(
        "non-UTF-8 text", "/ingest", b"\xff\xfe\n" * 1000, "text/plain", frozenset({400}), 3000
    )


def corpus(max_lines: int = 500_000) -> list[Attack]:
    return [*findings(), *variants(max_lines)]


def _varied_lines(count: int, width: int) -> bytes:
    """NDJSON lines of about ``width`` bytes that compress like logs do (not like zeros)."""
    pad = bytes(c for c in range(35, 127) if c != 92) * (width // 91 + 2)
    return b"".join(
        b'{"n":%d,"message":"%s"}\n' % (i, pad[i % 94 : i % 94 + width - 30]) for i in range(count)
    )


def heaviest(max_lines: int = 500_000, max_decompressed: int = 64 * MIB) -> Iterator[Attack]:
    """The worst request each content type may send within the limits (all accepted)."""
    nd = _varied_lines(max_decompressed // 200 - 1, 200)
    yield Attack(
        "NDJSON, 64 MiB decompressed (gzip)",
        "/ingest",
        _gz(nd),
        NDJSON,
        OK,
        len(nd),
        {"Content-Encoding": "gzip"},
    )
    text = nd.replace(b'"', b"'")
    yield Attack(
        "text, 64 MiB decompressed (gzip)",
        "/ingest",
        _gz(text),
        "text/plain",
        OK,
        len(text),
        {"Content-Encoding": "gzip"},
    )
    x = b"x\n" * (max_lines - 1)
    yield Attack("text, line cap of 1-byte lines", "/ingest", x, "text/plain", OK, len(x))
    arr = b"[" + nd.rstrip(b"\n").replace(b"\n", b",") + b"]"
    yield Attack(
        "JSON array, 64 MiB decompressed (gzip)",
        "/ingest",
        _gz(arr),
        "application/json",
        OK,
        len(arr),
        {"Content-Encoding": "gzip"},
    )
    small = b"[" + b",".join([b'{"a":1}'] * (max_lines - 1)) + b"]"
    yield Attack(
        "JSON array, element cap of {'a':1}", "/ingest", small, "application/json", OK, len(small)
    )
    bulk = b"".join(b'{"index":{}}\n' + line + b"\n" for line in nd.split(b"\n")[:99_999])
    yield Attack(
        "ES bulk, action cap (gzip)",
        "/_bulk",
        _gz(bulk),
        NDJSON,
        OK,
        len(bulk),
        {"Content-Encoding": "gzip"},
    )
    records = [
        {
            "body": {"stringValue": f"{i} " + "m" * 120},
            "attributes": [{"key": "k", "value": {"stringValue": str(i)}}],
        }
        for i in range(24_000)
    ]
    doc = orjson.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": records}]}]})
    yield Attack("OTLP JSON, object cap", "/v1/logs", doc, "application/json", OK, len(doc))
    many = orjson.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": records * 2}]}]})
    yield Attack(
        "OTLP JSON, past the object cap",
        "/v1/logs",
        many,
        "application/json",
        frozenset({413}),
        len(many),
    )
    proto = _otlp(max_lines // 3 - 2, "m" * 150, varied=True)
    yield Attack(
        "OTLP protobuf, message cap (gzip)",
        "/v1/logs",
        _gz(proto),
        "application/x-protobuf",
        OK,
        len(proto),
        {"Content-Encoding": "gzip"},
    )
