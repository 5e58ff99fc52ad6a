"""The embedded AWS API emulator (moto's server) on a loopback port, for demo and tests.

It points the standard AWS variables of this process at itself, so every client built by
``service.aws`` reaches it with no Tideway-specific endpoint setting (DESIGN §1, §8).
"""

from __future__ import annotations

import os
import socket
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

from service.errors import MissingExtraError

try:
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


@contextmanager
def moto_server(port: int | None = None) -> Iterator[str]:
    """Run moto on 127.0.0.1 and yield its endpoint URL; restores the environment after."""
    port = port or free_port()
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
