"""Redaction: what each detector replaces, what it leaves alone, and that nothing detected survives."""

from __future__ import annotations

import re

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.pipeline.redact import (
    DETECTORS,
    _cards_in,
    _redact_cards,
    _settled_cards,
    luhn_valid,
    redact,
)


def redacted(text: str, *detectors: str, custom: tuple[str, ...] = ()) -> str:
    out = redact(pa.array([text], pa.string()), list(detectors), custom)[0].as_py()
    assert isinstance(out, str)
    return out


def test_the_detectors_are_the_documented_six() -> None:
    assert {"email", "credit_card", "aws_key", "jwt", "ipv4", "ipv6"} == DETECTORS


@pytest.mark.parametrize(
    ("detector", "text", "expected"),
    [
        ("email", "mail bob.smith+logs@example.co.uk now", "mail [REDACTED:email] now"),
        ("email", "<jane_doe@mail.example.com>", "<[REDACTED:email]>"),
        ("credit_card", "paid with 4111 1111 1111 1111.", "paid with [REDACTED:credit_card]."),
        ("credit_card", "card=4012-8888-8888-1881;", "card=[REDACTED:credit_card];"),
        ("credit_card", "amex 378282246310005 ok", "amex [REDACTED:credit_card] ok"),
        ("credit_card", "4111111111111111 22", "[REDACTED:credit_card] 22"),
        (
            "credit_card",
            "400000000000006 3558 0000 0000 0000",
            "[REDACTED:credit_card] [REDACTED:credit_card]",
        ),
        (
            "credit_card",
            "378282246310005 4111-1111-1111-1111",
            "[REDACTED:credit_card] [REDACTED:credit_card]",
        ),
        (
            "credit_card",
            "4111 1111 1111 1111 5555 5555 5555 4444",
            "[REDACTED:credit_card] [REDACTED:credit_card]",
        ),
        (
            "credit_card",
            "1234 4111111111111111-4012888888881881",
            "1234 [REDACTED:credit_card]-[REDACTED:credit_card]",
        ),
        ("aws_key", "key AKIAIOSFODNN7EXAMPLE used", "key [REDACTED:aws_key] used"),
        ("aws_key", "ASIAY34FZKBOKMUTVV7A,", "[REDACTED:aws_key],"),
        (
            "aws_key",
            "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "aws_secret_access_key = [REDACTED:aws_key]",
        ),
        (
            "aws_key",
            '{"SecretAccessKey": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}',
            '{"SecretAccessKey": "[REDACTED:aws_key]"}',
        ),
        (
            "jwt",
            "token=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U&x=1",
            "token=[REDACTED:jwt]&x=1",
        ),
        ("jwt", "Authorization: Bearer mF_9.B5f-4.1JqM", "Authorization: Bearer [REDACTED:jwt]"),
        ("jwt", "authorization=bearer mF_9.B5f-4.1JqM", "authorization=bearer [REDACTED:jwt]"),
        (
            "ipv4",
            "from 10.0.0.1,192.168.1.254 and 8.8.8.8.",
            "from [REDACTED:ipv4],[REDACTED:ipv4] and [REDACTED:ipv4].",
        ),
        ("ipv4", "client=203.0.113.9:443", "client=[REDACTED:ipv4]:443"),
        (
            "ipv6",
            "src 2001:db8::ff00:42:8329 dst fe80::1%eth0",
            "src [REDACTED:ipv6] dst [REDACTED:ipv6]%eth0",
        ),
        ("ipv6", "[2001:0db8:85a3:0000:0000:8a2e:0370:7334]:443", "[[REDACTED:ipv6]]:443"),
        ("ipv6", "mapped ::ffff:192.0.2.128 and ::1", "mapped [REDACTED:ipv6] and [REDACTED:ipv6]"),
    ],
)
def test_detector_replaces_what_it_finds(detector: str, text: str, expected: str) -> None:
    assert redacted(text, detector) == expected


