"""Which files `tideway compact` may delete as orphans (docs/tables.md): pure selection."""

from __future__ import annotations

from service.sink.orphans import StoredObject, select_orphans

LOC = "s3://b/p/logs"
DAY = 86400.0
NOW = 100 * DAY


def obj(key: str, age_days: float) -> StoredObject:
    return StoredObject(f"{LOC}/{key}", NOW - age_days * DAY)


def select(objects: list[StoredObject], referenced: frozenset[str] = frozenset()) -> list[str]:
    return select_orphans(LOC, objects, set(referenced), now=NOW, older_than=3 * DAY)


TABLE = [obj("metadata/00000-a.metadata.json", 30), obj("metadata/snap-1.avro", 29)]


def test_an_unreferenced_data_file_older_than_the_margin_is_an_orphan() -> None:
    assert select([*TABLE, obj("dt=x/a.parquet", 4)]) == [f"{LOC}/dt=x/a.parquet"]


def test_a_referenced_file_or_one_younger_than_the_margin_stays() -> None:
    old_referenced, young = obj("dt=x/a.parquet", 20), obj("dt=x/b.parquet", 2.9)
    assert select([*TABLE, old_referenced, young], {old_referenced.uri}) == []


def test_metadata_other_objects_and_files_from_before_the_table_stay() -> None:
    hive_era = obj("dt=x/hive.parquet", 31)  # the Hive layout shares the location
    others = [obj("metadata/old.avro", 20), obj("dt=x/notes.txt", 20), hive_era]
    assert select([*TABLE, *others]) == []


def test_without_table_metadata_under_the_location_nothing_is_removed() -> None:
    assert select([obj("dt=x/a.parquet", 40)]) == []


def test_objects_outside_the_location_are_never_selected() -> None:
    neighbour = StoredObject("s3://b/p/logs2/a.parquet", NOW - 10 * DAY)
    assert select([*TABLE, neighbour]) == []
