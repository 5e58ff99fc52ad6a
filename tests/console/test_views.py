"""The shard view and the dead-letter inspection as pure functions: what an operator reads."""

from __future__ import annotations

import base64
import gzip

import orjson

from service.console.inspect import inspect_entry
from service.console.shards import filter_rows, lags_from_statuses, shard_view
from service.console.terminal import status_json, status_text
from service.consume.leases import ShardLease, WorkerBeat
from service.consume.progress import ShardProgress
from service.consume.sequence import SHARD_END
from service.decode import DecoderConfig


def lease(sid: str, owner: str | None = None, **kw: object) -> ShardLease:
    fields: dict[str, object] = {
        "shard_id": sid,
        "owner": owner,
        "epoch": 1 if owner else 0,
        "checkpoint": None,
        "intent_first": None,
        "intent_last": None,
        "parents": (),
    }
    fields.update(kw)
    return ShardLease(**fields)  # type: ignore[arg-type]


LEASES = {
    "shardId-2": lease("shardId-2", "w1", checkpoint=12, parents=("shardId-0",)),
    "shardId-0": lease("shardId-0", "w1", checkpoint=SHARD_END),
    "shardId-1": lease(
        "shardId-1", "w2", checkpoint=7, intent_first=8, intent_last=9, parents=("shardId-0",)
    ),
    "shardId-3": lease("shardId-3"),
}
WORKERS = {"w2": WorkerBeat("w2", 5), "w1": WorkerBeat("w1", 8, leaving=True)}


def test_rows_are_sorted_and_name_children_states_and_lag() -> None:
    view = shard_view(LEASES, WORKERS, {"shardId-1": 1500})
    assert [r.shard_id for r in view.shards] == ["shardId-0", "shardId-1", "shardId-2", "shardId-3"]
    parent, child, other, free = view.shards
    assert parent.children == ("shardId-1", "shardId-2") and parent.state == "finished"
    assert parent.checkpoint == "SHARD_END"
    assert child.intent == ("8", "9") and child.state == "open intent" and child.lag_ms == 1500
    assert other.state == "reading" and other.lag_ms is None
    assert free.state == "unowned" and free.owner is None
    # A finished shard is no work: w1 holds one live shard.
    assert [(w.worker_id, w.shards, w.leaving) for w in view.workers] == [
        ("w1", 1, True),
        ("w2", 1, False),
    ]
    assert view.summary() == {
        "shards": 4,
        "finished": 1,
        "reading": 1,
        "open_intents": 1,
        "unowned": 1,
        "workers": 2,
        "max_lag_ms": 1500,
    }


def test_lag_last_flush_and_rate_come_from_the_progress_in_the_lease_items() -> None:
    flushed = ShardProgress(at_ms=1_795_000_000_000, lag_ms=42_000, rows_per_s=81.5, rows=9)
    leases = {
        **LEASES,
        "shardId-2": lease("shardId-2", "w1", checkpoint=12, progress=flushed),
        # Finished and unowned shards are read by nobody: their last lag would be stale.
        "shardId-0": lease("shardId-0", "w1", checkpoint=SHARD_END, progress=flushed),
        "shardId-3": lease("shardId-3", progress=flushed),
    }
    workers = {**WORKERS, "w1": WorkerBeat("w1", 8, lag_ms=42_000)}
    view = shard_view(leases, workers, {"shardId-1": 1500})
    parent, child, other, free = view.shards
    assert (other.lag_ms, other.last_flush_ms, other.lines_per_s) == (42_000, flushed.at_ms, 81.5)
    assert parent.lag_ms is None and free.lag_ms is None and child.lag_ms == 1500
    assert view.summary()["max_lag_ms"] == 42_000
    assert view.workers[0].lag_ms == 42_000
    text = status_text(view)
    assert "max lag 42 s" in text.splitlines()[0]
    assert next(r for r in text.splitlines() if r.startswith("shardId-2")).split()[5:9] == [
        "42",
        "s",
        "11:06:40",
        "81.5",
    ]
    assert next(r for r in text.splitlines() if r.startswith("w1")).split()[3:5] == ["42", "s"]


