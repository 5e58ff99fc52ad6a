"""The scanner reads zoned RFC 3339 event times (``_scan.zoned_times``) exactly as the
specification does: every string it reads gets ``parse_time_us``'s value, and it reads
precisely the strings that ``event_time._ZONED`` admits and ``fromisoformat`` accepts; a
flush with any such time maps as the reference path maps it."""

from __future__ import annotations

import re
import struct

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service import scanner
from service.sink.event_time import _ZONED
from service.sink.rules import parse_time_us
from tests.builders import assert_same_as_reference, record

needs_scanner = pytest.mark.skipif(scanner.SCAN is None, reason="TIDEWAY_NO_EXTENSIONS is set")


def two(low: int, high: int) -> st.SearchStrategy[str]:
    return st.integers(low, high).map(lambda v: f"{v:02d}")


# Near-RFC 3339: impossible dates and times, odd fractions, zones and separators included.
times = st.builds(
    lambda y, mo, d, sep, h, mi, se, frac, zone: f"{y}-{mo}-{d}{sep}{h}:{mi}:{se}{frac}{zone}",
    st.one_of(
        st.just("2026"),
        st.integers(0, 9999).map(lambda v: f"{v:04d}"),
        st.sampled_from(["20261", "226"]),
    ),
    two(0, 13),
    two(0, 32),
    st.sampled_from(["T", "t", " "]),
    two(0, 25),
    two(0, 61),
    two(0, 61),
    st.one_of(st.just(""), st.text("0123456789", max_size=8).map(lambda f: "." + f)),
    st.one_of(
        st.sampled_from(["Z", "z", "", "+0530", "+05:30:00", " Z"]),
        st.builds(
            lambda sign, h, m: f"{sign}{h}:{m}", st.sampled_from("+-"), two(0, 25), two(0, 61)
        ),
    ),
)


def zoned(texts: list[str]) -> list[int | None]:
    data = b"".join(t.encode() for t in texts)
    offsets, at = [0], 0
    for t in texts:
        at += len(t.encode())
        offsets.append(at)
    assert scanner.SCAN is not None
    us, ok = scanner.SCAN.zoned_times(
        b"\x01" * len(texts), struct.pack(f"<{len(offsets)}i", *offsets), data
    )
    values = struct.unpack(f"<{len(texts)}q", us)
    return [v if took else None for v, took in zip(values, ok, strict=True)]


@needs_scanner
@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(times, min_size=1, max_size=8))
def test_the_scanner_reads_exactly_the_zoned_times_the_specification_reads(
    texts: list[str],
) -> None:
    for text, got in zip(texts, zoned(texts), strict=True):
        expected = parse_time_us(text)
        if got is not None:
            assert got == expected, text
        # Every string the bulk path hands to Arrow (and fromisoformat reads) is read here.
        admitted = re.fullmatch(_ZONED, text) is not None and expected is not None
        assert (got is not None) == admitted, text


@needs_scanner
def test_leap_days_offsets_and_fractions_are_read_to_the_microsecond() -> None:
    texts = [
        "2024-02-29T23:59:59.000001+05:30",
        "2023-02-29T00:00:00Z",
        "1969-12-31T23:59:59.5Z",
        "0001-01-01T00:00:00-23:59",
        "2026-11-20T11:36:10.681Z",
    ]
    assert zoned(texts) == [
        parse_time_us(texts[0]),
        None,
        -500_000,
        parse_time_us(texts[3]),
        parse_time_us(texts[4]),
    ]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(times, min_size=1, max_size=20))
def test_flushes_with_any_time_string_map_as_the_specification(texts: list[str]) -> None:
    lines = [orjson.dumps({"timestamp": t, "level": "info", "n": i}) for i, t in enumerate(texts)]
    assert_same_as_reference([record(lines)])
