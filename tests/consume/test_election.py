"""The pure choice of a table's committer (consume/election.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from service.consume.election import should_take

KEY = "committer#tideway.logs"
workers = st.sets(st.text("abcdef", min_size=1, max_size=4), min_size=1, max_size=12)


@given(workers)
def test_exactly_one_assignable_worker_takes_a_free_item(fleet: set[str]) -> None:
    takers = [w for w in fleet if should_take(KEY, None, w, fleet, fleet)]
    assert len(takers) == 1


@given(workers, st.data())
def test_a_live_holder_keeps_it(fleet: set[str], data: st.DataObject) -> None:
    holder = data.draw(st.sampled_from(sorted(fleet)))
    assert not any(should_take(KEY, holder, w, fleet, fleet) for w in fleet)


@given(workers, st.data())
def test_a_dead_or_leaving_holder_is_replaced_by_one_worker(
    fleet: set[str], data: st.DataObject
) -> None:
    holder = data.draw(st.sampled_from(sorted(fleet)))
    others = fleet - {holder}
    dead = [w for w in others if should_take(KEY, holder, w, others, others)]
    leaving = [w for w in others if should_take(KEY, holder, w, fleet, others)]
    assert len(dead) == len(leaving) == (1 if others else 0)
    assert dead == leaving  # the same heir either way


def test_a_worker_not_assignable_never_takes() -> None:
    assert not should_take(KEY, None, "a", {"a", "b"}, {"b"})
    assert not should_take(KEY, None, "a", {"a"}, set())
