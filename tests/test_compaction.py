"""`tideway compact`'s arguments and settings: one line naming what is wrong."""

from __future__ import annotations

import pytest

from service.cli import main
from service.compaction import check_orphan_age, parse_duration, run_compaction
from service.errors import SettingsError
from service.settings import Settings


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("90s", 90), ("30m", 1800), ("2h", 7200), ("1.5d", 129600)]
)
def test_older_than_takes_seconds_minutes_hours_or_days(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "2 weeks", "-1h", "h"])
def test_a_bad_duration_is_one_line_naming_its_option(text: str) -> None:
    with pytest.raises(ValueError, match=r"^--older-than .*e\.g\. 2h"):
        parse_duration(text)
    with pytest.raises(ValueError, match=r"^--expire-after "):
        parse_duration(text, "--expire-after")


async def test_compact_refuses_a_hive_layout_with_one_line() -> None:
    settings = Settings.load(None, stream="s", bucket="bkt")
    with pytest.raises(
        SettingsError,
        match=r"^setting TIDEWAY_TABLE_FORMAT is invalid: tideway compact needs iceberg",
    ):
        await run_compaction(settings, 3600)


@pytest.mark.parametrize("seconds", [0, 3600, 2 * 86400 - 1])
def test_an_orphan_margin_under_two_days_is_refused_with_one_line(seconds: float) -> None:
    with pytest.raises(ValueError, match=r"^--remove-orphans-older-than .*at least 2d"):
        check_orphan_age(seconds)
    assert check_orphan_age(3 * 86400) == 3 * 86400


def test_compact_with_a_too_short_orphan_margin_exits_2_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TIDEWAY_STREAM", "s")
    monkeypatch.setenv("TIDEWAY_BUCKET", "bkt")
    monkeypatch.setenv("TIDEWAY_TABLE_FORMAT", "iceberg")
    assert main(["compact", "--remove-orphans-older-than", "1h"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err]
    assert err.startswith("tideway compact: --remove-orphans-older-than 3600s: must be at least 2d")
