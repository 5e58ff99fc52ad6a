"""Mutation fuzzing of the C extensions under AddressSanitizer (not run by pytest).

    .venv/bin/python tests/fuzz/fuzz_scan_asan.py --seconds 60 [--seed N]

builds ``service/_scan.c``, ``service/_detect.c`` (with ``_chains.c``, ``_redact.c`` and ``_cards.c``) and ``service/_fields.c`` with ``-fsanitize=address,undefined`` into
``build/asan/`` (gcc and the Python headers are all it needs), then runs itself again with
libasan and libubsan preloaded, importing that build instead of the package's. ``make fuzz`` runs it for
``FUZZ_SECONDS``; CI runs a short round.

Lines of service.loggen, cut and spliced with JSON's own bytes, invalid UTF-8, NUL, escapes
and numbers of every class the scanner must be careful with (long digit runs, big and small
exponents, the int64/uint64 and double boundaries) go through both entry points of the
sanitized build. Any out-of-bounds access or undefined behaviour aborts the run; the
properties: a line check_lines vouches for is a non-empty object to orjson, and a line
map_lines maps is an object to orjson (tests/sink/test_scan.py and test_scan_numbers.py
hold the mapped values themselves to the specification). The same lines, as text, go through
redaction's candidate pass and rewrite (``_detect``), in string and large_string columns,
sliced: every value RE2's patterns match is flagged, and the values come out as RE2 and the
Python card rule (``redact._cards_in``) write them; the raw bytes, invalid UTF-8 and all,
go through the rewrite too. And as the messages of access log lines (ALB, S3,
combined: real lines with quotes, escapes, spaces, dashes and parking bytes spliced in)
through ``_fields.split``: the same lines pass and the same fields come out as from the
layouts' specification (``Layout.specified``: RE2 and Arrow's splits); the same lines
through ``_fields.cut`` come out as Arrow's ``split_pattern`` cuts them.
"""

from __future__ import annotations

import argparse
import importlib
import os
import random
import subprocess
import sys
import sysconfig
import time
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from service.loggen import ndjson_lines  # noqa: E402
from service.pipeline.parsers import cut as cutting  # noqa: E402
from service.pipeline.parsers import tokens  # noqa: E402
from service.pipeline.parsers.access import ALB, COMBINED, S3_ACCESS  # noqa: E402
from service.pipeline.redact import _CARD_CANDIDATE, _DETECTORS, _detector  # noqa: E402
from service.sink.native import name_groups  # noqa: E402
from service.sink.rules import FieldMapping  # noqa: E402
from tests.builders import BOUNDARY_NUMBERS  # noqa: E402

ALPHABET = (
    b'{}[]",:\\ \t\r0123456789.eE+-truefalsnul\x00\x7f\xc3\xa9\xff\xed\xa0\x80\xf0\x9f\x98\x80u/'
)
NUMBERS = BOUNDARY_NUMBERS
CHILD = "TIDEWAY_ASAN_CHILD"
MODULES = ("_scan", "_detect", "_fields")
# Each flag of ``_detect.candidates`` and the pattern whose matches it must cover.
PATTERNS = (
    ("EMAIL", _DETECTORS["email"][0].pattern),
    ("CREDIT_CARD", _CARD_CANDIDATE),
    ("IPV4", _DETECTORS["ipv4"][0].pattern),
)
# Bytes that turn the detectors on, spliced into the lines for the candidate pass.
DETECTOR_BITS = (b"@", b"a@b.co", b"4111 1111 1111 1111", b"10.0.0.1", b"-", b" ", b".", b"9" * 19)


def number(rng: random.Random) -> bytes:
    """A number of a risky class: a known boundary, or a long digit run with an exponent."""
    if rng.random() < 0.5:
        return rng.choice(NUMBERS).encode()
    head = str(rng.randint(1, 9)) + "".join(
        rng.choice("0123456789") for _ in range(rng.randint(0, 400))
    )
    frac = "." + "0" * rng.randint(0, 320) + str(rng.randint(1, 9)) if rng.random() < 0.5 else ""
    exp = rng.choice(["", "e", "E", "e-", "e+"])
    if exp:
        exp += str(rng.randint(0, 10 ** rng.randint(1, 4)))
    return (rng.choice(["", "-"]) + head + frac + exp).encode()


def mutate(rng: random.Random, line: bytes) -> bytes:
    b = bytearray(line)
    for _ in range(rng.randint(0, 6)):
        op, i = rng.random(), rng.randrange(len(b) + 1)
        if op < 0.35 and b:
            at = min(i, len(b) - 1)
            del b[at : at + rng.randint(1, 5)]
        elif op < 0.7:
            b[i:i] = bytes(rng.choice(ALPHABET) for _ in range(rng.randint(1, 4)))
        elif op < 0.85:
            b[i:i] = number(rng)
        else:
            b = b[:i]
    return bytes(b).replace(b"\n", b"")


