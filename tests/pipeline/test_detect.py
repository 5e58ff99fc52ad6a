"""Redaction's native half (service/_detect.c through service/pipeline/detect.py) against its
specification: every value a detector's RE2 pattern matches is flagged, cards are redacted as
the Python rule redacts them, and redaction gives the same bytes with the extension off."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.pipeline import detect
from service.pipeline.redact import _CARD_CANDIDATE, _DETECTORS, _detector, redact
from service.scanner import DETECT
from tests.pipeline.test_redact import DIGIT_TEXT, card

ROOT = Path(__file__).resolve().parents[2]
needs_extension = pytest.mark.skipif(DETECT is None, reason="TIDEWAY_NO_EXTENSIONS is set")

# The pattern each flag stands for: a value it matches must be flagged.
PATTERNS = {
    "email": _DETECTORS["email"][0].pattern,
    "credit_card": _CARD_CANDIDATE,
    "ipv4": _DETECTORS["ipv4"][0].pattern,
}
# The characters the patterns turn on (word and non-word, separators, dots, '@', non-ASCII).
ALPHABET = "0123456789 -.@_aZx%+:/,\té"
octets = st.integers(0, 300).map(str)
PIECE = st.one_of(
    st.text(ALPHABET, max_size=8),
    st.tuples(
        st.text("ab1.%+-_", min_size=1, max_size=5), st.sampled_from(["b.co", "x-1.org", "c"])
    ).map("@".join),
    card(),
    st.lists(octets, min_size=3, max_size=5).map(".".join),
    st.integers(0, 10**20).map(str),
)
TEXT = st.lists(PIECE, max_size=6).map("".join)


def _column(texts: list[str | None], start: int, large: bool) -> pa.Array[Any]:
    """``texts`` as a column, sliced from ``start`` (after as many lines before it)."""
    column = pa.array(["x 10.0.0.1 y"] * start + texts, pa.large_string() if large else pa.string())
    return column.slice(start)


@needs_extension
@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.one_of(TEXT, st.none()), min_size=1, max_size=12), st.integers(0, 3), st.booleans()
)
def test_every_value_a_pattern_matches_is_flagged(
    texts: list[str | None], start: int, large: bool
) -> None:
    column = _column(texts, start, large)
    for name, pattern in PATTERNS.items():
        matched = pc.fill_null(pc.match_substring_regex(column, pattern), False).to_pylist()
        flagged = detect.flagged(column, [name]).tolist()
        missed = [t for t, m, f in zip(texts, matched, flagged, strict=True) if m and not f]
        assert not missed, (name, missed)
    together = detect.flagged(column, list(PATTERNS))
    each = [detect.flagged(column, [name]) for name in PATTERNS]
    assert together.tolist() == (each[0] | each[1] | each[2]).tolist()


LONG_TEXT = st.lists(PIECE, max_size=40).map(" ".join)  # values across 64-byte blocks


@needs_extension
@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.one_of(LONG_TEXT, TEXT, st.none()), min_size=1, max_size=12),
    st.integers(0, 3),
    st.booleans(),
)
def test_every_byte_classifier_flags_the_same_values(
    texts: list[str | None], start: int, large: bool
) -> None:
    # The portable, SSE2 and AVX2 classifiers (those this CPU has) of the digit half.
    assert DETECT is not None and DETECT.PATHS[0] == "portable"
    column = _column(texts, start, large)
    default = DETECT.use_path(DETECT.PATHS[0])
    try:
        portable = detect.flagged(column, list(PATTERNS)).tolist()
        for path in DETECT.PATHS[1:]:
            DETECT.use_path(path)
            assert detect.flagged(column, list(PATTERNS)).tolist() == portable, path
    finally:
        DETECT.use_path(default)


@needs_extension
def test_an_unknown_byte_classifier_is_refused() -> None:
    assert DETECT is not None
    with pytest.raises(ValueError, match="no candidate path 'neon'"):
        DETECT.use_path("neon")


@needs_extension
def test_what_holds_no_candidate_is_not_flagged() -> None:
    # The pass is worth running only if it leaves most values alone.
    plain = [
        "2fa91425cb0088539d2c67eda13ffe79",  # hex ids: digit runs inside a word
        "7253edc618187993",
        '{"status":200,"duration_ms":12.5,"bytes":123456789012}',  # 12 digits
        "ip-10-0-1-243.ec2.internal",  # no dots between the runs
        "version 1.2.3 at user@localhost",  # three runs; no top-level domain
        "id_4111111111111111",  # a card pattern needs a word boundary before it
        "v1.2.3.4",  # a dotted quad needs one too
        None,
        "",
    ]
    for name in PATTERNS:
        assert not detect.flagged(pa.array(plain, pa.string()), [name]).any(), name
    found = ["a bob@example.com", "4111 1111 1111 1111", "from 10.1.2.3:80"]
    flags = [detect.flagged(pa.array(found, pa.string()), [name]) for name in PATTERNS]
    assert [f.tolist() for f in flags] == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]


# Pieces that sit on the edges of the e-mail and IPv4 rules: TLD lengths, labels, neighbours
# that are dots, word characters or characters of several bytes, octets past 255 or with a
# leading zero, addresses one character apart.
EDGES = st.sampled_from(
    [
        "a@b.c-d.com",
        ".x@y.org",
        "a@b.co_",
        "a@b.co1",
        "a@-b.com",
        "a@b-.com",
        "a@b..com",
        "a@b.c.d.e.fg",
        "x@y." + "a" * 63,
        "x@y." + "a" * 64,
        "x@y.com@z.org",
        "1.2.3.4.",
        "1.2.3.4..",
        "01.2.3.4",
        "255.255.255.255",
        "1.2.3.256",
        "1.2.3.4:443",
        "1.2.3.4.5",
        "é1.2.3.4é",
        "中1.2.3.4😀",
        "1.1.1.1 2.2.2.2 3.3.3.3",
        "9.9.9.9.x",
        "_1.2.3.4",
    ]
)
REWRITE_TEXT = st.lists(
    st.one_of(PIECE, EDGES, st.text("é中😀 .:@-_", max_size=2)), max_size=8
).map("".join)
NATIVE_SETS = [
    [n for n in ("email", "credit_card", "ipv4") if n in chosen]
    for chosen in ({"email"}, {"credit_card"}, {"ipv4"}, {"email", "ipv4"}, set(PATTERNS))
]


def _specified(column: pa.Array[Any], names: list[str]) -> list[str | None]:
    """What RE2 and the Python card rule leave of ``column``: the detectors one by one."""
    for name in names:
        column = _detector(column, name)
    return column.to_pylist()


@needs_extension
@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.one_of(DIGIT_TEXT, REWRITE_TEXT, st.none()), min_size=1, max_size=10),
    st.integers(0, 3),
    st.booleans(),
    st.sampled_from(NATIVE_SETS),
)
def test_values_are_rewritten_as_the_patterns_rewrite_them(
    texts: list[str | None], start: int, large: bool, names: list[str]
) -> None:
    column = _column(texts, start, large)
    out = detect.redacted(column, names)
    assert out is not None and out.type == column.type
    assert out.to_pylist() == _specified(column, names)


@needs_extension
def test_a_column_without_anything_to_redact_comes_back_as_it_is() -> None:
    column = pa.array(["no card", None, "4111 1111 1111 1112", "1.2.3.999"], pa.string())
    assert detect.redacted(column, list(PATTERNS)) is column


@needs_extension
@pytest.mark.parametrize("invalid", [b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xc0\xaf"])
def test_a_value_that_is_not_utf8_is_left_to_re2(invalid: bytes) -> None:
    raw = b"from " + invalid + b"10.0.0.1 x"
    column = pa.Array.from_buffers(
        pa.string(), 1, [None, pa.py_buffer(np.array([0, len(raw)], np.int32)), pa.py_buffer(raw)]
    )
    assert detect.redacted(column, ["ipv4"]) is None
    assert detect.redacted(column, ["email", "credit_card"]) is column  # no neighbour read
    # Only a value the IPv4 step reads must be UTF-8: one without a dotted quad is rewritten.
    mail = b"to a@b.co " + invalid
    column = pa.Array.from_buffers(
        pa.string(), 1, [None, pa.py_buffer(np.array([0, len(mail)], np.int32)), pa.py_buffer(mail)]
    )
    out = detect.redacted(column, list(PATTERNS))
    assert out is not None
    assert out.cast(pa.binary()).to_pylist() == [b"to [REDACTED:email] " + invalid]


def test_without_the_extension_no_detector_is_native() -> None:
    column = pa.array(["a"], pa.string())
    assert detect.native(PATTERNS, column) == (frozenset() if DETECT is None else set(PATTERNS))
    assert not detect.native(PATTERNS, pa.array(["a"], pa.string_view()))


REDACT_RUN = """
import hashlib, random, sys
import pyarrow as pa
from service.pipeline import detect
from service.pipeline.redact import DETECTORS, redact

