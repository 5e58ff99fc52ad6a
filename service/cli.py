"""Command line: argument parsing only; everything else lives in the parts it calls."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from service.errors import MissingExtraError, SettingsError, TidewayError
from service.settings import Settings
from service.telemetry.logs import setup_logging


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tideway", description=__doc__)
    config_help = "TOML file of settings (keys: TIDEWAY_* in lower case)"
    parser.add_argument("--config", type=Path, help=config_help)
    # Also accepted after the subcommand; SUPPRESS keeps a value given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, default=argparse.SUPPRESS, help=config_help)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", parents=[common], help="HTTP ingest tier -> Kinesis")
    serve.add_argument("--port", type=int)
    consume = sub.add_parser("consume", parents=[common], help="Kinesis -> Parquet in S3")
    consume.add_argument("--port", type=int)
    consume.add_argument(
        "--drain", action="store_true", help="read every shard to its tip, flush, exit"
    )
    sub.add_parser(
        "setup", parents=[common], help="create stream, bucket, lease table (idempotent)"
    )
    pipes = sub.add_parser(
        "pipelines", parents=[common], help="store (put FILE) or show the reloaded pipelines"
    )
    pipes.add_argument("action", choices=("put", "show"))
    pipes.add_argument("file", type=Path, nargs="?")
    demo = sub.add_parser(
        "demo", parents=[common], help="the whole path on this machine against moto"
    )
    demo.add_argument("--records", type=int, default=20_000)
    return parser


def _run(main: Callable[[asyncio.Event], Awaitable[Any]]) -> Any:
    """Run ``main(stop)`` on uvloop when available; SIGTERM and SIGINT set ``stop``."""

    async def wrapper() -> Any:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        return await main(stop)

    try:
        import uvloop  # noqa: PLC0415 - optional accelerator
    except ImportError:
        return asyncio.run(wrapper())
    return uvloop.run(wrapper())


def _serve(settings: Settings) -> int:
    """One server in this process, or a supervisor of one worker process per CPU."""
    from service.ingest.workers import supervise, worker_count  # noqa: PLC0415

    if worker_count(settings) == 1:
        from service.ingest.server import serve  # noqa: PLC0415

        _run(lambda stop: serve(settings, stop))
        return 0
    return int(_run(lambda stop: supervise(settings, stop, _serve_worker)))


def _serve_worker(settings: Settings, threads: int, metrics_dir: str) -> None:
    """One serve worker process (the supervisor's spawn target): drains on SIGTERM."""
    from service.ingest.server import serve  # noqa: PLC0415

    setup_logging(settings.log_level)
    _run(lambda stop: serve(settings, stop, threads=threads, metrics_dir=metrics_dir))


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _command(args)
    except SettingsError as exc:
        print(f"tideway: {exc}", file=sys.stderr)
        return 2
    except (TidewayError, BotoCoreError, ClientError) as exc:
        print(f"tideway {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


def _command(args: argparse.Namespace) -> int:
    """Run one subcommand; SettingsError (at load or while wiring) is the caller's to report."""
    if args.command == "demo":
        try:
            from service.demo import run_demo  # noqa: PLC0415 - imports moto (the demo extra)
        except MissingExtraError as exc:
            print(exc, file=sys.stderr)
            return 2
        return int(_run(lambda stop: run_demo(args.config, args.records, stop)))
    settings = Settings.load(args.config, port=getattr(args, "port", None))
    setup_logging(settings.log_level)
    if args.command == "setup":
        from service.resources import setup  # noqa: PLC0415

        print(json.dumps(_run(lambda stop: setup(settings))))
    elif args.command == "serve":
        return _serve(settings)
    elif args.command == "pipelines":
        from service.consume.reload import pipelines_command  # noqa: PLC0415

        print(_run(lambda stop: pipelines_command(settings, args.action, args.file)))
    elif args.command == "consume":
        from service.consume.runner import consume  # noqa: PLC0415

        _run(lambda stop: consume(settings, stop, drain=args.drain))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
