"""Space-separated lines with double-quoted fields (ALB, S3 server access, Apache/Nginx), read by layout.

RE2 extracts 30 capture groups slowly: it cannot use its DFA for submatches, and ALB lines
through one capturing pattern ran about 3x slower than this (benchmarks/parsers.py). So a line
is *checked* by one RE2 pattern without captures (DFA speed) and *read* by position: split on
the double quote (quoted fields are the odd pieces), the unquoted pieces split on the space,
each field one ``take`` at a position the layout fixes.

That is the specification. With the C extension (``service/_fields.c``; off with
``TIDEWAY_NO_EXTENSIONS=1``) the check and the fields come from one walk over each line
instead, the same columns (tests/pipeline/test_fields.py holds the two to each other).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from pyarrow import compute

from service.scanner import FIELDS

from .base import (
    Kind,
    ParseResult,
    as_string,
    first_error,
    null_message_error,
    null_tokens,
    reason_where,
    settled,
    type_columns,
)
from .pieces import Spans

# pyarrow-stubs type no implicit scalar casts (array + int): compute is untyped here.
pc: Any = compute

# Escapes inside quotes (Apache writes \" and \\) are parked on control characters while splitting.
# These formats escape control characters themselves (``\xhh``), so a line holding a raw parking
# character is not one of them: refused by the check, it can never be read as an unparked ``\`` or
# ``"`` (which it would be beside another line's escape: a value depending on its neighbours).
_PARKED = (("\\\\", "\x1d", "\\"), ('\\"', "\x1e", '"'))
_QUOTED = '"(?:[^"\\\\\x1d\x1e]|\\\\[^\x1d\x1e])*"'
_BARE = '[^ "\x1d\x1e]+'
_NATIVE_FIELDS = 64  # the most fields _fields.split reads


@dataclass(frozen=True)
class Field:
    """One field: a bare token (``words`` space-separated words, ``strip`` trimmed) or a quoted string."""

    name: str
    kind: Kind = Kind.STRING
    quoted: bool = False
    words: int = 1
    strip: str = ""

    def pattern(self) -> str:
        if self.quoted:
            return _QUOTED
        return " ".join([_BARE] * self.words)


@dataclass(frozen=True)
class Layout:
    """A line format: ``fields`` in order, the first ``required`` always there, the rest optional in
    order (older versions of the format stop early); unknown trailing fields are tolerated."""

    name: str
    fields: tuple[Field, ...]
    required: int

    def check_pattern(self) -> str:
        """The RE2 pattern a well-formed line matches (no captures: RE2 runs it as a DFA)."""
        head = " ".join(f.pattern() for f in self.fields[: self.required])
        tail = ""
        for f in reversed(self.fields[self.required :]):
            tail = f"(?: {f.pattern()}{tail})?"
        # The tail is any text but a newline (as '.' reads) and the parking characters.
        return f"^{head}{tail}(?: [^\\n\x1d\x1e]*)?$"

    def positions(self) -> list[tuple[int, int]]:
        """Per field: (piece of the quote split, word within that piece; -1 for the quoted piece)."""
        out, piece, word = [], 0, 0
        for f in self.fields:
            if f.quoted:
                out.append((piece + 1, -1))
                piece, word = (
                    piece + 2,
                    1,
                )  # the next unquoted piece starts with the separating space
            else:
                out.append((piece, word))
                word += f.words
        return out

    def spec(self) -> str:
        """The layout as ``_fields.split`` reads it: one byte a field, 'q' or its words."""
        return "".join("q" if f.quoted else str(f.words) for f in self.fields)

    def __call__(self, message: pa.Array[Any]) -> ParseResult:
        message = as_string(message)
        if FIELDS is not None and len(message) and len(self.fields) <= _NATIVE_FIELDS:
            ok, raw = self.native(message)
        else:
            ok, raw = self.specified(message)
        kinds = {f.name: f.kind for f in self.fields}
        columns, field_error = type_columns(raw, kinds, ok, cleaned=True)
        error = first_error(
            null_message_error(message),
            reason_where(pc.invert(ok), f"not a {self.name} line"),
            field_error,
        )
        return settled(columns, error, ok)

    def native(self, message: pa.Array[Any]) -> tuple[pa.Array[Any], dict[str, pa.Array[Any]]]:
        """``specified``'s answer from ``_fields.split``: one walk a line, no RE2."""
        assert FIELDS is not None
        _, offsets, data = message.buffers()
        valid = b""
        if message.null_count:
            valid = message.is_valid().to_numpy(zero_copy_only=False).view(np.uint8).tobytes()
        n = len(message)
        oks, fields = FIELDS.split(
            offsets,
            b"" if data is None else data,
            message.offset,
            n,
            valid,
            self.spec(),
            self.required,
        )
        raw: dict[str, pa.Array[Any]] = {}
        for f, (validity, ends, text, nulls) in zip(self.fields, fields, strict=True):
            buffers: list[pa.Buffer | None] = [
                pa.py_buffer(validity),
                pa.py_buffer(ends),
                pa.py_buffer(text),
            ]
            value = pa.Array.from_buffers(pa.string(), n, buffers, nulls)
            raw[f.name] = pc.utf8_trim(value, f.strip) if f.strip else value
        return pa.array(np.frombuffer(oks, dtype=np.bool_)), raw

    def specified(self, message: pa.Array[Any]) -> tuple[pa.Array[Any], dict[str, pa.Array[Any]]]:
        """Which lines the check pattern matches, and each field's text by position (null where
        a line is not one, the field is absent, or its text is "-" or "")."""
        ok = pc.fill_null(pc.match_substring_regex(message, self.check_pattern()), False)
        escaped = _may_hold(message, b"\\") and bool(
            pc.any(pc.match_substring(message, "\\")).as_py()
        )
        text = message
        if escaped:
            for escape, parked, _ in _PARKED:
                text = pc.replace_substring(text, escape, parked)
        pieces = pc.split_pattern(text, '"')
        piece_count = pc.list_value_length(pieces)
        words_of: dict[int, tuple[Any, Any, Any]] = {}
        quoted_values = null_tokens(pieces.values)  # "-" and "" made null once for all fields
        raw: dict[str, pa.Array[Any]] = {}
        for f, (piece, word) in zip(self.fields, self.positions(), strict=True):
            if f.quoted:  # present when its closing quote is: the piece after it exists
                present = pc.and_(ok, pc.greater(piece_count, piece + 1))
                value = _item(pieces, piece, present, quoted_values)
            else:
                if piece not in words_of:
                    words_of[piece] = _split_words(
                        _item(pieces, piece, pc.and_(ok, pc.greater(piece_count, piece)))
                    )
                words, word_count, word_values = words_of[piece]
                present = pc.and_(ok, pc.greater(word_count, word + f.words - 1))
                value = _item(words, word, present, word_values)
                for extra in range(1, f.words):
                    value = pc.binary_join_element_wise(
                        value, _item(words, word + extra, present, word_values), " "
                    )
                if f.strip:
                    value = pc.utf8_trim(value, f.strip)
            if escaped:
                for _, parked, plain in _PARKED:
                    value = pc.replace_substring(value, parked, plain)
            raw[f.name] = value
        return ok, raw


