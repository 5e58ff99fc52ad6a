"""The embedded AWS API emulator (moto's server) on a loopback port, for demo and tests.

It points the standard AWS variables of this process at itself, so every client built by
``service.aws`` reaches it with no Tideway-specific endpoint setting (DESIGN §1, §8).
"""

from __future__ import annotations

import functools
import inspect
import os
import socket
import threading
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from service.errors import MissingExtraError

try:
    from moto.dynamodb.models import DynamoDBBackend
    from moto.kinesis.models import KinesisBackend
    from moto.server import ThreadedMotoServer
except ModuleNotFoundError as exc:  # moto[server] is the `demo` extra, not a runtime dependency
    raise MissingExtraError(
        "tideway demo needs the demo extra: pip install 'tideway[demo]'"
    ) from exc

LOCAL_ENV = {
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# moto's server answers each request on its own thread, but its backends are not thread
# safe: two concurrent PutRecords to a shard can take the same sequence number (the second
# overwrites the first: an acknowledged record is gone; moto's own comment says "not safe
# for concurrency"), and two conditional UpdateItems on one item can both pass their
# condition (two workers win one lease). Kinesis and DynamoDB are atomic per call, so the
# emulator makes each call to these two backends hold one lock. S3 stays concurrent (each
# call stores or reads one whole object).
_ATOMIC = threading.RLock()


def _atomic(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        with _ATOMIC:
            return method(*args, **kwargs)

    call.__tideway_atomic__ = True  # type: ignore[attr-defined]
    return call


def make_calls_atomic(*backends: type) -> None:
    """Wrap every public method of each moto backend class in the emulator's lock (once)."""
    for cls in backends:
        for name, member in list(vars(cls).items()):
            if name.startswith("_") or not inspect.isfunction(member):
                continue
            if not getattr(member, "__tideway_atomic__", False):
                setattr(cls, name, _atomic(member))


@contextmanager
def moto_server(port: int | None = None) -> Iterator[str]:
    """Run moto on 127.0.0.1 and yield its endpoint URL; restores the environment after."""
    port = port or free_port()
    make_calls_atomic(KinesisBackend, DynamoDBBackend)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in (*LOCAL_ENV, "AWS_ENDPOINT_URL")}
    os.environ.update(LOCAL_ENV)
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    try:
        yield endpoint
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def reset(endpoint: str) -> None:
    """Forget every resource in the emulator (between tests)."""
    req = urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")
    with urllib.request.urlopen(req, timeout=10):
        pass
