"""``tideway replay`` against moto: a time window of the stream lands once under a side
prefix, a rerun (also after SIGKILL) lands nothing twice, the live consumer's leases and
checkpoints stay as they were."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pyarrow as pa
import pytest

from service.aws import aws_clients
from service.consume.context import iceberg_properties
from service.consume.leases import LeaseTable
from service.repair.replay import ReplayReport, Window, replay, replay_progress
from service.resources import setup
from service.settings import Settings
from service.sink.iceberg import open_catalog
from tests.conftest import Aws, drain, lineage_counts, object_keys, read_table
from tests.repair.support import put_records, tideway_process

SIDE = "backfill/"


def put_lines(aws: Aws, settings: Settings, tag: str, n: int = 30) -> None:
    lines = [b'{"message": "%s-%d", "service": "api"}' % (tag.encode(), i) for i in range(n)]
    put_records(aws, settings, lines)


def window_of(aws: Aws, settings: Settings) -> tuple[float, float]:
    """30 lines before the window, 30 inside it (returned), 30 after it."""
    put_lines(aws, settings, "before")
    start = time.time()
    put_lines(aws, settings, "inside")
    end = time.time()
    put_lines(aws, settings, "after")
    return start, end


def side_table(aws: Aws, settings: Settings, into: str) -> pa.Table:
    return read_table(aws, settings.model_copy(update={"prefix": into}))


def assert_window_once(table: pa.Table) -> None:
    messages = sorted(table.column("message").to_pylist())
    assert messages == sorted(f"inside-{i}" for i in range(30))
    assert set(lineage_counts(table).values()) == {1}


async def live_leases(settings: Settings) -> dict[str, object]:
    async with aws_clients("dynamodb") as aws:
        leases, _ = await LeaseTable(aws.dynamodb, settings.lease_table).scan()
    return dict(leases)


async def test_replay_lands_the_window_once_and_leaves_the_live_consumer_alone(
    aws: Aws, ready: Settings
) -> None:
    start, end = window_of(aws, ready)
    await drain(ready)
    live_keys = object_keys(aws, ready.bucket, "logs/")
    before = await live_leases(ready)
    report = await replay(ready, Window(start, end, SIDE))
    assert (report.shards, report.rows) == (2, 30)
    assert_window_once(side_table(aws, ready, SIDE))
    again = await replay(ready, Window(start, end, SIDE))
    assert again == ReplayReport(already_finished=2)
    assert_window_once(side_table(aws, ready, SIDE))
    assert await live_leases(ready) == before  # checkpoints, owners, epochs untouched
    async with aws_clients("dynamodb") as clients:
        progress = await replay_progress(clients.dynamodb, ready)
    assert [(p.into, p.finished, p.owner, p.intent) for p in progress] == [
        (SIDE, True, None, None)
    ] * 2
    assert object_keys(aws, ready.bucket, "logs/") == live_keys
    assert read_table(aws, ready).num_rows == 90


async def test_replay_killed_after_an_upload_and_rerun_lands_the_window_once(
    aws: Aws, ready: Settings
) -> None:
    settings = ready.model_copy(update={"lease_duration": 2.0})
    start, end = window_of(aws, settings)
    args = ["replay", "--from", repr(start), "--to", repr(end), "--into", SIDE]
    killed = tideway_process(aws, settings, *args, "--crash-after", "upload")
    _, err = killed.communicate(timeout=60)
    assert killed.returncode == -signal.SIGKILL, err.decode()[-2000:]
    assert side_table(aws, settings, SIDE).num_rows > 0  # one shard's range landed
    report = await replay(settings, Window(start, end, SIDE))
    assert report.shards == 2
    assert_window_once(side_table(aws, settings, SIDE))


@pytest.fixture
async def iceberg(settings: Settings, tmp_path: Path) -> Settings:
    """Settings of an Iceberg live table (SQL catalog on SQLite, warehouse in S3), set up."""
    made = Settings.load(
        None,
        **{
            **settings.model_dump(exclude_unset=True),
            "table_format": "iceberg",
            "iceberg_catalog": "sql",
            "iceberg_catalog_uri": f"sqlite:///{tmp_path}/catalog.db",
        },
    )
    await setup(made)
    return made


def scan(aws: Aws, settings: Settings, identifier: str) -> pa.Table:
    catalog = open_catalog(iceberg_properties(settings, aws.client("s3")))
    return catalog.load_table(identifier).scan().to_arrow()


async def test_replay_into_an_iceberg_side_table_commits_the_window_once(
    aws: Aws, iceberg: Settings
) -> None:
    """The window lands once in a side table made like the live one (its files beside the
    live table's, never in it); killed after its upload and commit, before its progress,
    a rerun finds the flush in the table by the shard's watermark and commits nothing twice;
    a third run finds the shards finished."""
    settings = iceberg.model_copy(update={"lease_duration": 1.0})
    start, end = window_of(aws, settings)
    args = ["replay", "--from", repr(start), "--to", repr(end), "--into", "side.backfill"]
    env = {
        "TIDEWAY_TABLE_FORMAT": "iceberg",
        "TIDEWAY_ICEBERG_CATALOG": "sql",
        "TIDEWAY_ICEBERG_CATALOG_URI": settings.iceberg_catalog_uri or "",
    }
    killed = tideway_process(aws, settings, *args, "--crash-after", "upload", env=env)
    _, err = killed.communicate(timeout=60)
    assert killed.returncode == -signal.SIGKILL, err.decode()[-2000:]
    assert scan(aws, settings, "side.backfill").num_rows > 0  # one shard's flush committed
    report = await replay(settings, Window(start, end, "side.backfill"))
    assert report.shards == 2
    assert_window_once(scan(aws, settings, "side.backfill"))
    again = await replay(settings, Window(start, end, "side.backfill"))
    assert again == ReplayReport(already_finished=2)
    assert_window_once(scan(aws, settings, "side.backfill"))
    assert scan(aws, settings, settings.iceberg_table).num_rows == 0  # the live table
    parquet = [k for k in object_keys(aws, settings.bucket, "") if k.endswith(".parquet")]
    assert parquet and all(k.startswith("replay/side.backfill/logs/dt=") for k in parquet)
