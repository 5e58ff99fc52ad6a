"""Lines cut at a one-byte separator into a list column: Arrow's ``split_pattern``, natively.

The delimited formats (fields.py: VPC Flow Logs on the space, CloudFront on the tab) cut
every line into its fields before one ``take`` a column. Arrow builds each line's list piece
by piece, about 40 ns a piece: a third of a VPC Flow parse. ``_fields.cut``
(service/_fields.c) gives the same list column from one ``memchr`` a piece. Without the
extension (``TIDEWAY_NO_EXTENSIONS=1``), or for a longer or non-ASCII separator, it is
``split_pattern`` itself, the specification (tests/pipeline/test_cut.py holds the two to
each other).
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import pyarrow as pa
from pyarrow import compute

from service.scanner import FIELDS

# pyarrow-stubs type no implicit scalar casts: compute is untyped here.
pc: Any = compute


def cut(text: pa.Array[Any], separator: str) -> pa.ListArray[Any]:
    """``pc.split_pattern(text, separator)`` for a string column: each line's pieces, a null
    line null (with no pieces)."""
    if FIELDS is None or len(separator) != 1 or not separator.isascii() or not len(text):
        return pc.split_pattern(text, separator)  # type: ignore[no-any-return]
    _, offsets, data = text.buffers()
    valid = b""
    if text.null_count:
        valid = text.is_valid().to_numpy(zero_copy_only=False).view(np.uint8).tobytes()
    n = len(text)
    lists, ends, pieces = FIELDS.cut(
        offsets, b"" if data is None else data, text.offset, n, valid, ord(separator)
    )
    values = pa.Array.from_buffers(
        pa.string(), len(ends) // 4 - 1, [None, pa.py_buffer(ends), pa.py_buffer(pieces)]
    )
    validity = text.is_valid().buffers()[1] if text.null_count else None  # offset 0
    listed = pa.Array.from_buffers(
        pa.list_(pa.string()), n, [validity, pa.py_buffer(lists)], text.null_count, 0, [values]
    )
    return cast("pa.ListArray[Any]", listed)
