"""The fault suite's line source: ``tideway serve`` subprocesses fed over HTTP."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from service.settings import Settings
from tests.conftest import Aws
from tests.serve_fleet import ServeProducer

ServeLines = Callable[..., ServeProducer]


@pytest.fixture
def serve_lines(aws: Aws, tmp_path: Path) -> Iterator[ServeLines]:
    """``serve_lines(settings, tag, **options)``: a started ServeProducer, stopped at the end."""
    made: list[ServeProducer] = []

    def make(settings: Settings, tag: str, **options: Any) -> ServeProducer:
        producer = ServeProducer(aws, settings, tmp_path, tag=tag, **options).__enter__()
        made.append(producer)
        return producer

    yield make
    for producer in made:
        producer.__exit__(None, None, None)
