"""The repair commands' arguments: a bad time, day or window is refused with one line
naming it, before any AWS call."""

from __future__ import annotations

import pytest

from service.cli import _instant, main
from service.errors import TidewayError
from service.repair.replay import Window, check_window
from service.settings import Settings

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
    ],
)
def test_a_window_that_cannot_be_replayed_is_refused(window: Window, message: str) -> None:
    with pytest.raises(TidewayError, match=f"^{message}"):
        check_window(SETTINGS, window)


def test_rfc3339_and_epoch_seconds_name_the_same_instant() -> None:
    assert _instant("2026-12-01T03:00:00Z") == _instant("1796094000") == 1796094000.0
    assert _instant("2026-12-01T03:00:00") == 1796094000.0  # no zone: UTC
