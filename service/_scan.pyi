"""Types of the C line scanner (service/_scan.c)."""

from collections.abc import Sequence

Column = tuple[bytes, bytes, bytes]  # kind per line, int32 offsets, data

GROUPS: tuple[str, ...]  # the mapped groups in pop order (service.sink.rules.GROUPS)
NGROUPS: int
SEVERITY_NUMBER: str

def map_lines(
    parts: Sequence[bytes], n: int, groups: Sequence[Sequence[bytes]], /
) -> tuple[bytes, bytes, bytes, tuple[Column, ...]]: ...
def check_lines(body: bytes, max_line: int, /) -> tuple[bytes, bytes]: ...
