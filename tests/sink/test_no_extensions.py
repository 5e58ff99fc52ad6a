"""TIDEWAY_NO_EXTENSIONS=1 switches the C scanner off for the whole process: the same rows,
and the same answers from the line check, through the pure path."""

from __future__ import annotations

import os
import subprocess
import sys

from service.scanner import check_lines

PURE_RUN = """
import hashlib
from service import scanner
from service.sink import native
from service.sink.build import build_table
from service.sink.rules import FieldMapping
from tests.builders import record
from service.loggen import ndjson_lines

assert scanner.NO_EXTENSIONS and scanner.SCAN is None
assert not native.supports(FieldMapping())
status, ends = scanner.check_lines(b'{"a":1}\\n[1]\\n{"b":2}', 100)
assert status == b"\\x01\\x01\\x01", status
assert list(memoryview(ends).cast("q")) == [7, 11, 19]
table, bad = build_table([record(ndjson_lines(300, seed=3))], FieldMapping())
print(table.num_rows, len(bad), hashlib.sha256(str(table.to_pylist()).encode()).hexdigest())
"""


def run(switch: str) -> str:
    env = {**os.environ, "TIDEWAY_NO_EXTENSIONS": switch}
    code = PURE_RUN if switch == "1" else PURE_RUN.replace("assert", "pass  #")
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_switch_gives_the_pure_path_and_the_same_rows() -> None:
    assert run("1") == run("0")


def test_with_the_extension_check_lines_vouches_for_objects() -> None:
    status, _ = check_lines(b'{"a":1}\n[1]', 100)
    expected = (
        b"\x01\x01" if os.environ.get("TIDEWAY_NO_EXTENSIONS", "") not in ("", "0") else b"\x00\x01"
    )
    assert status == expected
