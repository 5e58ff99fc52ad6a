"""``tideway console`` (I/O): clients, the door, the listener; the sign-in URL on start."""

from __future__ import annotations

import asyncio
import gc
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import aiohttp
from aiohttp import web

from service.aws import aws_clients, region
from service.console.app import build_console
from service.console.cloudwatch import MetricReader
from service.console.guard import Guard
from service.console.jobs import replay_jobs
from service.console.oidc import AlbKeys
from service.console.page import Console, templates
from service.console.sampler import fleet_sampler
from service.console.session import LoginToken, Sessions
from service.consume.context import decoder_config
from service.settings import Settings

log = logging.getLogger(__name__)
DEFAULT_PORT = 8081


@asynccontextmanager
async def console_app(settings: Settings) -> AsyncIterator[Console]:
    """The console's shared state with its clients open; closed on exit (replays still
    running are cancelled then: a rerun resumes them)."""
    secret = (settings.console_secret or "").encode() or secrets.token_bytes(32)
    async with (
        aws_clients("dynamodb", "s3", "cloudwatch") as aws,
        aiohttp.ClientSession() as http,
        replay_jobs(settings) as replays,
        fleet_sampler(settings, aws.dynamodb, http) as history,
    ):
        oidc = settings.console_auth == "oidc"
        yield Console(
            settings=settings,
            dynamodb=aws.dynamodb,
            s3=aws.s3,
            http=http,
            guard=Guard(
                settings,
                Sessions(secret),
                AlbKeys(http, settings.console_oidc_key_url, region()) if oidc else None,
            ),
            login=None if oidc else LoginToken(secrets.token_urlsafe(32)),
            decoders=decoder_config(settings),
            templates=templates(),
            replays=replays,
            history=history,
            metrics=MetricReader(aws.cloudwatch, settings.stream),
        )


def sign_in_url(host: str, port: int, token: str, base: str = "") -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    return f"http://{shown}:{port}{base}/login?token={token}"


async def run_console(
    settings: Settings,
    stop: asyncio.Event,
    announce: Callable[[str], None],
    bound: asyncio.Future[int] | None = None,
    *,
    freeze_heap: bool = True,
) -> None:
    """Serve the console until ``stop``; ``announce`` gets the sign-in line (token mode).
    ``freeze_heap``: the process is the console's (not a test run's, whose later garbage
    and ``gc.get_referrers`` a freeze would affect)."""
    async with console_app(settings) as console:
        runner = web.AppRunner(build_console(console), access_log=None)
        await runner.setup()
        try:
            port = DEFAULT_PORT if settings.port is None else settings.port
            site = web.TCPSite(runner, settings.host, port)
            await site.start()
            port = runner.addresses[0][1] if runner.addresses else port
            # The imports leave ~130,000 objects the cyclic collector would walk on every
            # full collection (~70 ms of CPU, one page load in ~20: benchmarks/console.py);
            # they live as long as the process, so they are moved out of its reach (after a
            # collection: no garbage of the start is kept).
            if freeze_heap:
                gc.collect()
                gc.freeze()
            if bound is not None:
                bound.set_result(port)
            if console.login is not None and console.login.pending:
                announce(
                    "tideway console: sign in (once) at "
                    + sign_in_url(
                        settings.host, port, console.login.pending, settings.console_base_path
                    )
                )
            else:
                announce(f"tideway console: listening on port {port} behind the ALB (OIDC)")
            log.info("console: listening on %s:%d (%s)", settings.host, port, settings.console_auth)
            await stop.wait()
        finally:
            await runner.cleanup()
