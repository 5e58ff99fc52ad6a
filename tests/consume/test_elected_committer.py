"""The elected committer (consume/committer.py, consume/handoff.py) against the test
backend: owners hand their uploaded flushes off, one worker holds the table's commits and
commits several workers' flushes in one snapshot; a dead or deposed committer loses nothing
and adds nothing twice; with no committer, owners commit themselves after the deadline."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pyiceberg.table import Table

from service.aws import AwsClients
from service.consume.committer import ElectedCommitter
from service.consume.committer_lease import CommitterLeases
from service.consume.context import shard_context, table_committer
from service.consume.handoff import HandoffMode
from service.consume.leases import LeaseTable
from service.consume.reader import list_shards
from service.consume.shard import ShardConsumer
from service.resources import ensure_iceberg_table
from service.settings import Settings
from service.sink.iceberg_commit import SUMMARY_PREFIX
from service.sink.iceberg_handoff import Handoff, encode_handoff
from service.sink.iceberg_tables import TableRouter
from tests.conftest import Aws, lineage_counts
from tests.consume.support import owned
from tests.consume.test_iceberg import load, put_services

OWNERS = ("owner-1", "owner-2")
LINES = 12


@pytest.fixture
async def iceberg(ready: Settings, clients: AwsClients, tmp_path: Path) -> Settings:
    settings = ready.model_copy(
        update={
            "table_format": "iceberg",
            "iceberg_catalog": "sql",
            "iceberg_catalog_uri": f"sqlite:///{tmp_path}/catalog.db",
        }
    )
    assert await ensure_iceberg_table(clients.s3, settings) == "created"
    return settings


@dataclasses.dataclass
class Fleet:
    """Two owners, each consuming one shard with its own router, handing flushes off."""

    settings: Settings
    clients: AwsClients
    leases: CommitterLeases
    shards: list[str]
    outcomes: list[str] = dataclasses.field(default_factory=list)
    tasks: list[asyncio.Task[Any]] = dataclasses.field(default_factory=list)

    def mode(self, deadline: float) -> HandoffMode:
        return HandoffMode(
            self.leases,
            interval=0.1,
            deadline=deadline,
            observe=lambda o, _: self.outcomes.append(o),
        )

    async def router(self, seed: int) -> TableRouter:
        return await table_committer(self.settings, self.clients.s3, seed)

    async def start(self, table: LeaseTable, deadline: float) -> None:
        """Each owner reads its shard to the tip and hands its flush off (drain)."""
        for i, (shard, owner) in enumerate(zip(self.shards, OWNERS, strict=True)):
            lease = await owned(table, shard, owner)
            ctx = shard_context(
                self.settings,
                self.clients.kinesis,
                self.clients.s3,
                self.clients.dynamodb,
                owner,
            )
            ctx = dataclasses.replace(ctx, table=await self.router(i), handoff=self.mode(deadline))
            consumer = ShardConsumer(
                ctx, lease, lease.epoch, closed=False, budget_share=lambda: 1 << 40
            )
            self.tasks.append(asyncio.create_task(consumer.run(asyncio.Event(), drain=True)))

    async def handed_off(self) -> None:
        """Until both owners' flushes wait on their lease items."""
        for _ in range(600):
            pending = await self.leases.handoffs()
            if {h.shard_id for h, _ in pending} == set(self.shards):
                return
            assert not any(t.done() for t in self.tasks), "an owner finished without a commit"
            await asyncio.sleep(0.05)
        raise AssertionError("the owners never handed their flushes off")

    async def finished(self) -> None:
        await asyncio.wait_for(asyncio.gather(*self.tasks), 60)

    async def committer(self, worker_id: str, seed: int) -> ElectedCommitter:
        """Another worker's committer (its own router), never marked stale by itself."""
        return ElectedCommitter(
            self.mode(60.0), await self.router(seed), self.clients.s3, worker_id, fresh=lambda: True
        )


@pytest.fixture
async def fleet(aws: Aws, iceberg: Settings, clients: AwsClients) -> Fleet:
    shards = sorted(await list_shards(clients.kinesis, iceberg.stream))
    for shard in shards:
        put_services(aws, iceberg, shard, LINES, shard[-1:])
    return Fleet(iceberg, clients, CommitterLeases(clients.dynamodb, iceberg.lease_table), shards)


def summary_shards(table: Table, stream: str) -> list[set[str]]:
    """Per snapshot, the shards whose watermark it moved (its summary)."""
    prefix = f"{SUMMARY_PREFIX}{stream}."
    return [
        {k.removeprefix(prefix) for k in s.summary.additional_properties if k.startswith(prefix)}
        for s in table.snapshots()
    ]


def exactly_once(table: Table) -> None:
    rows = table.scan().to_arrow()
    assert rows.num_rows == 2 * LINES
    assert set(lineage_counts(rows).values()) == {1}


async def step_until(committer: ElectedCommitter, done: Callable[[], bool]) -> None:
    for _ in range(100):
        await committer.step()
        if done():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the committer never got there")


class MarkDies(CommitterLeases):
    """The lease table as the committer sees it, but the process dies when it first marks
    a lease item: its snapshot landed, no owner was told."""

    async def mark(self, handoff: Handoff, epoch: int) -> bool:
        raise ConnectionError("the process died here")


