"""The shard owner's side of the elected committer (I/O; sink/iceberg_handoff.py decides).

After uploading a flush, the owner records it on its own lease item (fenced), then waits for
the committer's mark. No mark by the deadline (the committer dead, partitioned, slow, or
no committer elected yet): the owner commits its flush itself through its own group
committer, as in worker mode. Either way exactly once rests on the table's watermark,
never on which process committed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from service.consume.committer_lease import CommitterLeases
from service.sink.iceberg_handoff import Waited, encode_handoff, owner_decision
from service.sink.iceberg_tables import TableRouter

log = logging.getLogger(__name__)
# The owner's fallback deadline, in lease durations: the committer's holder dies and is
# replaced within one lease duration, so two leave it a full round to commit.
DEADLINE_LEASES = 3.0


@dataclass(frozen=True, slots=True)
class HandoffMode:
    """TIDEWAY_ICEBERG_COMMITTER=elected: how owners hand flushes to the committer."""

    leases: CommitterLeases
    interval: float  # the committer's round, and how often a waiting owner reads its mark
    deadline: float  # seconds an owner waits for the mark before committing itself
    observe: Callable[[str, float], None] | None = None  # (outcome, seconds waited)


async def hand_off(
    mode: HandoffMode,
    table: TableRouter,
    data: Sequence[tuple[str, bytes]],
    *,
    worker_id: str,
    shard_id: str,
    epoch: int,
    last: int,
    cut_by: tuple[str, ...] | None = None,
) -> bool:
    """Hand the uploaded flush ``data`` (key, bytes) of ``shard_id`` ending at ``last``
    (written under the lease's ``epoch``, cut by the template keys ``cut_by``) to the
    elected committer and wait until it is in the table. True when the table holds
    this attempt's objects (its intent's stale objects may go), False when it holds the
    range from another attempt. Raises LeaseLostError (the shard is no longer ours) and
    TableCommitError (the fallback commit failed: the intent is replayed)."""
    blob = encode_handoff(epoch, ((key, len(body)) for key, body in data))
    await mode.leases.hand_off(shard_id, worker_id, epoch, last, blob)
    loop = asyncio.get_running_loop()
    started = loop.time()
    while True:
        mark = await mode.leases.marked(shard_id)
        waited = loop.time() - started
        step = owner_decision(mark, last, epoch, waited, mode.deadline)
        if step is not Waited.WAIT:
            break
        await asyncio.sleep(mode.interval)  # a mark comes at most once a committer round
    if step is Waited.FALLBACK:
        log.warning(
            "no commit by the elected committer; committing the flush itself",
            extra={"shard_id": shard_id, "last": last, "waited_s": round(waited, 3)},
        )
        added = await table.commit(shard_id, last, data, cut_by)
    else:
        added = step is Waited.ADDED
    if mode.observe is not None:
        mode.observe(step.value, loop.time() - started)
    return added
