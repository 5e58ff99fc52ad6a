"""Where layout keys are stored (sink/placement.py): in Tideway's bucket, unless their table
lives where its catalog chose; key prefixes map the same way, so listings map back."""

from __future__ import annotations

import pytest

from service.sink.placement import Placement, data_root, split_url

KEY = "p/waf/dt=2026-11-20/hour=07/service=api/logs-shardId-000-1-9.parquet"


def test_a_table_at_the_layouts_own_place_keeps_its_keys() -> None:
    here = Placement("ours", "p/").with_table("waf", "s3://ours/p/waf/", {})
    assert here.roots == {}
    assert here.locate(KEY) == ("ours", KEY)


def test_a_table_the_catalog_placed_elsewhere_takes_its_data_path() -> None:
    placed = Placement("ours", "p/").with_table("waf", "s3://abc--table-s3", {})
    assert placed.locate(KEY) == (
        "abc--table-s3",
        "data/dt=2026-11-20/hour=07/service=api/logs-shardId-000-1-9.parquet",
    )
    # Other tables and the dead letters stay in Tideway's bucket.
    dead = "p/dead-letter/dt=2026-11-20/logs-shardId-000-1-9.ndjson.gz"
    assert placed.locate(dead) == ("ours", dead)
    assert placed.locate("p/logs/x.parquet") == ("ours", "p/logs/x.parquet")
    # A key prefix maps the same way: a listed key maps back by swapping the prefix.
    prefix = "p/waf/dt=2026-11-20/hour=07/service=api/logs-shardId-000-"
    bucket, stored = placed.locate(prefix)
    assert bucket == "abc--table-s3"
    assert placed.locate(KEY)[1].startswith(stored)
    assert prefix + placed.locate(KEY)[1][len(stored) :] == KEY
    assert placed.by_bucket([KEY, dead]) == {
        "abc--table-s3": [(KEY, placed.locate(KEY)[1])],
        "ours": [(dead, dead)],
    }
    # Moved back (a table recreated at the prefix): the keys are the layout's again.
    assert placed.with_table("waf", "s3://ours/p/waf", {}).locate(KEY) == ("ours", KEY)


def test_the_tables_write_data_path_wins_and_urls_must_be_s3() -> None:
    assert data_root("s3://b/wh/t", {"write.data.path": "s3://d/files/"}) == "s3://d/files"
    assert data_root("s3://b/wh/t/", {}) == "s3://b/wh/t/data"
    placed = Placement("ours", "").with_table("logs", "s3://b/wh/t", {"write.data.path": "s3://d"})
    assert placed.locate("logs/dt=x/f.parquet") == ("d", "dt=x/f.parquet")
    assert split_url("s3a://b/k/ey") == ("b", "k/ey")
    with pytest.raises(ValueError, match="not an S3 location"):
        split_url("file:///tmp/x")
