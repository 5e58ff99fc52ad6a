"""Properties of the pure shard assignment (no AWS)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from service.consume.assign import assign, moved

shard_sets = st.sets(st.integers(0, 400).map(lambda i: f"shardId-{i:012d}"), max_size=120)
worker_sets = st.sets(st.text("abcdefgh", min_size=1, max_size=6), min_size=1, max_size=20)


def loads(result: dict[str, str], workers: set[str]) -> list[int]:
    return [sum(1 for w in result.values() if w == worker) for worker in workers]


@given(shard_sets, worker_sets)
def test_every_shard_is_assigned_exactly_once_to_a_live_worker(
    shards: set[str], workers: set[str]
) -> None:
    result = assign(shards, workers)
    assert set(result) == shards
    assert set(result.values()) <= workers


@given(shard_sets, worker_sets)
def test_loads_differ_by_at_most_one(shards: set[str], workers: set[str]) -> None:
    counts = loads(assign(shards, workers), workers)
    assert max(counts) - min(counts) <= 1
    assert max(counts) == -(-len(shards) // len(workers))


@given(shard_sets, worker_sets, st.randoms(use_true_random=False))
def test_the_answer_depends_only_on_the_inputs_not_their_order(
    shards: set[str], workers: set[str], rnd: object
) -> None:
    current = assign(shards, workers)
    s, w = sorted(shards), sorted(workers)
    rnd.shuffle(s)  # type: ignore[attr-defined]
    rnd.shuffle(w)  # type: ignore[attr-defined]
    assert assign(s, w, current) == assign(shards, workers, dict(current))
    assert assign(reversed(s), reversed(w)) == current


@given(shard_sets, worker_sets, st.text("xyz", min_size=1, max_size=4))
def test_a_join_moves_only_the_newcomers_share(
    shards: set[str], workers: set[str], new: str
) -> None:
    before = assign(shards, workers)
    grown = workers | {new}
    after = assign(shards, grown, before)
    if new in workers:
        assert after == before
        return
    # Only shards that go to the newcomer move, and it gets a balanced share, no more.
    assert all(after[s] == new for s in shards if after[s] != before[s])
    assert moved(before, after) == sum(1 for w in after.values() if w == new)
    assert moved(before, after) <= -(-len(shards) // len(grown))


@given(shard_sets, worker_sets.filter(lambda w: len(w) > 1), st.data())
def test_a_leave_moves_exactly_the_leavers_shards(
    shards: set[str], workers: set[str], data: st.DataObject
) -> None:
    before = assign(shards, workers)
    gone = data.draw(st.sampled_from(sorted(workers)))
    after = assign(shards, workers - {gone}, before)
    assert {s for s in shards if after[s] != before[s]} == {s for s in shards if before[s] == gone}
    counts = loads(after, workers - {gone})
    assert max(counts) - min(counts) <= 1


@settings(max_examples=30)
@given(worker_sets)
def test_with_no_workers_nothing_is_assigned(workers: set[str]) -> None:
    assert assign(["a", "b"], []) == {}
    assert assign([], workers) == {}


def test_stale_owners_and_unknown_shards_are_ignored() -> None:
    current = {"s1": "dead", "s2": "w1", "gone": "w2"}
    result = assign(["s1", "s2", "s3"], ["w1", "w2"], current)
    assert set(result) == {"s1", "s2", "s3"} and result["s2"] == "w1"
