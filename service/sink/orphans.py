"""Orphan data files of an Iceberg table: objects under its location that no snapshot
references, old enough that no live consumer can still commit them (docs/tables.md).

Orphans come from compaction (inputs replaced, once the snapshots that still name them are
expired; outputs of a bin dropped after a lost race) and from the consumer (uploads of a
flush whose commit was given up and whose replay found the range already committed). A
file is removed only when it is

- a data file (``.parquet``) under the table location, not under ``metadata/``;
- referenced by no live manifest entry (added or existing) of any snapshot the table still
  has: a file a snapshot deleted is still live in its parent's manifests while the parent
  is kept, so compacted inputs go only once the snapshots before the compaction expire;
- last modified more than ``older_than`` seconds ago: a consumer's upload is unreferenced
  until its commit lands, and a replay rewrites the same key, renewing its age;
- not older than the table itself (the oldest object under ``metadata/``): the Hive layout
  shares the location, so objects written before the table existed are somebody's data.

``select_orphans`` is pure; ``referenced_paths`` reads the table's manifests (blocking I/O).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pyiceberg.table import Table


@dataclass(frozen=True, slots=True)
class StoredObject:
    """One object under the table location: its ``s3://`` URI and last-modified epoch."""

    uri: str
    modified: float


def referenced_paths(table: Table) -> set[str]:
    """Every data file path named by a manifest of any snapshot of ``table``."""
    paths: set[str] = set()
    seen: set[str] = set()
    for snapshot in table.snapshots():
        for manifest in snapshot.manifests(table.io):
            if manifest.manifest_path in seen:
                continue
            seen.add(manifest.manifest_path)
            for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True):
                paths.add(entry.data_file.file_path)
    return paths


def select_orphans(
    location: str,
    objects: Iterable[StoredObject],
    referenced: set[str],
    *,
    now: float,
    older_than: float,
) -> list[str]:
    """The URIs to delete, sorted (pure). ``objects``: everything under ``location``."""
    root = location.rstrip("/") + "/"
    metadata = root + "metadata/"
    listed = list(objects)
    born = min((o.modified for o in listed if o.uri.startswith(metadata)), default=None)
    if born is None:  # no metadata under the location: not this table's files
        return []
    cutoff = now - older_than
    return sorted(
        o.uri
        for o in listed
        if o.uri.startswith(root)
        and not o.uri.startswith(metadata)
        and o.uri.endswith(".parquet")
        and o.uri not in referenced
        and born <= o.modified < cutoff
    )
