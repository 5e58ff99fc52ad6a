"""The consume benchmark drives the real consumer over its in-memory stand-ins to the end of
the stream, and its layout simulation counts objects and scanned bytes as the layout does."""

from __future__ import annotations

from benchmarks.consume import drain_once, layout_simulation


def test_one_hour_of_shards_writes_one_object_per_service_and_flush() -> None:
    shares = {"api": 0.5, "web": 0.3, "db": 0.2}
    sim = layout_simulation(5.0, shares, shards=16)
    assert sim["objects_per_hour"] == 16 * 60 * 3
    assert sim["median_object_bytes"] == 60e6 * 0.3 / 5.0  # the middle service's share
    hour = 16 * 3600e6 / 5.0
    assert sim["athena_same_query_without_service_partition_bytes"] == hour
    assert sim["athena_one_service_one_hour_bytes"] == hour * 0.5
    assert sim["query_service"] == "api"


def test_the_consumer_drains_the_stand_in_stream_into_parquet_objects() -> None:
    run = drain_once(600, 2)
    assert run["records"] >= 2
    assert run["objects"] > 0 and run["dead_letter_objects"] == 0
    assert run["output_bytes"] == sum(run["service_bytes"].values())


def test_the_iceberg_variant_commits_every_uploaded_object_to_the_table() -> None:
    run = drain_once(600, 2, "iceberg")
    assert run["objects"] > 0 and run["dead_letter_objects"] == 0
    assert run["table_files"] == run["objects"]  # drain_once checks each one was uploaded
    assert 1 <= run["table_commits"] <= run["objects"]


def test_compaction_packs_an_hour_of_small_objects_into_files_near_the_target() -> None:
    # 16 shards x 60 flushes of 2 MB per service: the compactor's own bins of <= 128 MiB.
    sim = layout_simulation(5.0, {"api": 0.5, "web": 0.5}, shards=16)
    assert sim["median_object_bytes"] == 6e6
    per_bin = (128 * 1024 * 1024) // 6_000_000  # whole inputs per output file
    assert sim["median_object_bytes_after_compaction"] == per_bin * 6_000_000
    assert sim["objects_per_hour_after_compaction"] == 2 * -(-16 * 60 // per_bin)
    assert sim["median_object_bytes_after_compaction"] >= 64 * 1024 * 1024  # issue 17's target