@pytest.mark.parametrize(
    ("detector", "text", "expected"),
    [
        ("email", "bob@example.com", "[REDACTED:email]"),
        ("credit_card", "4111 1111 1111 1111", "[REDACTED:credit_card]"),
        ("aws_key", "AKIAIOSFODNN7EXAMPLE", "[REDACTED:aws_key]"),
        (
            "aws_key",
            "secret_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "secret_key=[REDACTED:aws_key]",
        ),
        ("jwt", "Bearer mF_9.B5f-4.1JqM", "Bearer [REDACTED:jwt]"),
        ("ipv4", "10.0.0.1", "[REDACTED:ipv4]"),
        ("ipv6", "2001:db8::1", "[REDACTED:ipv6]"),
    ],
)
def test_a_value_between_word_characters_in_a_column_is_found_as_alone(
    detector: str, text: str, expected: str
) -> None:
    # A column is searched whole first (its values joined): a value's edges must read there
    # as they read alone, beside neighbours that end and start with a word character.
    column = pa.array(["word", text, None, "9"], pa.string())
    assert redact(column, [detector]).to_pylist() == ["word", expected, None, "9"]


@pytest.mark.parametrize(
    ("detector", "text"),
    [
        ("email", "user@localhost and @handle and a@b"),
        ("credit_card", "4111 1111 1111 1112"),  # 16 digits, Luhn fails
        ("credit_card", "order 1234567812345670"),  # Luhn-valid, but no card starts with 1
        ("credit_card", "ts=1683355579981 id=5105105105105"),  # 13 digits, Luhn fails
        (
            "aws_key",
            "AKIAIOSFODNN7EXAMPL and XAKIAIOSFODNN7EXAMPLE",
        ),  # too short; inside a longer word
        ("aws_key", "secret=short"),
        ("jwt", "eyJhbGciOiJIUzI1NiJ9 alone, the bearer of responsibilities, Bearer short"),
        ("ipv4", "version 1.2.3.4.5, 256.1.1.1, 10.0.0"),
        ("ipv6", "12:30:45 and std::vector and dead:beef"),
    ],
)
def test_detector_leaves_lookalikes_alone(detector: str, text: str) -> None:
    assert redacted(text, detector) == text


def test_luhn() -> None:
    assert luhn_valid("4111111111111111") and luhn_valid("378282246310005")
    assert not luhn_valid("4111111111111112")


def test_only_the_chosen_detectors_run_in_a_fixed_order() -> None:
    text = "bob@example.com from 10.0.0.1 key AKIAIOSFODNN7EXAMPLE"
    assert redacted(text, "ipv4") == "bob@example.com from [REDACTED:ipv4] key AKIAIOSFODNN7EXAMPLE"
    assert redacted(text, "ipv4", "email", "aws_key") == redacted(text, "aws_key", "email", "ipv4")
    assert redacted(text) == text


def test_custom_patterns_become_redacted_custom() -> None:
    text = "user=alice ssn=078-05-1120 from 10.0.0.1"
    assert (
        redacted(text, "ipv4", custom=(r"\d{3}-\d{2}-\d{4}",))
        == "user=alice ssn=[REDACTED:custom] from [REDACTED:ipv4]"
    )


def test_unknown_detector_and_bad_pattern_are_named() -> None:
    with pytest.raises(ValueError, match="unknown detector 'emial'"):
        redact(pa.array(["x"]), ["emial"])
    with pytest.raises(ValueError, match=r"custom pattern '\(x'"):
        redact(pa.array(["x"]), [], [r"(x"])
    with pytest.raises(ValueError, match="custom pattern"):
        redact(pa.array(["x"]), [], [r"a(?=b)"])  # RE2 has no lookaheads


def test_nulls_stay_null_and_length_is_kept() -> None:
    out = redact(pa.array(["a@example.com", None, "4111111111111111"]), ["email", "credit_card"])
    assert out.to_pylist() == ["[REDACTED:email]", None, "[REDACTED:credit_card]"]


