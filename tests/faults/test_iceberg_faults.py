"""Issue 17 under real faults: consumer processes committing to an Iceberg table (SQL
catalog on SQLite, warehouse in the backend's S3) are SIGKILLed while lines arrive; a
pyiceberg scan then shows every line exactly once."""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

import pytest

from service.consume.context import iceberg_properties
from service.resources import setup
from service.settings import Settings
from service.sink.iceberg import open_catalog
from tests.conftest import Aws
from tests.fleet import Fleet, Producer, caught_up, shards_of, wait_until

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


def test_sigkilled_committers_leave_each_line_in_the_table_once(
    aws: Aws, iceberg_four: Settings, tmp_path: Path
) -> None:
    rng = random.Random(17)
    settings = iceberg_four
    env = {
        "TIDEWAY_TABLE_FORMAT": "iceberg",
        "TIDEWAY_ICEBERG_CATALOG": "sql",
        "TIDEWAY_ICEBERG_CATALOG_URI": settings.iceberg_catalog_uri or "",
    }
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
    rows = catalog.load_table(settings.iceberg_table).scan().to_arrow()
    messages = rows.column("message").to_pylist()
    assert len(producer.sent) == 300 * 4
    assert sorted(messages) == sorted(producer.sent)  # every line once: none lost, none twice