def corpus() -> list[bytes]:
    keys = ["timestamp", "ts", "a", "severity_number", "message", "level"]
    numeric = [orjson.dumps({k: 0}).replace(b"0", n.encode()) for k in keys for n in NUMBERS]
    return [
        *ndjson_lines(2000, seed=9),
        b'{"a":"\\u00e9\\n","b":[1,2.5,{"c":null}],"ts":1.5e9}',
        *numeric,
    ]


def detect_round(detect: Any, rng: random.Random, lines: list[bytes]) -> None:
    """``lines`` (with detector bytes spliced in) as a text column through ``_detect``, by
    any of its byte classifiers."""
    detect.use_path(rng.choice(detect.PATHS))
    texts: list[str | None] = []
    for line in lines:
        b = bytearray(line)
        for _ in range(rng.randint(0, 4)):
            at = rng.randrange(len(b) + 1)
            b[at:at] = rng.choice(DETECTOR_BITS)
        texts.append(None if rng.random() < 0.1 else b.decode(errors="replace"))
    start = rng.randint(0, 2)
    column = pa.array(["x"] * start + texts, rng.choice((pa.string(), pa.large_string()))).slice(
        start
    )
    wide = column.type == pa.large_string()
    _, offsets, data = column.buffers()
    args = (offsets, b"" if data is None else data, column.offset, len(column), wide)
    for flag, pattern in PATTERNS:
        found = detect.candidates(*args, getattr(detect, flag))
        matched = pc.fill_null(pc.match_substring_regex(column, pattern), False).to_pylist()
        for text, hit, flagged in zip(texts, matched, found, strict=True):
            assert flagged or not hit, (flag, text)
    wanted = detect.EMAIL | detect.CREDIT_CARD | detect.IPV4
    done = detect.redacted(*args, wanted)
    assert done is not None, texts  # every text is valid UTF-8 here
    new_offsets, new_data, changed = done
    got = column  # no data back when nothing changed
    if changed:
        validity = None if column.null_count == 0 else column.is_valid().buffers()[1]
        buffers = [validity, pa.py_buffer(new_offsets), pa.py_buffer(new_data)]
        got = pa.Array.from_buffers(column.type, len(column), buffers, column.null_count)
    want = column
    for name in ("email", "credit_card", "ipv4"):
        want = _detector(want, name)
    assert got.to_pylist() == want.to_pylist(), texts
    assert changed == sum(a != b for a, b in zip(texts, got.to_pylist(), strict=True))
    raw_round(detect, rng, lines)


def raw_round(detect: Any, rng: random.Random, lines: list[bytes]) -> None:
    """The bytes themselves (invalid UTF-8 and all) through the candidate pass and the
    rewrite: no access outside the buffers, and an answer that is a column (or None)."""
    raw = pa.array([line + rng.choice(DETECTOR_BITS) for line in lines], pa.binary())
    _, offsets, data = raw.buffers()
    args = (offsets, b"" if data is None else data, 0, len(raw), False)
    wanted = rng.randint(1, 7)
    done = detect.redacted(*args, wanted)
    if done is not None and done[2]:
        ends = np.frombuffer(done[0], np.int32)
        assert ends[0] == 0 and (np.diff(ends) >= 0).all() and ends[-1] == len(done[1])


LAYOUTS = (ALB.layout, S3_ACCESS.layout, COMBINED.layout)
ACCESS_LINES = (
    "http 2018-07-02T22:23:00.186641Z app/lb/50dc 192.168.131.39:2817 10.0.0.1:80 0.000 0.001 "
    '0.000 200 200 34 366 "GET http://www.example.com:80/ HTTP/1.1" "curl/7.46.0" - - arn:tg '
    '"Root=1-58337262-36d228ad5d99923122bbe354" "-" "-" 0 2018-07-02T22:22:48.364000Z '
    '"forward" "-" "-" "10.0.0.1:80" "200" "-" "-" TID_1',
    '127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /a.gif HTTP/1.0" 200 2326 "-" "M \\"x\\""',
    "owner bucket [06/Feb/2019:00:00:38 +0000] 192.0.2.3 arn 3E57 REST.GET.OBJECT key "
    '"GET /key HTTP/1.1" 200 - 113 - 7 - "-" "S3Console/0.4" - hostid SigV4',
)
ACCESS_BITS = ('"', "\\", '\\"', " ", "-", "\n", "\x1d", "\x1e", "é", "[", '""', "  ")


