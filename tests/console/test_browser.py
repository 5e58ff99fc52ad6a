"""The console in a real browser: headless Chromium (Debian's package) driven by Selenium.

Signs in with the printed one-time URL, follows the navigation bar to live pages, redrives a
dead letter (its row read back from S3), replays a window and edits the pipeline document,
and is refused a state-changing request without the CSRF token or without operator rights.
Screenshots go to $CONSOLE_SCREENSHOTS (docs/console/ when regenerating the docs), else to
a temporary folder. Under CI the test fails, never skips, when Chromium is missing
(`make agents` installs it).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service.pipeline.config import load_pipelines
from service.settings import Settings
from tests.conftest import Aws, read_table
from tests.console_support import (
    REDRIVEN_MESSAGE,
    console,
    put_emf_metrics,
    seed_dead_letters,
    seed_fleet,
    seed_redrivable,
)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
POST_WITHOUT_CSRF = """
const done = arguments[arguments.length - 1];
fetch('/dead-letters/redrive', {method: 'POST',
  headers: {'Content-Type': 'application/x-www-form-urlencoded'},
  body: 'keys=' + encodeURIComponent(arguments[0]) + (arguments[1] ? '&csrf_token=' + arguments[1] : '')})
  .then(r => r.text().then(t => done([r.status, t])));
"""


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    if not (CHROMIUM and DRIVER):
        message = "chromium and chromium-driver are not installed (make agents installs them)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1280,860",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(DRIVER))
    driver.set_script_timeout(10)
    try:
        yield driver
    finally:
        driver.quit()


PIPELINES = """[[pipeline]]
name = "checkout"
match = 'service == "checkout"'
parse = "json"
redact = ["email"]
"""


def shown(driver: Any, element_id: str) -> Any:
    """The element once the page that has it is loaded (a click's answer may lag)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, 10, 0.1).until(lambda d: d.find_element(By.ID, element_id))


def replay_and_edit_pipelines(driver: Any, start: float, folder: Path) -> dict[str, str]:
    """Start a replay from the Replays page and wait for it to finish (the page refreshes
    itself); store a bad, then a good pipeline document from the Pipelines page."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    seen: dict[str, str] = {}
    driver.find_element(By.LINK_TEXT, "Replays").click()
    for name, value in (("from", str(start)), ("to", str(time.time() + 5)), ("into", "backfill/")):
        driver.find_element(By.NAME, name).send_keys(value)
    driver.find_element(By.ID, "start-replay").click()
    # The page refreshes itself every 2 s while a replay runs; reloading sooner saves time.
    WebDriverWait(driver, 20, 0.3).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#jobs tr.finished") or d.refresh()
    )
    seen["replay"] = shown(driver, "jobs").text
    driver.save_screenshot(str(folder / "replays.png"))
    driver.find_element(By.LINK_TEXT, "Pipelines").click()
    editor = driver.find_element(By.NAME, "document")
    driver.execute_script(
        "arguments[0].value = arguments[1]", editor, PIPELINES.replace("json", "jsn")
    )
    driver.find_element(By.ID, "store").click()
    seen["refused"] = shown(driver, "refused").text
    driver.save_screenshot(str(folder / "pipelines-refused.png"))
    editor = driver.find_element(By.NAME, "document")
    driver.execute_script("arguments[0].value = arguments[1]", editor, PIPELINES)
    driver.find_element(By.ID, "store").click()
    shown(driver, "stored-now")  # the answer to the POST, not the page it came from
    seen["version"] = driver.find_element(By.ID, "version").text
    driver.save_screenshot(str(folder / "pipelines.png"))
    return seen


def drawn_charts(driver: Any) -> dict[str, tuple[int, int]]:
    """Chart id -> (canvases in it, values uPlot was given) once static/charts.js ran."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 10, 0.1).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#chart-lines[data-drawn] canvas")
    )
    return {
        box.get_attribute("id").removeprefix("chart-"): (
            len(box.find_elements(By.TAG_NAME, "canvas")),
            int(box.get_attribute("data-drawn") or 0),
        )
        for box in driver.find_elements(By.CSS_SELECTOR, ".chart")
    }


