"""The lease table against the AWS backend: taking, fencing and releasing a shard."""

from __future__ import annotations

import pytest

from service.consume.leases import SHARD_END, LeaseTable, ShardLease
from service.errors import LeaseLostError


async def lease_of(table: LeaseTable, shard_id: str) -> ShardLease:
    leases, _ = await table.scan()
    return leases[shard_id]


async def test_a_free_shard_is_taken_with_the_next_epoch(table: LeaseTable) -> None:
    await table.ensure_shard("s-1", ("p-0",))
    taken = await table.acquire(await lease_of(table, "s-1"), "alice")
    assert (taken.owner, taken.epoch, taken.parents) == ("alice", 1, ("p-0",))
    assert await lease_of(table, "s-1") == taken


async def test_ensure_shard_leaves_an_existing_item_alone(table: LeaseTable) -> None:
    await table.ensure_shard("s-1", ())
    taken = await table.acquire(await lease_of(table, "s-1"), "alice")
    await table.checkpoint("s-1", "alice", taken.epoch, 17)
    await table.ensure_shard("s-1", (), SHARD_END)
    lease = await lease_of(table, "s-1")
    assert (lease.owner, lease.checkpoint) == ("alice", 17)


async def test_intent_and_checkpoint_are_ints_and_the_checkpoint_clears_the_intent(
    table: LeaseTable,
) -> None:
    await table.ensure_shard("s-1", ())
    taken = await table.acquire(await lease_of(table, "s-1"), "alice")
    await table.write_intent("s-1", "alice", taken.epoch, 5, 9)
    opened = await lease_of(table, "s-1")
    assert (opened.intent_first, opened.intent_last, opened.checkpoint) == (5, 9, None)
    await table.checkpoint("s-1", "alice", taken.epoch, 9)
    closed = await lease_of(table, "s-1")
    assert (closed.intent_first, closed.intent_last, closed.checkpoint) == (None, None, 9)


async def test_after_a_steal_the_old_owner_can_write_neither_intent_nor_checkpoint(
    table: LeaseTable,
) -> None:
    await table.ensure_shard("s-1", ())
    alice = await table.acquire(await lease_of(table, "s-1"), "alice")
    bob = await table.acquire(alice, "bob")  # alice looked dead to bob
    assert bob.epoch == alice.epoch + 1
    with pytest.raises(LeaseLostError):
        await table.write_intent("s-1", "alice", alice.epoch, 1, 4)
    with pytest.raises(LeaseLostError):
        await table.checkpoint("s-1", "alice", alice.epoch, 4)
    with pytest.raises(LeaseLostError):
        await table.release("s-1", "alice", alice.epoch)
    assert await lease_of(table, "s-1") == bob


async def test_a_take_from_a_stale_read_loses_to_the_take_that_came_first(
    table: LeaseTable,
) -> None:
    await table.ensure_shard("s-1", ())
    seen = await lease_of(table, "s-1")
    await table.acquire(seen, "alice")
    with pytest.raises(LeaseLostError):
        await table.acquire(seen, "bob")
    assert (await lease_of(table, "s-1")).owner == "alice"


async def test_release_frees_the_shard_and_bumps_the_epoch(table: LeaseTable) -> None:
    await table.ensure_shard("s-1", ())
    alice = await table.acquire(await lease_of(table, "s-1"), "alice")
    await table.checkpoint("s-1", "alice", alice.epoch, 3)
    await table.release("s-1", "alice", alice.epoch)
    released = await lease_of(table, "s-1")
    assert (released.owner, released.epoch, released.checkpoint) == (None, alice.epoch + 1, 3)
    bob = await table.acquire(released, "bob")
    assert (bob.owner, bob.checkpoint) == ("bob", 3)


async def test_a_finished_shard_is_never_taken_again(table: LeaseTable) -> None:
    """Issue 14 item 1: a scan saw the parent's owner as dead just before it wrote SHARD_END
    (at the same epoch); the take from that scan must fail."""
    await table.ensure_shard("parent", ())
    alice = await table.acquire(await lease_of(table, "parent"), "alice")
    stale = await lease_of(table, "parent")
    await table.checkpoint("parent", "alice", alice.epoch, SHARD_END)
    await table.release("parent", "alice", alice.epoch)
    with pytest.raises(LeaseLostError):
        await table.acquire(stale, "bob")
    with pytest.raises(LeaseLostError):
        await table.acquire(await lease_of(table, "parent"), "bob")
    assert (await lease_of(table, "parent")).owner is None
