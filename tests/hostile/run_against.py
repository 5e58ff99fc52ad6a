"""Run the hostile corpus against any checkout of Tideway, e.g. the code before a fix.

    git archive <commit> service | tar -x -C /tmp/old && cp service/_scan*.so /tmp/old/service/
    .venv/bin/python -m tests.hostile.run_against /tmp/old "16 MiB ES" "multi-member"

Starts moto, then that checkout's ``tideway serve`` (under ``ulimit -v`` 6 GB, so an old
version cannot take the machine down), runs the attacks whose names contain one of the
arguments (all when none) and prints one line per attack; JSON in /tmp/tideway-hostile-run.json.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from service.local import moto_server
from service.resources import setup
from service.settings import Settings
from tests.hostile.corpus import findings, heaviest, variants
from tests.hostile.harness import environment_for, run_corpus, serve_subprocess, write_report


async def main(source: str, names: list[str]) -> None:
    with moto_server() as endpoint:
        os.environ["AWS_ENDPOINT_URL"] = endpoint
        settings = Settings.load(None, stream="hostile", bucket="hostile-run", shard_count=2)
        await setup(settings)
        env = environment_for(dict(os.environ), settings.stream, settings.bucket)
        env["PYTHONPATH"] = source
        command = [
            "sh",
            "-c",
            f"ulimit -v 6000000; cd {source} && exec {sys.executable} -m service serve",
        ]
        attacks = [
            a
            for a in [*findings(), *variants(), *heaviest()]
            if not names or any(n in a.name for n in names)
        ]
        async with serve_subprocess(env, command) as (url, pid):
            outcomes = await run_corpus(url, pid, attacks)
        write_report(outcomes, Path("/tmp/tideway-hostile-run.json"))
        for o in outcomes:
            sys.stdout.write(
                f"{o.status} rss {o.rss_before_mb} -> {o.rss_peak_mb} MB, /healthz p50 "
                f"{o.healthz_p50_ms} p99 {o.healthz_p99_ms} max {o.healthz_worst_ms} ms "
                f"({o.healthz_answers} answers in flight, all 200: {o.healthz_all_ok}), "
                f"answer {o.answer_bytes} B: {o.attack}\n"
            )


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2:]))
