"""Command line: argument parsing only; everything else lives in the parts it calls."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from datetime import datetime
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
    _repair_commands(sub, common)
    status = sub.add_parser(
        "status", parents=[common], help="the shard view from the lease table (and workers)"
    )
    status.add_argument("--json", action="store_true", help="one JSON document")
    status.add_argument(
        "--watch", type=float, nargs="?", const=2.0, metavar="SECONDS", help="refresh like top"
    )
    console = sub.add_parser("console", parents=[common], help="the web console (port 8081)")
    console.add_argument("--port", type=int)
    compact = sub.add_parser(
        "compact", parents=[common], help="rewrite small files of closed Iceberg partitions"
    )
    compact.add_argument("--older-than", default="1h", help="e.g. 90m, 2h, 1d (default 1h)")
    compact.add_argument(
        "--expire-after", default="7d", help="forget snapshots older than this (default 7d)"
    )
    compact.add_argument(
        "--remove-orphans-older-than",
        default="3d",
        help="delete unreferenced data files older than this, at least 2d, or off (default 3d)",
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
    demo.add_argument("--table-format", choices=("hive", "iceberg"), default="hive")
    return parser


def _repair_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    # --crash-after: a test hook (tests/repair): the process SIGKILLs itself after that step.
    redrive = sub.add_parser(
        "redrive", parents=[common], help="land the dead letters that now decode, exactly once"
    )
    redrive.add_argument("--keys", nargs="+", metavar="KEY", help="dead-letter object keys")
    redrive.add_argument("--date", type=_day, help="only dead letters of this day (YYYY-MM-DD)")
    redrive.add_argument(
        "--crash-after", choices=("intent", "upload", "rewrite"), help=argparse.SUPPRESS
    )
    replay = sub.add_parser(
        "replay", parents=[common], help="re-read a time window of the stream into a side prefix"
    )
    replay.add_argument("--from", dest="start", type=_instant, required=True, metavar="T")
    replay.add_argument("--to", dest="end", type=_instant, required=True, metavar="T")
    replay.add_argument("--shards", nargs="+", metavar="SHARD", help="default: every shard")
    replay.add_argument(
        "--into",
        required=True,
        metavar="PREFIX|TABLE",
        help="a key prefix (backfill/) or, with TIDEWAY_TABLE_FORMAT=iceberg, a side table"
        " (namespace.table)",
    )
    replay.add_argument("--crash-after", choices=("intent", "upload"), help=argparse.SUPPRESS)


def _repair(settings: Settings, args: argparse.Namespace) -> int:
    """``redrive`` or ``replay`` until done (its report on stdout) or SIGTERM/SIGINT (130:
    claims are left to expire, and a rerun resumes without landing anything twice)."""
    from service.consume.flush import unless_stopped  # noqa: PLC0415
    from service.repair.redrive import run_redrive  # noqa: PLC0415
    from service.repair.replay import Window, replay  # noqa: PLC0415

    def work() -> Coroutine[Any, Any, Any]:
        if args.command == "redrive":
            return run_redrive(
                settings, keys=args.keys, date=args.date, crash_after=args.crash_after
            )
        window = Window(args.start, args.end, args.into, tuple(args.shards or ()))
        return replay(settings, window, crash_after=args.crash_after)

    report = _run(lambda stop: unless_stopped(work(), stop))
    if report is None:
        print(f"tideway {args.command}: stopped; run it again to resume", file=sys.stderr)
        return 130
    print(json.dumps(dataclasses.asdict(report)))
    return 0


def _day(value: str) -> str:
    try:
        return datetime.strptime(value, "%Y-%m-%d").strftime("%Y-%m-%d")
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date YYYY-MM-DD") from None


def _instant(value: str) -> float:
    """RFC 3339 (``2026-12-01T03:00:00Z``; no zone means UTC) or epoch seconds."""
    from service.repair.replay import parse_instant  # noqa: PLC0415

    try:
        return parse_instant(value)
    except TidewayError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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
    from service.ingest.redaction import ingest_detectors  # noqa: PLC0415
    from service.ingest.workers import supervise, worker_count  # noqa: PLC0415

    ingest_detectors(settings.ingest_redact)  # before any worker starts: one line, exit 2
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


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _announce(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _command(args)
    except BaseExceptionGroup as group:  # a task group's failure: report its first cause
        cause = _first_leaf(group)
        if not isinstance(cause, (TidewayError, BotoCoreError, ClientError)):
            raise
        print(f"tideway {args.command}: {type(cause).__name__}: {cause}", file=sys.stderr)
        return 2 if isinstance(cause, SettingsError) else 1
    except SettingsError as exc:
        print(f"tideway: {exc}", file=sys.stderr)
        return 2
    except (TidewayError, BotoCoreError, ClientError) as exc:
        print(f"tideway {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def _command(args: argparse.Namespace) -> int:
    """Run one subcommand; SettingsError (at load or while wiring) is the caller's to report."""
    if args.command == "demo":
        try:
            from service.demo import run_demo  # noqa: PLC0415 - imports moto (the demo extra)
        except MissingExtraError as exc:
            print(exc, file=sys.stderr)
            return 2
        return int(_run(lambda stop: run_demo(args.config, args.records, stop, args.table_format)))
    settings = Settings.load(args.config, port=getattr(args, "port", None))
    setup_logging(settings.log_level)
    if args.command == "setup":
        from service.resources import setup  # noqa: PLC0415

        print(json.dumps(_run(lambda stop: setup(settings))))
    elif args.command == "compact":
        from service.compaction import (  # noqa: PLC0415
            check_orphan_age,
            parse_duration,
            run_compaction,
        )

        orphans = args.remove_orphans_older_than
        try:
            older_than = parse_duration(args.older_than)
            expire_after = parse_duration(args.expire_after, "--expire-after")
            orphan_age = None
            if orphans != "off":
                option = "--remove-orphans-older-than"
                orphan_age = check_orphan_age(parse_duration(orphans, option))
        except ValueError as exc:
            print(f"tideway compact: {exc}", file=sys.stderr)
            return 2
        print(
            json.dumps(
                _run(lambda stop: run_compaction(settings, older_than, expire_after, orphan_age))
            )
        )
    elif args.command == "serve":
        return _serve(settings)
    elif args.command == "status":
        from service.console.top import status  # noqa: PLC0415

        _run(lambda stop: status(settings, stop, _write, as_json=args.json, watch=args.watch))
    elif args.command == "console":
        from service.console.server import run_console  # noqa: PLC0415

        _run(lambda stop: run_console(settings, stop, _announce))
    elif args.command == "pipelines":
        from service.consume.reload import pipelines_command  # noqa: PLC0415

        print(_run(lambda stop: pipelines_command(settings, args.action, args.file)))
    elif args.command == "consume":
        from service.consume.runner import consume  # noqa: PLC0415

        _run(lambda stop: consume(settings, stop, drain=args.drain))
    elif args.command in ("redrive", "replay"):
        return _repair(settings, args)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