def fields_round(fields: Any, rng: random.Random) -> None:
    """Access log lines (delimiters spliced in) through the sanitized ``_fields.split``, held
    to the layouts' specification."""
    tokens.FIELDS = cutting.FIELDS = fields  # Layout.native and cut call the sanitized build
    texts: list[str | None] = []
    for _ in range(rng.randint(1, 8)):
        text = rng.choice(ACCESS_LINES)
        for _ in range(rng.randint(0, 5)):
            at, cut = rng.randrange(len(text) + 1), rng.randint(0, 3)
            text = text[:at] + rng.choice(ACCESS_BITS) + text[at + cut :]
        texts.append(None if rng.random() < 0.1 else text)
    start = rng.randint(0, 2)
    column = pa.array(["x"] * start + texts, pa.string()).slice(start)
    for layout in LAYOUTS:
        ok, got = layout.native(column)
        want_ok, want = layout.specified(column)
        assert ok.to_pylist() == want_ok.to_pylist(), (layout.name, texts)
        for name, values in got.items():
            values.validate(full=True)
            assert values.to_pylist() == want[name].to_pylist(), (layout.name, name, texts)
    for separator in (" ", '"'):  # the delimited formats' cut, against Arrow's split
        pieces = cutting.cut(column, separator)
        pieces.validate(full=True)
        assert pieces.to_pylist() == pc.split_pattern(column, separator).to_pylist(), texts


def fuzz(build: Path, seed: int, seconds: float) -> None:
    sys.path.insert(0, str(build))
    scan = importlib.import_module("_scan")  # the sanitized builds, not the package's
    detect = importlib.import_module("_detect")
    fields = importlib.import_module("_fields")
    for module in (scan, detect, fields):
        assert Path(module.__file__ or "").parent == build, module.__file__
    rng = random.Random(seed)
    started = time.monotonic()
    deadline = started + seconds
    fields_time, fields_rounds = 0.0, 0
    groups = name_groups(FieldMapping())
    base = corpus()
    runs = 0
    while time.monotonic() < deadline:
        lines = [mutate(rng, rng.choice(base)) for _ in range(rng.randint(1, 8))]
        status, _ = scan.check_lines(b"\n".join(lines), rng.choice([5, 100, 1 << 20]))
        for line, unsure in zip(lines, status, strict=True):
            if not unsure:
                value = orjson.loads(line)
                assert type(value) is dict and value, line
        parts = list(lines)  # every other round lets go of what it mapped (release)
        mapped = scan.map_lines(parts, len(lines), groups, runs % 2 == 1)[0]
        for line, part, took in zip(lines, parts, mapped, strict=True):
            if took:
                assert type(orjson.loads(line)) is dict, line
            assert part is line or (part is None and took and runs % 2 == 1), line
        if runs % 4 == 0:  # Arrow and RE2 around each call make a round ~15x a scan's
            detect_round(detect, rng, lines)
        # The access-log rounds run the Arrow specification beside the C reader under ASan
        # (~100x a scan): held to a quarter of the time, so the scanner keeps its bodies.
        if fields_time < (time.monotonic() - started) / 4:
            before = time.monotonic()
            fields_round(fields, rng)
            fields_rounds += 1
            fields_time += time.monotonic() - before
        runs += 1
    print(
        f"ok: {runs} bodies in {seconds:g} s ({fields_rounds} access-log rounds), seed {seed},"
        f" {len(base)} corpus lines"
    )


def build_asan(out: Path) -> None:
    """The extensions (MODULES) built with ASan and UBSan into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    for name in MODULES:
        build_one(name, out)


def extension_sources(module: str) -> list[str]:
    """A C extension's sources as pyproject.toml builds it (one module may have several)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for ext in config["tool"]["setuptools"]["ext-modules"]:
        if ext["name"] == module:
            return list(ext["sources"])
    raise KeyError(module)


def build_one(name: str, out: Path) -> Path:
    target = out / f"{name}{sysconfig.get_config_var('EXT_SUFFIX')}"
    command = [
        os.environ.get("CC", "gcc"),
        "-O1",
        "-g",
        "-fsanitize=address,undefined",
        "-fno-sanitize-recover=undefined",
        "-fno-omit-frame-pointer",
        "-std=c11",
        "-fPIC",
        "-shared",
        f"-I{sysconfig.get_paths()['include']}",
        *(str(ROOT / source) for source in extension_sources(f"service.{name}")),
        "-o",
        str(target),
    ]
    subprocess.run(command, check=True)
    return target


def sanitizer_libraries() -> str:
    cc = os.environ.get("CC", "gcc")
    libs = [
        subprocess.run(
            [cc, f"-print-file-name={name}"], check=True, capture_output=True, text=True
        ).stdout.strip()
        for name in ("libasan.so", "libubsan.so")
    ]
    return " ".join(libs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to fuzz")
    parser.add_argument("--seed", type=int, default=int(time.time()), help="random seed")
    parser.add_argument("--build", type=Path, default=ROOT / "build" / "asan")
    args = parser.parse_args()
    if os.environ.get(CHILD) == "1":
        fuzz(args.build, args.seed, args.seconds)
        return 0
    build_asan(args.build)
    env = {
        **os.environ,
        CHILD: "1",
        "LD_PRELOAD": sanitizer_libraries(),
        # Python itself is not instrumented: its allocations would read as leaks.
        "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1",
        "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
    }
    argv = [sys.executable, __file__, "--seconds", str(args.seconds), "--seed", str(args.seed)]
    print(f"fuzzing {args.build} for {args.seconds:g} s, seed {args.seed}", flush=True)
    return subprocess.run([*argv, "--build", str(args.build)], env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
