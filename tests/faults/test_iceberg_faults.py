"""Issue 17 under real faults: consumer processes committing to an Iceberg table (SQL
catalog on SQLite, warehouse in the backend's S3) are SIGKILLed while lines arrive; a
pyiceberg scan then shows every line exactly once."""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

import pytest
from pyiceberg.table import Table

from service.consume.context import iceberg_properties
from service.resources import setup
from service.settings import Settings
from service.sink.iceberg import open_catalog
from service.sink.iceberg_commit import SUMMARY_PREFIX
from tests.conftest import Aws
from tests.fleet import (
    Fleet,
    Producer,
    caught_up,
    committer_of,
    report,
    shards_of,
    wait_until,
)

pytestmark = pytest.mark.faults


@pytest.fixture
async def iceberg_four(settings: Settings, tmp_path: Path) -> Settings:
    four = Settings.load(
        None,
        **{
            **settings.model_dump(exclude_unset=True),
            "shard_count": 4,
            "table_format": "iceberg",
            "iceberg_catalog": "sql",
            "iceberg_catalog_uri": f"sqlite:///{tmp_path}/catalog.db",
        },
    )
    await setup(four)  # stream, bucket, lease table and the Iceberg table
    return four


def iceberg_env(settings: Settings, committer: str = "elected") -> dict[str, str]:
    return {
        "TIDEWAY_TABLE_FORMAT": "iceberg",
        "TIDEWAY_ICEBERG_CATALOG": "sql",
        "TIDEWAY_ICEBERG_CATALOG_URI": settings.iceberg_catalog_uri or "",
        "TIDEWAY_ICEBERG_COMMITTER": committer,
    }


@pytest.mark.parametrize("committer", ["elected", "worker"])
def test_sigkilled_committers_leave_each_line_in_the_table_once(
    aws: Aws, iceberg_four: Settings, tmp_path: Path, committer: str
) -> None:
    rng = random.Random(17)
    settings = iceberg_four
    env = iceberg_env(settings, committer)
    producer = Producer(aws, settings.stream, tag="ice", interval=0.2)
    with Fleet(aws, settings, tmp_path, **env) as fleet:
        for _ in range(2):
            fleet.start()
        producer.start(300)
        for _ in range(3):
            time.sleep(2.0)
            holders = [w for w in fleet.workers.values() if shards_of(aws, settings, w.name)]
            victim = rng.choice(sorted(holders or fleet.workers.values(), key=lambda w: w.name))
            fleet.signal(victim, signal.SIGKILL)
            fleet.start()
        producer.join()
        wait_until(lambda: caught_up(aws, settings, producer.tips), 120, "the fleet to catch up")
        fleet.stop_all()
    catalog = open_catalog(iceberg_properties(settings, aws.client("s3")))
    table = catalog.load_table(settings.iceberg_table)
    messages = table.scan().to_arrow().column("message").to_pylist()
    assert len(producer.sent) == 300 * 4
    assert sorted(messages) == sorted(producer.sent)  # every line once: none lost, none twice
    counts = flushes_per_snapshot(table, settings.stream)
    report(f"iceberg_sigkill_x3_{committer}", snapshots=len(counts), flushes=sum(counts))


def flushes_per_snapshot(table: Table, stream: str) -> list[int]:
    """Per snapshot, the flushes it added (the shards its summary names)."""
    prefix = f"{SUMMARY_PREFIX}{stream}."
    return [
        sum(1 for k in s.summary.additional_properties if k.startswith(prefix))
        for s in table.snapshots()
    ]


def test_sigkill_of_the_elected_committer_loses_nothing_and_adds_nothing_twice(
    aws: Aws, iceberg_four: Settings, tmp_path: Path
) -> None:
    """The worker holding ``committer#{table}`` is SIGKILLed three times while lines arrive
    (a new worker started each time): flushes handed to it are committed by its heir (or by
    their owners after the deadline), each line once."""
    settings = iceberg_four
    producer = Producer(aws, settings.stream, tag="elected", interval=0.2)
    killed: list[str] = []
    with Fleet(aws, settings, tmp_path, **iceberg_env(settings)) as fleet:
        for _ in range(3):
            fleet.start()
        producer.start(300)
        for _ in range(3):
            wait_until(
                lambda: committer_of(aws, settings) in fleet.workers, 60, "a committer elected"
            )
            time.sleep(1.5)  # let it take hand-offs, and be mid-round when it dies
            holder = committer_of(aws, settings)
            assert holder in fleet.workers
            fleet.signal(fleet.workers[holder], signal.SIGKILL)
            killed.append(holder)
            fleet.start()
        producer.join()
        wait_until(lambda: caught_up(aws, settings, producer.tips), 180, "the fleet to catch up")
        fleet.stop_all()
    catalog = open_catalog(iceberg_properties(settings, aws.client("s3")))
    table = catalog.load_table(settings.iceberg_table)
    messages = table.scan().to_arrow().column("message").to_pylist()
    assert len(set(killed)) == 3  # a new holder each time
    assert len(producer.sent) == 300 * 4
    assert sorted(messages) == sorted(producer.sent)  # every line once: none lost, none twice
    per_snapshot = flushes_per_snapshot(table, settings.stream)
    assert max(per_snapshot) >= 2  # the elected committer batched several shards' flushes
    report(
        "iceberg_committer_sigkill_x3",
        lines=len(producer.sent),
        lost=len(set(producer.sent) - set(messages)),
        duplicated=len(messages) - len(set(messages)),
        snapshots=len(per_snapshot),
        flushes=sum(per_snapshot),
    )
