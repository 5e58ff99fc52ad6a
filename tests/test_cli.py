"""The command line as an operator meets it: config placement, one-line failures, exit codes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from service.cli import _parser
from service.local import free_port
from tests.conftest import Aws


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_config_may_come_before_or_after_the_subcommand() -> None:
    assert _parser().parse_args(["--config", "a.toml", "serve"]).config == Path("a.toml")
    assert _parser().parse_args(["serve", "--config", "b.toml"]).config == Path("b.toml")
    assert _parser().parse_args(["consume", "--drain"]).config is None


def test_setup_then_drain_of_an_empty_stream_exit_zero(aws: Aws) -> None:
    env = aws.env(TIDEWAY_STREAM="cli-ok", TIDEWAY_BUCKET="cli-ok-bucket", AWS_REGION="us-east-1")
    assert run(["setup"], env).returncode == 0
    second = run(["setup"], env)
    assert second.returncode == 0 and '"stream": "exists"' in second.stdout
    drained = run(["consume", "--drain"], {**env, "TIDEWAY_FLUSH_MAX_AGE": "1"})
    assert drained.returncode == 0, drained.stderr[-2000:]


def test_drain_of_a_missing_stream_fails_with_one_line_instead_of_retrying_forever(
    aws: Aws,
) -> None:
    env = aws.env(
        TIDEWAY_STREAM="no-such-stream",
        TIDEWAY_BUCKET="cli-bucket",
        TIDEWAY_LEASE_DURATION="1",
        TIDEWAY_LOG_LEVEL="ERROR",
        AWS_REGION="us-east-1",
    )
    proc = run(["consume", "--drain"], env)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("tideway consume: TidewayError: drain gave up after 10 failed rounds")


def test_setup_against_an_unreachable_endpoint_fails_with_one_line(aws: Aws) -> None:
    env = aws.env(
        TIDEWAY_STREAM="s",
        TIDEWAY_BUCKET="bbb",
        AWS_ENDPOINT_URL="http://127.0.0.1:9",
        AWS_REGION="us-east-1",
    )
    proc = run(["setup"], env)
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith("tideway setup: ")


def test_demo_prints_a_report_whose_last_line_is_the_contract_json() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIDEWAY_", "AWS_"))}
    proc = run(["demo", "--records", "600"], env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {
        "sent",
        "landed",
        "lost",
        "duplicated",
        "files",
        "bytes_in",
        "bytes_out",
        "seconds",
    } <= set(report)
    assert (report["sent"], report["landed"], report["lost"], report["duplicated"]) == (
        600,
        600,
        0,
        0,
    )


def test_demo_without_the_demo_extra_fails_with_one_line_naming_it() -> None:
    # moto is the `demo` extra; None in sys.modules is how Python spells "not installed".
    without_moto = (
        "import runpy, sys; sys.modules['moto'] = None; sys.argv = ['tideway', 'demo'];"
        " runpy.run_module('service', run_name='__main__')"
    )
    done = subprocess.run(
        [sys.executable, "-c", without_moto],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr == "tideway demo needs the demo extra: pip install 'tideway[demo]'\n"
    assert done.stdout == ""


@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.parametrize("which", ["TIDEWAY_PORT", "TIDEWAY_GRPC_PORT"])
def test_a_port_another_program_holds_stops_serve_with_one_line_naming_it(
    aws: Aws, which: str, workers: str
) -> None:
    # Another program listens there without SO_REUSEPORT: serve cannot bind it, whether
    # it runs in process (one worker) or supervises workers (which never start).
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        ports = {"TIDEWAY_PORT": str(free_port()), "TIDEWAY_GRPC_PORT": "0", which: port}
        env = aws.env(
            TIDEWAY_STREAM="s",
            TIDEWAY_BUCKET="bbb",
            TIDEWAY_HOST="127.0.0.1",
            TIDEWAY_WORKERS=workers,
            AWS_REGION="us-east-1",
            **ports,
        )
        proc = run(["serve"], env)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert lines[-1].startswith(f"tideway serve: ListenError: cannot listen on 127.0.0.1:{port}")
    assert which in lines[-1]