def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("CONSOLE_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


async def test_an_operator_signs_in_and_browses_live_pages_a_viewer_changes_nothing(
    aws: Aws, ready: Settings, chromium: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    ids = await seed_fleet(ready, shards=12)
    start = time.time() - 5
    for n in range(30):
        line = b'{"message": "replayed-%d", "service": "checkout"}' % n
        aws.client("kinesis").put_record(StreamName=ready.stream, Data=line, PartitionKey=str(n))
    key = await seed_dead_letters(ready)
    redrivable = await seed_redrivable(ready)
    put_emf_metrics(aws.client("cloudwatch"), ready.stream, int(time.time()) // 60 * 60)
    folder = shots(tmp_path)
    driver = chromium

    def operator_session(sign_in: str) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        driver.get(sign_in)
        seen["role"] = driver.find_element(By.ID, "role").text
        seen["count"] = driver.find_element(By.ID, "shard-count").text
        seen["charts"] = drawn_charts(driver)
        driver.save_screenshot(str(folder / "overview.png"))
        driver.find_element(By.LINK_TEXT, "Shards").click()
        cells = driver.find_elements(By.CSS_SELECTOR, "#shards tbody tr td:first-child")
        seen["shards"] = [c.text for c in cells]
        driver.save_screenshot(str(folder / "shards.png"))
        driver.find_element(By.LINK_TEXT, "Dead letters").click()
        seen["dead"] = driver.find_element(By.ID, "dead").text
        driver.save_screenshot(str(folder / "dead-letters.png"))
        driver.find_element(By.LINK_TEXT, "#1").click()
        seen["reason"] = driver.find_element(By.ID, "reason").text
        driver.save_screenshot(str(folder / "dead-letter-record.png"))
        seen["no_csrf"] = driver.execute_async_script(POST_WITHOUT_CSRF, key, "")
        driver.back()
        driver.find_element(By.CSS_SELECTOR, f'input[name="keys"][value="{redrivable}"]').click()
        driver.find_element(By.ID, "redrive").click()
        seen["redrive"] = shown(driver, "outcome").text
        driver.save_screenshot(str(folder / "redrive.png"))
        seen |= replay_and_edit_pipelines(driver, start, folder)
        driver.get(sign_in)  # a spent token
        seen["again"] = driver.find_element(By.TAG_NAME, "body").text
        return seen

    async with console(ready) as run:
        seen = await asyncio.to_thread(operator_session, run.sign_in)
    assert seen["role"] == "operator" and seen["count"] == "12"
    # uPlot drew the CloudWatch lines (3 minutes, in and out) and the shards' lags (10
    # owned shards and the largest, one sample) on canvases.
    assert seen["charts"]["lines"] == (1, 6) and seen["charts"]["lag_max"] == (1, 3)
    assert seen["charts"]["lag"] == (1, 6)
    assert seen["shards"] == ids
    assert "gzip: truncated stream" in seen["dead"]
    assert seen["reason"] == "avro: no schema for id 7"
    assert seen["no_csrf"][0] == 403 and "CSRF" in seen["no_csrf"][1]
    assert "wrong or already used" in seen["again"]
    assert "landed 1" in seen["redrive"] and "still_dead 0" in seen["redrive"]
    assert read_table(aws, ready).column("message").to_pylist() == [REDRIVEN_MESSAGE]
    assert "records 30, rows 30" in seen["replay"]
    assert seen["refused"].startswith("Refused, nothing stored: pipeline")
    assert seen["version"] == load_pipelines(PIPELINES).version

    def viewer_session(sign_in: str) -> dict[str, Any]:
        driver.delete_all_cookies()
        driver.get(sign_in)
        driver.find_element(By.LINK_TEXT, "Dead letters").click()
        csrf = driver.find_element(By.NAME, "csrf_token").get_attribute("value")
        return {
            "role": driver.find_element(By.ID, "role").text,
            "buttons": len(driver.find_elements(By.ID, "redrive")),
            "post": driver.execute_async_script(POST_WITHOUT_CSRF, key, csrf),
            "dead": driver.find_element(By.ID, "dead").text,
        }

    viewer = ready.model_copy(update={"console_local_role": "viewer"})
    async with console(viewer) as run:
        seen = await asyncio.to_thread(viewer_session, run.sign_in)
    assert seen["role"] == "viewer" and seen["buttons"] == 0
    assert seen["post"][0] == 403 and "operator rights" in seen["post"][1]
    assert "avro: no schema for id 7" in seen["dead"], "the refused POST changed nothing"
