"""Redaction: built-in detectors and custom patterns replace what they find by ``[REDACTED:<name>]``.

Every pattern runs in RE2 through Arrow (``replace_substring_regex``), column-wise. RE2 has no
lookarounds, so a pattern that must not start or end inside a longer token (an IPv4 address inside
``1.2.3.4.5``) consumes one neighbouring character and writes it back (``\\1…\\2``); two addresses
one character apart then need a second pass, which the detector makes. Only the Luhn check of
credit-card candidates runs in Python, on the lines RE2 found a candidate in.

That is the specification, and the path without the C extension. With it
(service/pipeline/detect.py), one pass over a column's bytes chooses the values the e-mail,
card and IPv4 patterns may match (the others are left as RE2 would leave them), and a second
rewrites those values as the patterns' global replaces and ``_cards_in`` would: the same
bytes, less time.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import groupby
from typing import Any

import numpy as np
import pyarrow as pa
from pyarrow import compute

from . import detect
from .candidates import any_of, hits, matches
from .parsers.base import array_of, one_chunk

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


_CARD_CANDIDATE = r"\b[2-6](?:[ -]?[0-9]){12,18}\b"

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

# Python reads whole runs of digit groups, on the lines where RE2 found a candidate.
# Runs of 13 digits or more only: a shorter run holds no card, so Python never sees it.
_LONG_RUN = r"\b[0-9](?:[ -]?[0-9]){12,}\b"
_DIGIT_RUN = re.compile(_LONG_RUN, re.ASCII)
_SEPARATOR_KEPT = re.compile(r"([ -])")


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum of a string of digits (card numbers end with their check digit)."""
    backwards = digits[::-1]
    # Every second digit from the right is doubled (its digits summed): a table, not a loop.
    doubled = backwards[1::2].translate(_LUHN_DOUBLED)
    return (sum(map(int, backwards[0::2])) + sum(map(int, doubled))) % 10 == 0


_LUHN_DOUBLED = str.maketrans("0123456789", "0246813579")


def _plausible(groups: Sequence[str]) -> bool:
    """A card is written whole or in groups of at most 6 digits (4-4-4-4, Amex 4-6-5)."""
    return len(groups) == 1 or all(len(group) <= 6 for group in groups)


def _redact_run(match: re.Match[str]) -> str:
    """A run of digit groups with every card in it redacted, choosing the cards that cover the
    most digits ("4000 0000 0000 006 3558 0000 0000 0000" is two cards, though its first 19
    digits also pass Luhn)."""
    text = match.group()
    digits = text.replace(" ", "").replace("-", "")
    if len(digits) < 13:  # most runs (counts, times, amounts): no card fits
        return text
    parts = _SEPARATOR_KEPT.split(text)
    groups, separators = parts[0::2], parts[1::2]
    if len(digits) <= 19 and digits[0] in "23456" and _plausible(groups) and luhn_valid(digits):
        return _label("credit_card")  # the whole run is one card: no split covers more
    n = len(groups)
    covered = [0] * (n + 1)  # most card digits in groups[i:]
    card_end: list[int | None] = [None] * (n + 1)
    for i in range(n - 1, -1, -1):
        covered[i] = covered[i + 1]
        digits = ""
        for j in range(i, n):
            digits += groups[j]
            if len(digits) > 19:
                break
            card = (
                len(digits) >= 13
                and digits[0] in "23456"
                and _plausible(groups[i : j + 1])
                and luhn_valid(digits)
            )
            if card and len(digits) + covered[j + 1] > covered[i]:
                covered[i], card_end[i] = len(digits) + covered[j + 1], j
    out: list[str] = []
    i = 0
    while i < n:
        end = card_end[i]
        out.append(groups[i] if end is None else _label("credit_card"))
        i = i if end is None else end
        if i < n - 1:
            out.append(separators[i])
        i += 1
    return "".join(out)


def _cards_in(text: str) -> str:
    """The text with every Luhn-valid card number redacted."""
    return _DIGIT_RUN.sub(_redact_run, text)


def _redact_cards(values: pa.Array[Any]) -> pa.Array[Any]:
    # Python runs only on the lines RE2 found a candidate in (a per-line loop, measured in
    # benchmarks/parsers.py); every other line stays in Arrow.
    candidates = pc.fill_null(pc.match_substring_regex(values, _CARD_CANDIDATE), False)
    if not pc.any(candidates).as_py():
        return values
    redacted = _settled_cards(pc.filter(values, candidates))
    return array_of(pc.replace_with_mask(values, candidates, redacted))