pieces = ["bob@example.com", "x.y+z@mail.example.co.uk", "@", "a@b", "4111 1111 1111 1111",
          "4012-8888-8888-1881", "378282246310005", "4111111111111112", "1234567890123",
          "10.0.0.1", "256.1.1.1", "1.2.3.4.5", "10.0.0.1:443", "::ffff:1.2.3.4", "2001:db8::1",
          "AKIAIOSFODNN7EXAMPLE", "Bearer abcdefgh1234", "é", " ", "-", ".", ",", "_", "x", "7",
          "2fa91425cb0088539d2c67eda13ffe79", '{"a":"u1@example.org","n":12345}']
rng = random.Random(int(sys.argv[1]))
texts = ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 8))) for _ in range(20000)]
texts = [None if rng.random() < 0.02 else t for t in texts]
column = pa.array(texts, pa.string())
assert bool(detect.NATIVE) == (sys.argv[2] == "native")
for chosen in (sorted(DETECTORS), ["email", "credit_card", "ipv4"], ["credit_card"], ["ipv4", "jwt"]):
    out = redact(column.slice(3), chosen)
    print(chosen, hashlib.sha256(repr(out.to_pylist()).encode()).hexdigest())
"""


def _redacted_digests(seed: int, switch: str) -> str:
    env = {**os.environ, "TIDEWAY_NO_EXTENSIONS": switch}
    variant = "pure" if switch == "1" else "native"
    done = subprocess.run(
        [sys.executable, "-c", REDACT_RUN, str(seed), variant],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@needs_extension
@pytest.mark.parametrize("seed", [1, 2])
def test_redaction_gives_the_same_bytes_with_the_extension_off(seed: int) -> None:
    native = _redacted_digests(seed, "0")
    assert native.count("\n") == 4  # one digest a choice of detectors
    assert native == _redacted_digests(seed, "1")


def test_redaction_redacts_what_the_extension_knows() -> None:
    column = pa.array(["bob@example.com 4111 1111 1111 1111 from 10.0.0.1."], pa.string())
    out = redact(column, ["email", "credit_card", "ipv4"]).to_pylist()
    assert out == ["[REDACTED:email] [REDACTED:credit_card] from [REDACTED:ipv4]."]


@needs_extension
def test_the_three_detectors_are_one_call_when_no_chosen_detector_splits_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # ipv6 sits between credit_card and ipv4 in the fixed order: unchosen, it splits nothing.
    calls: list[list[str]] = []
    rewrite = detect.redacted

    def counted(values: pa.Array[Any], names: list[str]) -> pa.Array[Any] | None:
        calls.append(list(names))
        return rewrite(values, names)

    monkeypatch.setattr(detect, "redacted", counted)
    column = pa.array(["bob@example.com 4111 1111 1111 1111 from 10.0.0.1."], pa.string())
    assert redact(column, ["ipv4", "email", "credit_card"]).to_pylist() == [
        "[REDACTED:email] [REDACTED:credit_card] from [REDACTED:ipv4]."
    ]
    assert calls == [["email", "credit_card", "ipv4"]]
    calls.clear()
    redact(column, ["ipv4", "email", "ipv6"])
    assert calls == [["email"], ["ipv4"]]


@needs_extension
@pytest.mark.parametrize("wide", [False, True])
@pytest.mark.parametrize(
    ("ends", "reason"),
    [
        ([0, 5, 3, 8], "offsets outside the data"),  # out of order
        ([-1, 2, 4, 8], "offsets outside the data"),  # before the data
        ([0, 2, 4, 9], "offsets outside the data"),  # past the data (8 bytes)
        ([0, 2], "offsets too short for the slice"),  # three values asked for
    ],
)
def test_offsets_that_do_not_fit_the_data_are_refused(
    ends: list[int], reason: str, wide: bool
) -> None:
    # The module reads raw buffers: whatever a caller passes, it never reads past them.
    assert DETECT is not None
    offsets = np.array(ends, np.int64 if wide else np.int32).tobytes()
    for call in (DETECT.candidates, DETECT.redacted):
        with pytest.raises(ValueError, match=reason):
            call(offsets, b"10.0.0.1", 0, 3, wide, DETECT.IPV4)
