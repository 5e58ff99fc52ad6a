"""Where a flush's objects are stored (pure): a key of the layout, ``{prefix}{table}/…``,
names an object in Tideway's bucket, unless ``table`` is an Iceberg table whose catalog
chose its location elsewhere (S3 Tables, a REST catalog with its own warehouse): its
objects then go under that table's data path, ``{location}/data/…`` (or the table's
``write.data.path``), with the rest of the key unchanged.

The planner, the intent's key listing and the replays keep working on layout keys, so the
object names stay deterministic and the intent protocol is unchanged; only the S3 calls
and the files a commit records go through ``locate``. A table keeps its location for its
life (Iceberg has no way to move one), so a replay finds the same place as the attempt it
repeats. docs/tables.md, "Catalogs that choose the location".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

DATA_PATH = "write.data.path"  # Iceberg's table property for where data files go


def split_url(url: str) -> tuple[str, str]:
    """``(bucket, key)`` of an ``s3://`` (or ``s3a://``, ``s3n://``) URL."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("s3", "s3a", "s3n"):
        raise ValueError(f"not an S3 location: {url}")
    bucket, _, key = rest.partition("/")
    return bucket, key


def data_root(location: str, properties: Mapping[str, str]) -> str:
    """The URL under which a table's data files go: its ``write.data.path``, else
    ``{location}/data`` (Iceberg's own default)."""
    return (properties.get(DATA_PATH) or f"{location.rstrip('/')}/data").rstrip("/")


@dataclass(frozen=True, slots=True)
class Placement:
    """Tideway's ``bucket`` and ``prefix``, and the tables stored elsewhere: layout table
    name -> ``(bucket, key root)`` of its data path (the root without a trailing ``/``)."""

    bucket: str
    prefix: str
    roots: Mapping[str, tuple[str, str]] = field(default_factory=dict)

    def table_of(self, key: str) -> str:
        """The layout table of a layout key (``logs``, ``waf``, ``dead-letter``)."""
        return key[len(self.prefix) :].split("/", 1)[0] if key.startswith(self.prefix) else ""

    def locate(self, key: str) -> tuple[str, str]:
        """``(bucket, key)`` of the object a layout key (or key prefix) names."""
        table = self.table_of(key)
        root = self.roots.get(table)
        if root is None:
            return self.bucket, key
        rest = key[len(self.prefix) + len(table) :]  # "/dt=…/…" or "" for the table itself
        return root[0], f"{root[1]}{rest}" if root[1] else rest.lstrip("/")

    def by_bucket(self, keys: Iterable[str]) -> dict[str, list[tuple[str, str]]]:
        """Layout keys grouped by the bucket they are stored in: ``(layout key, key)``."""
        out: dict[str, list[tuple[str, str]]] = {}
        for key in keys:
            bucket, stored = self.locate(key)
            out.setdefault(bucket, []).append((key, stored))
        return out

    def with_table(self, table: str, location: str, properties: Mapping[str, str]) -> Placement:
        """This placement with ``table`` stored where an Iceberg table at ``location`` (with
        ``properties``) keeps its data: unchanged when that is the layout's own place."""
        if location.rstrip("/") == f"s3://{self.bucket}/{self.prefix}{table}":
            roots = {t: r for t, r in self.roots.items() if t != table}
        else:
            roots = {**self.roots, table: split_url(data_root(location, properties))}
        return Placement(self.bucket, self.prefix, roots)