def _may_hold(text: pa.Array[Any], byte: bytes) -> bool:
    """False when no value of ``text`` holds ``byte``: one memchr over the values' bytes (Arrow's
    substring search costs about 2 ns a byte); True may be a null slot's bytes (callers check)."""
    data = text.buffers()[2]
    if data is None or len(text) == 0:
        return False
    offsets = text.buffers()[1]
    assert offsets is not None, "a string array has offsets"
    ends = np.frombuffer(memoryview(offsets), np.int32)[text.offset : text.offset + len(text) + 1]
    return byte in data[int(ends[0]) : int(ends[-1])].to_pybytes()


def _split_words(piece: pa.Array[Any]) -> tuple[Any, Any, Any]:
    """The piece's words, how many each line has, and the words with "-" and "" made null."""
    words = pc.split_pattern(piece, " ")
    return words, pc.fill_null(pc.list_value_length(words), 0), null_tokens(words.values)


def _item(lists: Any, index: int, present: Any, values: Any = None) -> pa.Array[Any]:
    """Element ``index`` of each list where ``present`` holds (callers checked the lengths), else null;
    read from ``values`` (the lists' values, cleaned) when given."""
    starts = lists.offsets[:-1]
    at = pc.if_else(present, pc.add(starts, index), pa.scalar(None, starts.type))
    out: pa.Array[Any] = pc.take(lists.values if values is None else values, at)
    return out


def split_request(request: pa.Array[Any], prefix: str) -> dict[str, pa.Array[Any]]:
    """``GET /path HTTP/1.1`` as ``{prefix}method``, ``…url``, ``…protocol`` ("-" and missing parts null).

    ``pc.split_pattern(request, " ", max_splits=2)``'s pieces (the protocol keeps any
    further spaces), cut by pieces.py."""
    spans = Spans.of(as_string(request), " ")
    first, one = spans.first_after(spans.starts)
    second, two = spans.first_after(first + 1)
    two &= one
    first, second = np.where(one, first, spans.stops), np.where(two, second, spans.stops)
    pieces = spans.cut(
        [first, np.minimum(first + 1, spans.stops), second, np.minimum(second + 1, spans.stops)]
    )
    present = (spans.valid, one, two)
    return {
        f"{prefix}{name}": null_tokens(pieces.piece(2 * i, present[i]))
        for i, name in enumerate(("method", "url", "protocol"))
    }


def split_host_port(address: pa.Array[Any]) -> tuple[pa.Array[Any], pa.Array[Any]]:
    """``10.0.0.1:80`` (or ``2001:db8::1:80``) as its address and its port text, cut at the
    last colon (``split_pattern`` reversed, one split); no colon (``-``) gives nulls."""
    spans = Spans.of(as_string(address), ":")
    colon, found = spans.last()
    colon = np.where(found, colon, spans.stops)
    pieces = spans.cut([colon, np.minimum(colon + 1, spans.stops)])
    return pieces.piece(0, found), pieces.piece(2, found)
