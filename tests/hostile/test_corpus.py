"""The hostile corpus against a real ``tideway serve`` (issue 15): every request is answered
as specified, no request within the limits raises RSS past 2x its decompressed size + 64 MB,
and /healthz keeps answering (target 100 ms p99; asserted < 1 s on a shared 2-core box)."""

from __future__ import annotations

import os
from pathlib import Path

from service.resources import setup
from service.settings import Settings
from tests.conftest import Aws
from tests.hostile.corpus import corpus, heaviest
from tests.hostile.harness import (
    Outcome,
    environment_for,
    run_corpus,
    serve_subprocess,
    write_report,
)

REPORT = Path(os.environ.get("TIDEWAY_HOSTILE_REPORT", "/tmp/tideway-hostile.json"))


def _assert_the_contract(outcomes: list[Outcome]) -> None:
    """Answered as specified, RSS within 2x decompressed + 64 MB, /healthz under 1 s (the
    target is 100 ms; the measured figures are in the report), answers under 16 MiB."""
    wrong = [(o.attack, o.status) for o in outcomes if not o.allowed]
    assert not wrong, wrong
    heavy = [(o.attack, o.rss_growth_mb, o.bound_mb) for o in outcomes if not o.within_bound]
    assert not heavy, heavy
    slow = [(o.attack, o.healthz_worst_ms) for o in outcomes if o.healthz_worst_ms >= 1000]
    assert not slow, slow
    assert all(o.answer_bytes < 16 * 1024 * 1024 for o in outcomes)


async def test_hostile_corpus_against_a_real_serve(aws: Aws, settings: Settings) -> None:
    await setup(settings)
    env = environment_for(aws.env(), settings.stream, settings.bucket)
    attacks = corpus()
    async with serve_subprocess(env) as (url, pid):
        outcomes = await run_corpus(url, pid, attacks)
    write_report(outcomes, REPORT)
    _assert_the_contract(outcomes)


async def test_the_heaviest_allowed_request_of_each_type_stays_within_the_bound(
    aws: Aws, settings: Settings
) -> None:
    await setup(settings)
    env = environment_for(aws.env(), settings.stream, settings.bucket)
    outcomes: list[Outcome] = []
    for attack in heaviest():  # each in a fresh process: RSS kept by earlier ones hides nothing
        async with serve_subprocess(env) as (url, pid):
            outcomes.extend(await run_corpus(url, pid, [attack]))
    write_report(outcomes, REPORT.with_name(REPORT.stem + "-heaviest.json"))
    _assert_the_contract(outcomes)