def test_lag_comes_from_the_workers_status_documents() -> None:
    docs = [
        {"shards": {"shardId-1": {"here": {"millis_behind": 250}}, "shardId-2": {"owner": "x"}}},
        {"shards": {"shardId-3": {"here": {"millis_behind": None}}}},
        {"no": "shards"},
    ]
    assert lags_from_statuses(docs) == {"shardId-1": 250}


def test_the_terminal_table_has_one_line_per_shard_in_aligned_columns() -> None:
    text = status_text(shard_view(LEASES, WORKERS, {"shardId-1": 1500}))
    lines = text.splitlines()
    assert lines[0] == (
        "4 shards: 1 reading, 1 open intent, 1 unowned, 1 finished; 2 workers; max lag 1500 ms"
    )
    header = next(line for line in lines if line.startswith("SHARD"))
    rows = lines[lines.index(header) + 1 :]
    assert len(rows) == 4
    assert rows[1].split() == [
        "shardId-1",
        "w2",
        "1",
        "7",
        "8..9",
        "1500",
        "ms",
        "-",
        "-",
        "open",
        "intent",
        "shardId-0",
        "-",
    ]
    assert rows[0].split()[-1] == "shardId-1,shardId-2"
    assert header.index("OWNER") == rows[1].index("w2")


def test_status_json_is_the_view_with_sequence_numbers_as_strings() -> None:
    doc = orjson.loads(status_json(shard_view(LEASES, WORKERS)))
    shard = doc["shards"][1]
    assert shard == {
        "shard_id": "shardId-1",
        "owner": "w2",
        "epoch": 1,
        "checkpoint": "7",
        "intent": ["8", "9"],
        "lag_ms": None,
        "parents": ["shardId-0"],
        "children": [],
        "state": "open intent",
        "last_flush_ms": None,
        "lines_per_s": None,
    }
    assert doc["summary"]["shards"] == 4


def test_filter_matches_shard_owner_or_state() -> None:
    rows = shard_view(LEASES, WORKERS).shards
    assert [r.shard_id for r in filter_rows(rows, "W2")] == ["shardId-1"]
    assert [r.shard_id for r in filter_rows(rows, "unowned")] == ["shardId-3"]
    assert len(filter_rows(rows, " ")) == 4


def entry(data: bytes) -> dict[str, object]:
    return {
        "reason": "old reason",
        "kinesis_shard_id": "shardId-1",
        "kinesis_sequence_number": "42",
        "arrival_time": "2026-11-30T10:00:00Z",
        "data": base64.b64encode(data).decode(),
    }


def test_a_record_that_decodes_today_shows_its_lines() -> None:
    ins = inspect_entry(entry(b'{"message": "hello"}'), DecoderConfig())
    assert [s.name for s in ins.steps] == ["base64", "format", "decode today"]
    assert ins.steps[1].detail == "JSON object"
    assert ins.steps[2].ok and "1 lines" in ins.steps[2].detail
    assert '"hello"' in ins.steps[2].preview


def test_a_truncated_gzip_shows_why_it_fails_and_how_far_it_decompresses() -> None:
    ins = inspect_entry(entry(gzip.compress(b"x" * 100)[:15]), DecoderConfig())
    steps = {s.name: s for s in ins.steps}
    assert steps["format"].detail == "gzip"
    assert not steps["decode today"].ok
    assert not steps["decompress"].ok
    assert ins.reason == "old reason" and ins.sequence_number == "42"


def test_data_that_is_not_base64_is_named_and_nothing_else_is_tried() -> None:
    bad = {**entry(b""), "data": "***"}
    ins = inspect_entry(bad, DecoderConfig())
    assert len(ins.steps) == 1 and not ins.steps[0].ok
    assert "not base64" in ins.steps[0].detail
    assert ins.size is None


def test_the_hex_preview_shows_offsets_bytes_and_text() -> None:
    ins = inspect_entry(entry(b"\x00\x01AB"), DecoderConfig())
    assert ins.steps[0].preview == "00000000  00 01 41 42" + " " * 38 + "|..AB|"


def test_the_shards_table_escapes_what_the_lease_table_holds() -> None:
    from service.console.rows import shard_rows_html

    hostile = {"s<1>": lease("s<1>", '<script>alert("x")</script>', checkpoint=5)}
    html = str(shard_rows_html(shard_view(hostile, {}).shards))
    assert "<script>" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
    assert html.startswith('<tr class="reading"><td>s&lt;1&gt;</td>')
