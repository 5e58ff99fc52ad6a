"""What every console page shares (I/O): the Console's clients and parts, the templates and
the render of a page for the signed-in principal."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import jinja2
from aiohttp import web

from service.console.cloudwatch import MetricReader
from service.console.guard import PRINCIPAL, Guard
from service.console.history import FleetHistory
from service.console.jobs import ReplayJobs
from service.console.session import LoginToken
from service.console.shards import format_lag
from service.console.sources import DeadLetters
from service.decode import DecoderConfig
from service.settings import Settings


@dataclass
class Console:
    """What the handlers share: settings, clients, the door and the templates."""

    settings: Settings
    dynamodb: Any
    s3: Any
    http: aiohttp.ClientSession
    guard: Guard
    login: LoginToken | None
    decoders: DecoderConfig
    templates: jinja2.Environment
    replays: ReplayJobs
    history: FleetHistory  # the lease table sampled over time (sampler.py)
    metrics: MetricReader  # the fleet's totals from CloudWatch

    @property
    def dead(self) -> DeadLetters:
        return DeadLetters(self.s3, self.settings.bucket, self.settings.prefix)


CONSOLE: web.AppKey[Console] = web.AppKey("console", Console)


def clock(ms: int) -> str:
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("service.console", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.globals.update(lag=format_lag, clock=clock)
    return env


def render(request: web.Request, name: str, status: int = 200, **values: Any) -> web.Response:
    console = request.app[CONSOLE]
    principal = request[PRINCIPAL]
    html = console.templates.get_template(name).render(
        principal=principal,
        csrf=console.guard.sessions.csrf_token(principal),
        base=console.settings.console_base_path,
        **values,
    )
    return web.Response(text=html, status=status, content_type="text/html")
