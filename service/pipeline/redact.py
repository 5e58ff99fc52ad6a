"""Redaction: built-in detectors and custom patterns replace what they find by ``[REDACTED:<name>]``.

Every pattern runs in RE2 through Arrow (``replace_substring_regex``), column-wise. RE2 has no
lookarounds, so a pattern that must not start or end inside a longer token (an IPv4 address inside
``1.2.3.4.5``) consumes one neighbouring character and writes it back (``\\1…\\2``); two addresses
one character apart then need a second pass, which the detector makes. Only the Luhn check of
credit-card candidates runs in Python, on the lines RE2 found a candidate in.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from pyarrow import compute

from .parsers.base import array_of

_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
IPV4 = rf"{_OCTET}(?:\.{_OCTET}){{3}}"
_H = r"[0-9A-Fa-f]{1,4}"
IPV6 = (
    rf"(?:(?:{_H}:){{7}}{_H}|(?:{_H}:){{6}}{IPV4}|::(?:[fF]{{4}}(?::0{{1,4}})?:)?{IPV4}"
    rf"|(?:{_H}:){{1,4}}:{IPV4}|(?:{_H}:){{1,6}}:(?:{_H}:){{0,5}}{_H}|::(?:{_H}:){{0,6}}{_H}|(?:{_H}:){{2,7}}:)"
)
# A sentence may end right after an address ("from 10.0.0.1."), so one trailing dot is allowed;
# an IPv4 address may be followed by its port (":443"), an IPv6 one may not be followed by ":".
_END_V6 = r"(\.?(?:[^0-9A-Za-z_.:]|$))"
_END_V4 = r"(\.?(?:[^0-9A-Za-z_.]|$))"

# pyarrow-stubs type no implicit scalar casts (array + int, str joined with an array): compute is untyped here.
pc: Any = compute


@dataclass(frozen=True)
class Detector:
    """An RE2 pattern and its replacement; ``passes`` > 1 where the pattern consumes a neighbour."""

    pattern: str
    replacement: str
    passes: int = 1


def _label(name: str) -> str:
    return f"[REDACTED:{name}]"


_CARD_CANDIDATE = r"\b[2-6][0-9](?:[ -]?[0-9]){11,17}\b"

# Applied in this order, whatever order a configuration lists them in (same config, same bytes):
# the narrow, labelled secrets first, then addresses; IPv6 before IPv4 so ::ffff:1.2.3.4 is one value.
_DETECTORS: dict[str, tuple[Detector, ...]] = {
    "aws_key": (
        Detector(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b", _label("aws_key")),
        Detector(
            r"(?i)((?:aws_?)?secret_?(?:access_?)?key[\"']?\s*[:=]\s*[\"']?)[A-Za-z0-9/+=]{40}([^A-Za-z0-9/+=]|$)",
            rf"\1{_label('aws_key')}\2",
        ),
    ),
    "jwt": (
        Detector(r"\beyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*", _label("jwt")),
        # "Bearer" as a header writes it, or any case after "Authorization:"; 8 characters at least,
        # so prose ("the bearer of news") is left alone.
        Detector(
            r"((?i:authorization)\s*[:=]\s*[\"']?(?i:bearer)\s+|\bBearer\s+)[A-Za-z0-9._~+/-]{8,}=*",
            rf"\1{_label('jwt')}",
        ),
    ),
    "email": (
        Detector(
            r"[A-Za-z0-9._%+-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,63}\b",
            _label("email"),
        ),
    ),
    "credit_card": (),  # RE2 finds candidates; Luhn decides (see _redact_cards)
    "ipv6": (Detector(rf"(^|[^0-9A-Za-z_:.]){IPV6}{_END_V6}", rf"\1{_label('ipv6')}\2", passes=2),),
    "ipv4": (Detector(rf"(^|[^0-9A-Za-z_.]){IPV4}{_END_V4}", rf"\1{_label('ipv4')}\2", passes=2),),
}
DETECTORS: frozenset[str] = frozenset(_DETECTORS)

_CARD = re.compile(_CARD_CANDIDATE, re.ASCII)
_SEPARATOR = re.compile(r"[ -]")


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum of a string of digits (card numbers end with their check digit)."""
    total = 0
    for i, char in enumerate(reversed(digits)):
        d = ord(char) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card_length(candidate: str) -> int:
    """The length of the longest Luhn-valid card number the candidate starts with (0: none).

    A candidate may run on into the next group of digits ("4111 1111 1111 1111 22"), so each
    cut at a separator is tried, longest first.
    """
    cuts = [m.start() for m in _SEPARATOR.finditer(candidate)] + [len(candidate)]
    for cut in reversed(cuts):
        digits = candidate[:cut].replace(" ", "").replace("-", "")
        if 13 <= len(digits) <= 19 and luhn_valid(digits):
            return cut
    return 0


def _cards_in(text: str) -> str:
    """The text with every Luhn-valid card number redacted, scanning on from where each one ends."""
    out: list[str] = []
    pos = 0
    while match := _CARD.search(text, pos):
        length = _card_length(match.group())
        if length:
            out += [text[pos : match.start()], _label("credit_card")]
            pos = match.start() + length
        else:  # no card starts here: the next one may start at the candidate's next group
            first_group = _SEPARATOR.search(match.group())
            skip = first_group.start() if first_group else len(match.group())
            out.append(text[pos : match.start() + skip])
            pos = match.start() + skip
    out.append(text[pos:])
    return "".join(out)


def _redact_cards(values: pa.Array[Any]) -> pa.Array[Any]:
    # Python runs only on the lines RE2 found a candidate in (a per-line loop, measured in
    # benchmarks/parsers.py); every other line stays in Arrow.
    candidates = pc.fill_null(pc.match_substring_regex(values, _CARD_CANDIDATE), False)
    if not pc.any(candidates).as_py():
        return values
    chosen = pc.filter(values, candidates).to_pylist()
    redacted = pa.array([_cards_in(text) for text in chosen], values.type)
    return array_of(pc.replace_with_mask(values, candidates, redacted))


def _check_custom(pattern: str) -> None:
    try:
        pc.replace_substring_regex(pa.array([""], pa.string()), pattern, "")
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise ValueError(f"redact: custom pattern {pattern!r}: {exc}") from None


def redact(
    values: pa.Array[Any], detectors: Sequence[str], custom: Sequence[str] = ()
) -> pa.Array[Any]:
    """``values`` (strings; nulls stay null) with each detected value replaced by ``[REDACTED:<detector>]``.

    Custom patterns (RE2) run first and become ``[REDACTED:custom]``; detectors run in a fixed order.
    Raises ValueError naming an unknown detector or a custom pattern RE2 cannot compile.
    """
    unknown = [name for name in detectors if name not in DETECTORS]
    if unknown:
        raise ValueError(
            f"redact: unknown detector {unknown[0]!r} (known: {', '.join(sorted(DETECTORS))})"
        )
    for pattern in custom:
        _check_custom(pattern)
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    for pattern in custom:
        values = pc.replace_substring_regex(values, pattern, _label("custom"))
    chosen = set(detectors)
    for name, steps in _DETECTORS.items():
        if name not in chosen:
            continue
        if name == "credit_card":
            values = _redact_cards(values)
        for step in steps:
            for _ in range(step.passes):
                values = pc.replace_substring_regex(values, step.pattern, step.replacement)
    return values