async def test_one_committer_holds_the_item_and_commits_both_workers_in_one_snapshot(
    fleet: Fleet, table: LeaseTable
) -> None:
    await fleet.start(table, deadline=60.0)
    await fleet.handed_off()
    a, b = await fleet.committer("committer-a", 7), await fleet.committer("committer-b", 8)
    everyone = {a.worker_id, b.worker_id, *OWNERS}
    for c in (a, b):
        c.observe(everyone, everyone)
    added = [await a.step(), await b.step(), await a.step(), await b.step()]
    holders = [c for c in (a, b) if c.holding]
    assert len(holders) == 1  # the ranked one took the free item; the other never does
    assert sorted(added) == [0, 0, 0, 2]
    await fleet.finished()  # both owners saw the mark and checkpointed

    (holder,) = holders
    hold = await fleet.leases.hold(holder.identifier)
    assert (hold.owner, hold.epoch) == (holder.worker_id, 1)
    result = load(fleet.clients, fleet.settings)
    exactly_once(result)
    assert summary_shards(result, fleet.settings.stream) == [set(fleet.shards)]
    assert (holder.committed, holder.snapshots) == (2, 1)
    assert fleet.outcomes == ["added", "added"]
    assert await fleet.leases.handoffs() == []  # the checkpoints cleared the hand-offs


@pytest.mark.parametrize("dies", ["before_commit", "before_mark"])
async def test_a_dead_committer_loses_nothing_and_adds_nothing_twice(
    fleet: Fleet, table: LeaseTable, dies: str
) -> None:
    await fleet.start(table, deadline=60.0)
    await fleet.handed_off()
    identifier = fleet.settings.iceberg_table
    if dies == "before_commit":  # it took the item, then died before its first round
        await fleet.leases.take(identifier, "dead", await fleet.leases.hold(identifier))
    else:
        dead = await fleet.committer("dead", 1)
        dead.mode = dataclasses.replace(
            dead.mode, leases=MarkDies(fleet.clients.dynamodb, fleet.settings.lease_table)
        )
        dead.observe({"dead"}, {"dead"})
        with pytest.raises(ConnectionError):
            await dead.step()
        exactly_once(load(fleet.clients, fleet.settings))  # committed, nobody marked
    heir = await fleet.committer("heir", 2)
    alive = {"heir", *OWNERS}  # "dead" stopped beating
    heir.observe(alive, alive)
    await step_until(heir, lambda: all(t.done() for t in fleet.tasks))
    await fleet.finished()

    hold = await fleet.leases.hold(identifier)
    assert (hold.owner, hold.epoch) == ("heir", 2)
    result = load(fleet.clients, fleet.settings)
    exactly_once(result)
    assert summary_shards(result, fleet.settings.stream) == [set(fleet.shards)]
    # The heir committed what waited, or found it committed and told the owners so (the
    # objects the table holds may be another attempt's: they keep their intents' listing).
    expected = ["added", "added"] if dies == "before_commit" else ["present", "present"]
    assert fleet.outcomes == expected


async def test_a_deposed_committer_commits_its_batch_and_adds_nothing(
    fleet: Fleet, table: LeaseTable
) -> None:
    await fleet.start(table, deadline=60.0)
    await fleet.handed_off()
    zombie = await fleet.committer("zombie", 3)
    zombie.observe({"zombie"}, {"zombie"})
    identifier = fleet.settings.iceberg_table
    await fleet.leases.take(identifier, "zombie", await fleet.leases.hold(identifier))
    batch = await zombie.gather()  # read the hand-offs and footers, then paused
    assert len(batch) == 2
    heir = await fleet.committer("heir", 4)
    alive = {"heir", *OWNERS}
    heir.observe(alive, alive)
    await step_until(heir, lambda: heir.committed == 2)
    await fleet.finished()

    assert await zombie.commit(batch) == 0  # the zombie wakes and commits its stale batch
    zombie.observe({"zombie", *alive}, {"zombie", *alive})  # its next lease round
    assert await zombie.step() == 0  # sees it lost the item to a live heir: keeps off
    assert not zombie.holding
    result = load(fleet.clients, fleet.settings)
    exactly_once(result)
    assert summary_shards(result, fleet.settings.stream) == [set(fleet.shards)]
    assert fleet.outcomes == ["added", "added"]


async def test_with_no_committer_each_owner_commits_itself_after_the_deadline(
    fleet: Fleet, table: LeaseTable
) -> None:
    await fleet.start(table, deadline=0.5)
    await fleet.finished()
    assert fleet.outcomes == ["fallback", "fallback"]
    result = load(fleet.clients, fleet.settings)
    exactly_once(result)
    assert sorted(map(sorted, summary_shards(result, fleet.settings.stream))) == [
        [s] for s in fleet.shards
    ]
    late = await fleet.committer("late", 5)  # a committer elected afterwards finds nothing
    late.observe({"late"}, {"late"})
    assert await late.step() == 0 and late.holding
    assert len(load(fleet.clients, fleet.settings).snapshots()) == 2


async def test_a_malformed_hand_off_is_left_out_not_a_failed_round(
    iceberg: Settings, clients: AwsClients, table: LeaseTable
) -> None:
    leases = CommitterLeases(clients.dynamodb, iceberg.lease_table)
    items = {
        "shardId-bad-json": {"handoff_last": {"S": "12"}, "handoff": {"B": b"not json"}},
        "shardId-bad-last": {"handoff_last": {"S": "x"}, "handoff": {"B": encode_handoff(1, [])}},
        "shardId-good": {
            "handoff_last": {"S": "7"},
            "handoff": {"B": encode_handoff(3, [("k", 9)])},
        },
    }
    for key, attributes in items.items():
        await clients.dynamodb.put_item(
            TableName=iceberg.lease_table, Item={"shard_id": {"S": key}, **attributes}
        )
    got = await leases.handoffs()
    assert [(h.shard_id, h.last, h.epoch, h.files) for h, _ in got] == [
        ("shardId-good", 7, 3, (("k", 9),))
    ]
