"""Hostile records from foreign producers cost the consumer memory in proportion to their
bytes and rows, and land (issue 15); each record measured in a fresh process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.hostile.consumer import AVRO, RECORDS

REPORT = Path("/tmp/tideway-hostile-consumer.json")
ROOT = Path(__file__).resolve().parents[2]


def _measure(name: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-m", "tests.hostile.consumer", name],
        cwd=ROOT,
        capture_output=True,
        check=True,
        timeout=300,
    )
    result: dict[str, object] = orjson.loads(out.stdout.splitlines()[-1])
    with REPORT.open("ab") as report:
        report.write(orjson.dumps(result) + b"\n")
    return result


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_hostile_record_lands_within_the_memory_bound(name: str) -> None:
    got = _measure(name)
    assert got["dead_letters"] == 0 and got["rows"], got
    assert got["decode_rss_mb"] <= got["decode_bound_mb"], got  # type: ignore[operator]
    assert got["rss_growth_mb"] <= got["bound_mb"], got  # type: ignore[operator]


@pytest.mark.parametrize("name", sorted(AVRO))
def test_hostile_avro_is_dead_lettered_with_its_reason_within_the_memory_bound(name: str) -> None:
    got = _measure(name)
    assert got["dead_letters"] == 1 and got["rows"] == 0, got
    assert AVRO[name][2] in str(got["reason"]), got
    assert got["decode_rss_mb"] <= got["decode_bound_mb"], got  # type: ignore[operator]
