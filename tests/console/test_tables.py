"""The overview's Tables view: a pyiceberg table's metadata as the operator reads it."""

from __future__ import annotations

import pyarrow as pa
from pyiceberg.catalog.sql import SqlCatalog

from service.console.tables import behind, table_view, with_checkpoints
from service.sink.iceberg_commit import watermark_key


def _table(tmp_path):
    catalog = SqlCatalog("t", uri=f"sqlite:///{tmp_path}/c.db", warehouse=f"file://{tmp_path}/w")
    catalog.create_namespace("logs")
    return catalog.create_table("logs.events", schema=pa.schema([("message", pa.string())]))


def test_a_new_table_shows_no_snapshot(tmp_path):
    view = table_view("logs.events", _table(tmp_path))
    assert view.snapshot_id is None and view.snapshots == 0 and view.records == 0
    assert view.last_compaction == "" and view.mean_file_bytes == 0


def test_an_append_shows_its_totals_and_no_compaction(tmp_path):
    table = _table(tmp_path)
    table.append(pa.table({"message": ["a", "b", "c"]}))
    view = table_view("logs.events", table)
    assert view.operation == "append" and view.records == 3 and view.data_files == 1
    assert view.snapshots == 1 and view.mean_file_bytes == view.size_bytes > 0
    assert view.last_compaction == ""


def test_shards_checkpointed_past_their_watermark_are_behind():
    checkpoints = {"shard-0": 10, "shard-1": 20, "shard-2": None}
    assert behind({"shard-0": 10, "shard-1": 15}, checkpoints) == ["shard-1"]
    assert behind({}, {"shard-0": 5}) == ["shard-0"]


def test_the_view_reads_each_shards_watermark_and_finds_checkpoints_past_it(tmp_path):
    """The watermarks are iceberg_commit's table properties of this stream only; a shard whose
    checkpoint is past its table's commit (a commit must come first) is named, sentinels not."""
    table = _table(tmp_path)
    with table.transaction() as tx:
        tx.set_properties(
            {
                watermark_key("logs", "shardId-0"): "100",
                watermark_key("logs", "shardId-1"): "200",
                watermark_key("other", "shardId-0"): "999",
            }
        )
    view = table_view("logs.events", table, "logs")
    assert view.watermarks == {"shardId-0": 100, "shardId-1": 200}
    checked = with_checkpoints(
        view, {"shardId-0": "100", "shardId-1": "250", "shardId-2": "SHARD_END", "shardId-3": None}
    )
    assert checked.behind == ("shardId-1",)