# The property: any detected value, wherever it sits among other text, is gone after redaction.
def _card(draw: st.DrawFn) -> str:
    prefix = draw(st.sampled_from(["4", "51", "37", "6011", "35"]))
    length = draw(st.sampled_from([16, 15, 19, 13])) if prefix == "4" else 16
    body = prefix + "".join(
        draw(
            st.lists(
                st.sampled_from("0123456789"),
                min_size=length - len(prefix) - 1,
                max_size=length - len(prefix) - 1,
            )
        )
    )
    check = next(str(d) for d in range(10) if luhn_valid(body + str(d)))
    digits = body + check
    sep = draw(st.sampled_from(["", " ", "-"]))
    return sep.join(digits[i : i + 4] for i in range(0, len(digits), 4))


HEX = "0123456789abcdef"


@st.composite
def detected(draw: st.DrawFn) -> tuple[str, str, str]:
    """(detector, the value it must remove, the text written around it)."""
    kind = draw(st.sampled_from(sorted(DETECTORS)))
    word = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=12)
    octet = st.integers(0, 255).map(str)
    group = st.text(HEX, min_size=1, max_size=4)
    if kind == "email":
        value = f"{draw(word)}@{draw(word)}.{draw(st.sampled_from(['com', 'org', 'co.uk', 'io']))}"
    elif kind == "credit_card":
        value = _card(draw)
    elif kind == "aws_key":
        if draw(st.booleans()):
            value = draw(st.sampled_from(["AKIA", "ASIA"])) + draw(
                st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", min_size=16, max_size=16)
            )
        else:
            secret = draw(
                st.text(
                    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/+",
                    min_size=40,
                    max_size=40,
                )
            )
            return kind, secret, f"aws_secret_access_key={secret}"
    elif kind == "jwt":
        part = st.text(
            "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-",
            min_size=4,
            max_size=30,
        )
        value = f"eyJ{draw(part)}.eyJ{draw(part)}.{draw(part)}"
    elif kind == "ipv4":
        value = ".".join(draw(st.lists(octet, min_size=4, max_size=4)))
    else:
        groups = draw(st.lists(group, min_size=8, max_size=8))
        cut = draw(st.integers(0, 8))
        value = (
            ":".join(groups)
            if cut == 8
            else ":".join(groups[:cut]) + "::" + ":".join(groups[cut + 2 :])
        )
        if value.endswith("::") and cut < 2:
            value = ":".join(groups)
    return kind, value, value


SEPARATORS = st.sampled_from(
    [" ", ", ", "; ", " | ", "\t", " (", ") ", ' "', '" ', " [", "] ", " =", " <", "> "]
)
FILLER = st.text("abcdefghijklmnopqrstuvwxyz ,;:=()[]{}\"'/\t0123456789.-_@", max_size=20)


ROW = st.lists(st.tuples(FILLER, SEPARATORS, detected(), SEPARATORS), min_size=1, max_size=6)


@settings(max_examples=60, deadline=None)
@given(st.lists(ROW, min_size=1, max_size=20))
def test_redaction_never_leaves_a_detected_value(
    rows: list[list[tuple[str, str, tuple[str, str, str], str]]],
) -> None:
    texts = [
        "".join(f"{filler}{left}{written}{right}" for filler, left, (_, _, written), right in parts)
        for parts in rows
    ]
    out = redact(pa.array(texts, pa.string()), sorted(DETECTORS)).to_pylist()
    for parts, text, line in zip(rows, texts, out, strict=True):
        for _, _, (kind, value, _), _ in parts:
            assert value not in line, (kind, value, text, line)
            assert f"[REDACTED:{kind}]" in line


def test_property_generator_makes_values_the_detectors_would_find() -> None:
    # Guards the property test against a generator that only ever makes values nobody detects.
    assert re.fullmatch(r"\[REDACTED:ipv6\]", redacted("1:2:3:4:5:6:7:8", "ipv6"))


def test_ipv6_limits_are_as_documented() -> None:
    assert redacted("a:b:: and dead::", "ipv6") == "[REDACTED:ipv6] and dead::"


