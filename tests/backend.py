"""The AWS backend for tests: LocalStack via testcontainers where a Docker engine answers,
moto's server otherwise (AWS_BACKEND=auto|moto|localstack, DESIGN §8)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from service.local import LOCAL_ENV, moto_server, reset


def docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=2).ping()
    except Exception:
        return False
    return True


@contextlib.contextmanager
def backend() -> Iterator[tuple[str, str]]:
    """Yield (kind, endpoint); the standard AWS variables of this process point at it."""
    choice = os.environ.get("AWS_BACKEND", "auto")
    if choice not in ("auto", "moto", "localstack"):
        raise ValueError(f"AWS_BACKEND must be auto, moto or localstack, not {choice!r}")
    if choice == "localstack" or (choice == "auto" and docker_answers()):
        from testcontainers.localstack import LocalStackContainer

        with LocalStackContainer(image="localstack/localstack:3") as ls:
            endpoint = ls.get_url()
            os.environ.update(LOCAL_ENV)
            os.environ["AWS_ENDPOINT_URL"] = endpoint
            yield "localstack", endpoint
        return
    with moto_server() as endpoint:
        yield "moto", endpoint


def reset_backend(kind: str, endpoint: str) -> None:
    if kind == "moto":
        reset(endpoint)