def _settled_cards(values: pa.Array[Any]) -> pa.Array[Any]:
    """``_cards_in`` of each value (no nulls). A value whose one long digit run decides alone
    (13 to 19 digits: a whole plausible card, or a single group) is settled in Arrow, its Luhn
    sum in numpy; the others (several runs, longer runs, groups that may hold a card inside)
    go through ``_cards_in`` in Python, the rule's one readable form."""
    # One RE2 search a value splits it around its first run: the text before and after it.
    # The run is what lies between (numpy, no second search), and the value holds one run
    # only if the text after it holds none (measured: a third of an extract, a count and a
    # split). ``post`` starts after a digit's word boundary, so its first character is no
    # word character and a run in it has the same boundaries as in the whole value.
    halves = pc.split_pattern_regex(values, _LONG_RUN, max_splits=1)
    first = halves.offsets.to_numpy()[:-1]
    found = halves.value_lengths().to_numpy(zero_copy_only=False) == 2
    pieces = halves.flatten()
    pre = pieces.take(pa.array(first))
    post = pieces.take(pa.array(first + 1, mask=~found))  # null where no run was found
    run = _between(values, pre, post, found)
    digits = pc.replace_substring(pc.replace_substring(run, " ", ""), "-", "")
    length = pc.utf8_length(digits).to_numpy(zero_copy_only=False)
    single = length == pc.utf8_length(run).to_numpy(zero_copy_only=False)
    plausible = single | ~matches(run, "[0-9]{7}")  # no group over 6 digits (_plausible)
    one_run = found & ~matches(post, _LONG_RUN)
    eligible = one_run & (length <= 19)
    card = eligible & plausible & matches(digits, "^[2-6]") & _luhn(digits, eligible)
    python = ~card & ~(eligible & single)
    out = values
    if card.any():
        rows = pa.array(card)
        label = pa.scalar(_label("credit_card"), values.type)
        labelled = pc.binary_join_element_wise(
            pc.filter(pre, rows), label, pc.filter(post, rows), pa.scalar("", values.type)
        )
        out = pc.replace_with_mask(out, rows, labelled)
    if python.any():
        slow = [_cards_in(text) for text in pc.filter(values, python).to_pylist()]
        out = pc.replace_with_mask(out, pa.array(python), pa.array(slow, values.type))
    return array_of(out)


def _between(
    values: pa.Array[Any], pre: pa.Array[Any], post: pa.Array[Any], found: np.ndarray[Any, Any]
) -> pa.Array[Any]:
    """The bytes of each value after its ``pre`` and before its ``post`` (the empty string
    where ``found`` is false): Arrow slices by one start and stop for a whole column only."""
    whole = pa.concat_arrays([values]).cast(pa.large_string())  # offset 0, int64 offsets
    _, offset_buffer, data_buffer = whole.buffers()
    assert offset_buffer is not None, "a string array has offsets"
    offsets = np.frombuffer(memoryview(offset_buffer), np.int64)[: len(whole) + 1]
    data = np.frombuffer(memoryview(data_buffer or b""), np.uint8)
    head = pc.fill_null(pc.binary_length(pre), 0).to_numpy(zero_copy_only=False)
    tail = pc.fill_null(pc.binary_length(post), 0).to_numpy(zero_copy_only=False)
    starts = offsets[:-1] + head
    sizes = np.where(found, offsets[1:] - tail - starts, 0)
    out = np.zeros(len(sizes) + 1, dtype=np.int64)
    np.cumsum(sizes, out=out[1:])
    gather = np.repeat(starts - out[:-1], sizes) + np.arange(out[-1], dtype=np.int64)
    picked = data[gather]
    buffers = [None, pa.py_buffer(out.tobytes()), pa.py_buffer(picked.tobytes())]
    return pa.Array.from_buffers(pa.large_string(), len(sizes), buffers).cast(values.type)


