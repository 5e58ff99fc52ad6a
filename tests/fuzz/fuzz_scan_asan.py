"""Mutation fuzzing of the C line scanner under AddressSanitizer (optional; not run by pytest).

    gcc -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -std=c11 -fPIC -shared \\
        $(python3-config --includes) service/_scan.c -o /tmp/asan/_scan$(python3-config --extension-suffix)
    ASAN_OPTIONS=detect_leaks=0 LD_PRELOAD="$(gcc -print-file-name=libasan.so) \\
        $(gcc -print-file-name=libubsan.so)" \\
        .venv/bin/python tests/fuzz/fuzz_scan_asan.py /tmp/asan SEED SECONDS

Lines of service.loggen, cut and spliced with JSON's own bytes, invalid UTF-8, NUL and
escapes, go through both entry points of the sanitized build. Any out-of-bounds access
aborts the run; the properties: a line check_lines vouches for is a non-empty object to
orjson, and a line map_lines maps is an object to orjson (the differential tests in
tests/test_scan.py hold the mapped values themselves to the specification).
"""

from __future__ import annotations

import importlib
import random
import sys
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from service.loggen import ndjson_lines
from service.sink.native import name_groups
from service.sink.rules import FieldMapping

ALPHABET = (
    b'{}[]",:\\ \t\r0123456789.eE+-truefalsnul\x00\x7f\xc3\xa9\xff\xed\xa0\x80\xf0\x9f\x98\x80u/'
)


def mutate(rng: random.Random, line: bytes) -> bytes:
    b = bytearray(line)
    for _ in range(rng.randint(0, 6)):
        op, i = rng.random(), rng.randrange(len(b) + 1)
        if op < 0.4 and b:
            at = min(i, len(b) - 1)
            del b[at : at + rng.randint(1, 5)]
        elif op < 0.8:
            b[i:i] = bytes(rng.choice(ALPHABET) for _ in range(rng.randint(1, 4)))
        else:
            b = b[:i]
    return bytes(b).replace(b"\n", b"")


def main() -> None:
    sys.path.insert(0, sys.argv[1])
    scan = importlib.import_module("_scan")  # the sanitized build, not the package's
    rng = random.Random(int(sys.argv[2]))
    deadline = time.time() + float(sys.argv[3])
    groups = name_groups(FieldMapping())
    base = [*ndjson_lines(2000, seed=9), b'{"a":"\\u00e9\\n","b":[1,2.5,{"c":null}],"ts":1.5e9}']
    runs = 0
    while time.time() < deadline:
        lines = [mutate(rng, rng.choice(base)) for _ in range(rng.randint(1, 8))]
        status, _ = scan.check_lines(b"\n".join(lines), rng.choice([5, 100, 1 << 20]))
        for line, unsure in zip(lines, status, strict=True):
            if not unsure:
                value = orjson.loads(line)
                assert type(value) is dict and value, line
        mapped = scan.map_lines(lines, len(lines), groups)[0]
        for line, took in zip(lines, mapped, strict=True):
            if took:
                assert type(orjson.loads(line)) is dict, line
        runs += 1
    print(f"ok: {runs} bodies")


if __name__ == "__main__":
    main()
