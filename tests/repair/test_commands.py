"""The repair commands' arguments: a bad time, day or window is refused with one line
naming it, before any AWS call."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import threading
import time

import pytest

from service.cli import _instant, main
from service.errors import TidewayError
from service.repair.replay import Window, check_window
from service.resources import setup
from service.settings import Settings
from tests.conftest import Aws

SETTINGS = Settings.load(None, stream="logs", bucket="tideway-test", prefix="live/")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["replay", "--from", "yesterday", "--to", "1", "--into", "x/"],
            "argument --from: 'yesterday' is neither RFC 3339 (2026-12-01T03:00:00Z) nor epoch",
        ),
        (["redrive", "--date", "2026-13-01"], "argument --date: '2026-13-01' is not a date"),
    ],
)
def test_a_bad_time_or_day_is_refused_by_name(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("window", "message"),
    [
        (Window(10.0, 5.0, "side/"), "replay: --to is before --from"),
        (Window(1.0, 5.0, "live/"), "replay: --into is TIDEWAY_PREFIX, the live table"),
        (Window(1.0, 5.0, ""), "replay: --into must be a key prefix"),
        (
            Window(1.0, 5.0, "side.backfill"),
            "replay: --into side.backfill names a table, but TIDEWAY_TABLE_FORMAT is hive;",
        ),
        (
            Window(1.0, 5.0, "tideway.logs"),
            "replay: --into tideway.logs is TIDEWAY_ICEBERG_TABLE, the live table",
        ),
    ],
)
def test_a_window_that_cannot_be_replayed_is_refused(window: Window, message: str) -> None:
    settings = SETTINGS
    if window.into == "tideway.logs":
        settings = SETTINGS.model_copy(update={"table_format": "iceberg"})
    with pytest.raises(TidewayError, match=f"^{re.escape(message)}"):
        check_window(settings, window)


def test_rfc3339_and_epoch_seconds_name_the_same_instant() -> None:
    assert _instant("2026-12-01T03:00:00Z") == _instant("1796094000") == 1796094000.0
    assert _instant("2026-12-01T03:00:00") == 1796094000.0  # no zone: UTC


def test_sigterm_stops_a_redrive_waiting_on_a_live_claim_with_130(
    aws: Aws,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The only dead-letter object is claimed by another run (for a minute); SIGTERM stops
    the waiting redrive at once: exit 130, a rerun resumes."""
    asyncio.run(setup(settings))
    key = f"dead-letter/dt=2026-12-01/{settings.stream}-shardId-000000000000-1-1.ndjson.gz"
    aws.client("s3").put_object(Bucket=settings.bucket, Key=key, Body=b"")
    aws.client("dynamodb").put_item(
        TableName=settings.lease_table,
        Item={
            "shard_id": {"S": f"repair#redrive#{key}"},
            "owner": {"S": "another-run"},
            "epoch": {"N": "1"},
            "beats": {"N": "0"},
        },
    )
    for name, value in (
        ("STREAM", settings.stream),
        ("BUCKET", settings.bucket),
        ("LEASE_DURATION", "60"),
    ):
        monkeypatch.setenv(f"TIDEWAY_{name}", value)
    default = signal.getsignal(signal.SIGTERM)

    def terminate_once_handled() -> None:  # never before the command's own handler is in
        while signal.getsignal(signal.SIGTERM) == default:
            time.sleep(0.05)
        time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=terminate_once_handled, daemon=True).start()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        assert main(["redrive"]) == 130
    finally:  # the command set up its own logging: give the test session its own back
        root.handlers[:] = handlers
        root.setLevel(level)
    assert "tideway redrive: stopped; run it again to resume" in capsys.readouterr().err
