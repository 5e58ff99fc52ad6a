"""The hostile corpus against a real ``tideway serve`` (issue 15): every request is answered
as specified, no request within the limits raises RSS past 2x its decompressed size + 64 MB,
and /healthz keeps answering: always 200, and several times while the heaviest request is
parsed. Its latency (p50, p99, max) is measured into the report, never asserted: a timer
assertion flakes on a loaded machine (docs/security.md has the figures)."""

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


# A loop blocked for the whole parse answers /healthz at most once (the probe asked before
# the block); one that keeps serving answers every ~20 ms.
ANSWERS_DURING_A_HEAVY_REQUEST = 3


def _assert_the_contract(outcomes: list[Outcome]) -> None:
    """Answered as specified, RSS within 2x decompressed + 64 MB, /healthz always 200,
    answers under 16 MiB."""
    wrong = [(o.attack, o.status) for o in outcomes if not o.allowed]
    assert not wrong, wrong
    heavy = [(o.attack, o.rss_growth_mb, o.bound_mb) for o in outcomes if not o.within_bound]
    assert not heavy, heavy
    unhealthy = [o.attack for o in outcomes if not o.healthz_all_ok]
    assert not unhealthy, unhealthy
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
    blocked = [
        (o.attack, o.healthz_answers)
        for o in outcomes
        if o.status == 200 and o.healthz_answers < ANSWERS_DURING_A_HEAVY_REQUEST
    ]
    assert not blocked, blocked  # the loop kept serving while each accepted one was parsed