@st.composite
def card(draw: st.DrawFn) -> str:
    return _card(draw)


@settings(max_examples=40, deadline=None)
@given(st.lists(card(), min_size=2, max_size=5), st.sampled_from([" ", "-", ", ", "/"]))
def test_cards_one_separator_apart_are_each_redacted(cards: list[str], separator: str) -> None:
    out = redacted(separator.join(cards), "credit_card")
    assert out == separator.join(["[REDACTED:credit_card]"] * len(cards))


DIGIT_TEXT = st.lists(
    st.one_of(
        card(),
        st.text(alphabet="0123456789 -", min_size=10, max_size=30),
        st.integers(10**12, 10**20).map(str),
        st.sampled_from(["id", "x", "é", "card:", "a_", "ok."]),
    ),
    min_size=1,
    max_size=4,
).map(" ".join)


@settings(max_examples=100, deadline=None)
@given(st.lists(DIGIT_TEXT, min_size=1, max_size=8))
def test_cards_settled_in_arrow_are_redacted_as_the_python_rule_redacts_them(
    texts: list[str],
) -> None:
    # The columnar fast path (one run of 13 to 19 digits, Luhn in numpy) against the rule's
    # readable form, line by line.
    values = pa.array(texts, pa.string())
    assert _settled_cards(values).to_pylist() == [_cards_in(t) for t in texts]


@pytest.mark.parametrize("text", ["x 5-74012-8888-8888-1881a", "card 4 1111 1111 1111 111 ok"])
def test_a_card_whose_first_group_is_one_digit_is_found_by_the_pure_path(text: str) -> None:
    # The RE2 candidate filter once wanted two digits before the first separator: the rule
    # (_cards_in) redacts these, and so must the path without the extension.
    assert "[REDACTED:credit_card]" in _cards_in(text)
    column = pa.array([text], pa.string())
    assert _redact_cards(column).to_pylist() == [_cards_in(text)]


def test_a_slice_of_a_column_is_redacted_by_its_own_values() -> None:
    column = pa.array(["bob@example.com", "x", None, "y", "al@example.org"])
    assert redact(column.slice(1, 3), ["email"]).to_pylist() == ["x", None, "y"]
    assert redact(column.slice(1, 4), ["email"]).to_pylist() == ["x", None, "y", "[REDACTED:email]"]


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 700),
    st.lists(st.tuples(st.integers(0, 699), detected()), max_size=6),
    st.lists(st.integers(0, 699), max_size=20),
    st.integers(0, 3),
)
def test_a_column_is_redacted_as_each_of_its_values_alone(
    size: int, found: list[tuple[int, tuple[str, str, str]]], nulls: list[int], start: int
) -> None:
    # Rows are searched a block at a time first: a few detected values among hundreds of
    # rows (in several blocks, at block edges, beside nulls, in a slice) are each found.
    texts: list[str | None] = [f"line {i} ok 10.0.{i}" for i in range(size + start)]
    for row, (_, _, written) in found:
        texts[row % len(texts)] = f"x {written} y"
    for row in nulls:
        texts[row % len(texts)] = None
    column = pa.array(texts, pa.string()).slice(start)
    alone = [None if t is None else redacted(t, *sorted(DETECTORS)) for t in texts[start:]]
    assert redact(column, sorted(DETECTORS)).to_pylist() == alone


def test_repeated_values_are_each_redacted_as_alone() -> None:
    # Found values that repeat are redacted once each, then put back in every row.
    texts = ["paid 4111 1111 1111 1111", None, "mail a@example.com", "10.1.2.3:80", "ok"] * 40
    alone = [None if t is None else redacted(t, *sorted(DETECTORS)) for t in texts]
    assert redact(pa.array(texts, pa.string()), sorted(DETECTORS)).to_pylist() == alone
    assert alone[:5] == [
        "paid [REDACTED:credit_card]",
        None,
        "mail [REDACTED:email]",
        "[REDACTED:ipv4]:80",
        "ok",
    ]
