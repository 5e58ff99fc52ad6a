"""Object keys as strings: the sequence range an object key names (pure)."""

from __future__ import annotations


def object_prefix(key: str) -> str:
    """``dir/{stream}-{shard}-`` of an object key ``dir/{stream}-{shard}-{first}-{last}.ext``."""
    directory, _, name = key.rpartition("/")
    stem = name.split(".", 1)[0]
    head = stem.rsplit("-", 2)[0]
    return f"{directory}/{head}-"


def key_in_range(key: str, prefix: str, first: int, last: int) -> bool:
    """Whether ``key`` (listed under ``prefix``) names a sequence range inside [first, last]."""
    rest = key[len(prefix) :].split(".", 1)[0]
    parts = rest.split("-")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        return False
    lo, hi = int(parts[0]), int(parts[1])
    return first <= lo <= hi <= last
