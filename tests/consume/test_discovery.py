"""Shard discovery and parents-first readiness, as pure functions (no AWS)."""

from __future__ import annotations

from service.consume.discovery import ShardInfo, initial_checkpoint, ready_shards, shard_info
from service.consume.leases import ShardLease
from service.consume.sequence import FROM_START, SHARD_END, Checkpoint


def shard(sid: str, *parents: str, closed: bool = False) -> ShardInfo:
    return ShardInfo(sid, parents, closed)


def lease(sid: str, checkpoint: Checkpoint | None = None, *parents: str) -> ShardLease:
    return ShardLease(sid, None, 0, checkpoint, None, None, parents)


def streams(*infos: ShardInfo) -> dict[str, ShardInfo]:
    return {i.shard_id: i for i in infos}


def table(*leases: ShardLease) -> dict[str, ShardLease]:
    return {le.shard_id: le for le in leases}


def test_listing_names_parents_and_closed_shards() -> None:
    child = shard_info(
        {
            "ShardId": "c",
            "ParentShardId": "p",
            "AdjacentParentShardId": "q",
            "SequenceNumberRange": {"StartingSequenceNumber": "7"},
        }
    )
    parent = shard_info(
        {
            "ShardId": "p",
            "SequenceNumberRange": {"StartingSequenceNumber": "1", "EndingSequenceNumber": "9"},
        }
    )
    assert child == ShardInfo("c", ("p", "q"), closed=False)
    assert parent == ShardInfo("p", (), closed=True, ending_sequence=9)


def test_after_a_split_the_children_wait_for_their_parent() -> None:
    shards = streams(shard("p", closed=True), shard("c1", "p"), shard("c2", "p"))
    leases = table(lease("p", 41), lease("c1", FROM_START), lease("c2", FROM_START))
    assert ready_shards(shards, leases) == ["p"]


def test_after_a_merge_the_child_waits_for_both_parents() -> None:
    shards = streams(shard("a", closed=True), shard("b", closed=True), shard("m", "a", "b"))
    one_done = table(lease("a", SHARD_END), lease("b", 12), lease("m", FROM_START))
    both_done = table(lease("a", SHARD_END), lease("b", SHARD_END), lease("m", FROM_START))
    assert ready_shards(shards, one_done) == ["b"]
    assert ready_shards(shards, both_done) == ["m"]


def test_a_finished_parent_releases_its_children_and_is_never_ready_again() -> None:
    shards = streams(shard("p", closed=True), shard("c1", "p"), shard("c2", "p"))
    leases = table(lease("p", SHARD_END), lease("c1", FROM_START), lease("c2", FROM_START))
    assert sorted(ready_shards(shards, leases)) == ["c1", "c2"]


def test_a_parent_gone_from_the_stream_does_not_block_its_child() -> None:
    shards = streams(shard("c", "trimmed"))
    assert ready_shards(shards, table(lease("c"))) == ["c"]


def test_a_parent_listed_without_a_lease_item_blocks_its_child() -> None:
    shards = streams(shard("p", closed=True), shard("c", "p"))
    assert ready_shards(shards, table(lease("c", FROM_START))) == []


def test_a_shard_without_a_lease_item_is_not_ready() -> None:
    assert ready_shards(streams(shard("s")), {}) == []


def test_children_of_a_tracked_parent_start_at_their_first_record() -> None:
    leases = table(lease("p", 5))
    for kind in ("LATEST", "AT_TIMESTAMP", "TRIM_HORIZON"):
        assert initial_checkpoint(shard("c", "p"), leases, kind) == FROM_START


def test_a_closed_shard_first_seen_with_latest_is_finished_at_once() -> None:
    assert initial_checkpoint(shard("old", closed=True), {}, "LATEST") == SHARD_END
    assert initial_checkpoint(shard("old", closed=True), {}, "TRIM_HORIZON") is None
    assert initial_checkpoint(shard("new"), {}, "LATEST") is None
