"""A serve worker target that dies as it starts (a module of its own, so that each spawned
worker imports next to nothing)."""

from __future__ import annotations

import sys
from typing import Any


def die_at_start(*_: Any) -> None:
    sys.exit(3)