def _luhn(digits: pa.Array[Any], rows: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """``luhn_valid`` of each of ``digits`` (strings of 13 to 19 digits where ``rows``)."""
    valid = np.zeros(len(digits), dtype=bool)
    if not rows.any():
        return valid
    # Zeros on the left change no Luhn sum: every value becomes 19 digits, a row of a matrix.
    padded = pc.utf8_lpad(pc.filter(digits, pa.array(rows)), width=19, padding="0")
    padded = pa.concat_arrays([padded])  # offsets from 0, one buffer
    text = np.frombuffer(padded.buffers()[2], np.uint8)[: 19 * len(padded)].reshape(-1, 19)
    matrix = text.astype(np.int64) - 48
    doubled = _LUHN_TABLE[matrix[:, 17::-2]]  # every second digit from the right
    valid[rows] = (matrix[:, 18::-2].sum(axis=1) + doubled.sum(axis=1)) % 10 == 0
    return valid


_LUHN_TABLE = np.array([0, 2, 4, 6, 8, 1, 3, 5, 7, 9], dtype=np.int64)


def _replace(
    values: pa.Array[Any], pattern: str, replacement: str, passes: int = 1
) -> pa.Array[Any]:
    """``replace_substring_regex`` ``passes`` times on the lines the pattern matches only.

    Most log lines hold nothing to redact: a match (RE2's DFA, no captures) finds the few that
    do, and only those pay for the capturing replace and the copy. Each later pass runs on
    the lines the pattern still matches (a pass leaves a line it matches nothing in as it is;
    two addresses one character apart are rare).
    """
    hits = pc.fill_null(pc.match_substring_regex(values, pattern), False)
    count = pc.sum(hits).as_py() or 0
    if count == 0:
        return values
    replaced = values if count == len(values) else pc.filter(values, hits)
    replaced = pc.replace_substring_regex(replaced, pattern, replacement)
    for _ in range(passes - 1):
        replaced = _replace(replaced, pattern, replacement)
    if count == len(values):
        return array_of(replaced)
    return array_of(pc.replace_with_mask(values, hits, replaced))


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
    values = one_chunk(values)
    for pattern in custom:
        values = _replace(values, pattern, _label("custom"))
    chosen = set(detectors)
    # One scan for every chosen pattern finds the lines holding anything to redact (a line
    # none of them matches is left as it is by each); only those lines go through the
    # detectors one by one. Most lines of most columns hold nothing: one scan, not one each.
    # The C pass (detect.flagged) scans for the detectors it knows, RE2 for the others.
    fast = detect.native(chosen, values)
    if fast == chosen:  # one C call finds and rewrites, whatever the column holds
        return _detected(values, chosen)
    patterns = [
        d.pattern
        for name, steps in _DETECTORS.items()
        if name in chosen and name not in fast
        for d in steps
    ]
    patterns += [_CARD_CANDIDATE] if "credit_card" in chosen - fast else []
    found = detect.flagged(values, fast) if fast else np.zeros(len(values), dtype=bool)
    found |= hits(values, any_of(patterns))
    return _on_rows(values, found, lambda rows: _distinct_detected(rows, chosen))


def _on_rows(
    values: pa.Array[Any],
    rows: np.ndarray[Any, np.dtype[np.bool_]],
    apply: Callable[[pa.Array[Any]], pa.Array[Any]],
) -> pa.Array[Any]:
    """``values`` with ``apply`` of the ``rows`` (no nulls among them) in their place: the
    other values are ones ``apply`` would leave as they are."""
    count = int(np.count_nonzero(rows))
    if count == 0:
        return values
    if count == len(values):
        return apply(values)
    mask = pa.array(rows)
    return array_of(pc.replace_with_mask(values, mask, apply(pc.filter(values, mask))))


def _distinct_detected(values: pa.Array[Any], chosen: set[str]) -> pa.Array[Any]:
    """``_detected`` of each value (no nulls), each distinct value once where values repeat
    (a client address, a user's e-mail: a value's redaction depends on the value alone).
    Hashing costs about a twentieth of the detectors a value (measured), so the values
    found are always counted first."""
    encoded: Any = pc.dictionary_encode(values)
    if len(encoded.dictionary) * 2 > len(values):
        return _detected(values, chosen)
    return array_of(pc.take(_detected(encoded.dictionary, chosen), encoded.indices))


def _detected(values: pa.Array[Any], chosen: set[str]) -> pa.Array[Any]:
    """``values`` through each chosen detector, in the fixed order; each run of detectors the
    C pass knows (no other chosen between them) in one call (``detect.redacted``)."""
    fast = detect.native(chosen, values)
    for native, run in groupby((n for n in _DETECTORS if n in chosen), key=fast.__contains__):
        if native:
            values = _native(values, list(run))
            continue
        for name in run:
            values = _detector(values, name)
    return values


def _native(values: pa.Array[Any], detectors: list[str]) -> pa.Array[Any]:
    """``detectors`` in C, or by their specification where a value is not UTF-8."""
    done = detect.redacted(values, detectors)
    if done is not None:
        return done
    for name in detectors:
        values = _detector(values, name)
    return values


def _detector(values: pa.Array[Any], name: str) -> pa.Array[Any]:
    """``values`` through one detector."""
    if name == "credit_card":
        values = _redact_cards(values)
    for step in _DETECTORS[name]:
        values = _replace(values, step.pattern, step.replacement, step.passes)
    return values
