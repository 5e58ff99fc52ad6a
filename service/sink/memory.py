"""Freed heap memory handed back to the kernel (glibc's ``malloc_trim``).

A record's bytes (tens of KB) come from glibc's heap, the table's buffers partly from
Arrow's own allocator: pages glibc keeps after a flush lets its records go (``build_rows``
with ``release``) are not all reused by the rows built next, and would stay resident, the
figure the memory budget and a container's limit see. Off glibc (musl, macOS) a no-op.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        trim: Callable[[int], int] = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # no glibc
        return None
    return trim


_TRIM = _malloc_trim()


def reclaim() -> None:
    """Give the heap's free pages back to the kernel."""
    if _TRIM is not None:
        _TRIM(0)
