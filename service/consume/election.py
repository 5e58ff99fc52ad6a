"""Who holds a table's commits (pure; docs/tables.md "One elected committer per table").

Sticky: the holder keeps the commits while peers see its heartbeat move and it is not
leaving; only then does the best-ranked assignable worker (rendezvous hashing, as for
shards: every worker computes the same answer from the same scan) take them. Election is an
optimisation, never what exactly once rests on: two workers that both believe they hold
the commits only race on the table's snapshot assertion, which one of them loses.
"""

from __future__ import annotations

from collections.abc import Collection

from service.consume.assign import rank


def should_take(
    key: str, owner: str | None, me: str, alive: Collection[str], assignable: Collection[str]
) -> bool:
    """True when ``me`` should take the committer item ``key`` now held by ``owner``:
    nobody holds it, or its holder is dead or leaving (not assignable), and ``me`` is the
    assignable worker ranked highest for it."""
    if owner == me or not assignable or me not in assignable:
        return False
    if owner is not None and owner in alive and owner in assignable:
        return False
    return max(assignable, key=lambda w: (rank(key, w), w)) == me
