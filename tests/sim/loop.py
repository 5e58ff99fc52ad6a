"""A virtual-time asyncio event loop: time stands still while anything is ready and jumps
to the next timer when nothing is, so a schedule of minutes runs in milliseconds and runs
the same way every time.

Determinism needs three more things than a fake clock:
* the selector never blocks (no real I/O happens inside a simulation);
* ``run_in_executor`` (``asyncio.to_thread``) runs the function inline: a thread would finish
  at a real time the virtual clock cannot see;
* the order in which a TaskGroup cancels its children and ``asyncio.wait`` returns its
  futures must not follow object addresses (set order): ``deterministic_asyncio`` swaps in
  insertion-ordered versions while a simulation runs.
"""

from __future__ import annotations

import asyncio
import collections.abc
import contextlib
import selectors
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

_T = TypeVar("_T")


class Deadlock(RuntimeError):
    """Nothing is ready and no timer is set: every task waits for something that never comes."""


class _VirtualSelector(selectors.SelectSelector):
    def __init__(self, loop: VirtualTimeLoop) -> None:
        super().__init__()
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[Any]:
        if timeout is None:
            raise Deadlock("no task is ready and no timer is set")
        self._loop._advance()
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose ``time()`` is virtual seconds since the loop was made."""

    def __init__(self) -> None:
        self._now = 0.0
        super().__init__(_VirtualSelector(self))
        self._clock_resolution = 1e-9

    def time(self) -> float:
        return self._now

    def _advance(self) -> None:
        if self._ready or self._stopping:  # type: ignore[attr-defined]
            return
        scheduled: list[asyncio.TimerHandle] = self._scheduled  # type: ignore[attr-defined]
        if scheduled:
            # Jump exactly to the next timer (no float drift from "now + timeout").
            self._now = max(self._now, scheduled[0].when())

    def run_in_executor(  # type: ignore[override]
        self, executor: Any, func: Callable[..., _T], *args: Any
    ) -> asyncio.Future[_T]:
        fut: asyncio.Future[_T] = self.create_future()
        try:
            fut.set_result(func(*args))
        except BaseException as exc:  # the caller's await sees it, as with a thread
            fut.set_exception(exc)
        return fut


class _OrderedSet(collections.abc.MutableSet[Any]):
    """A set that iterates in insertion order (TaskGroup's children, asyncio.wait's answer)."""

    def __init__(self, items: Iterable[Any] = ()) -> None:
        self._items: dict[Any, None] = dict.fromkeys(items)

    def __contains__(self, item: object) -> bool:
        return item in self._items

    def __iter__(self) -> Iterator[Any]:
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def add(self, value: Any) -> None:
        self._items[value] = None

    def discard(self, value: Any) -> None:
        self._items.pop(value, None)


class _OrderedTaskGroup(asyncio.TaskGroup):
    def __init__(self) -> None:
        super().__init__()
        self._tasks: Any = _OrderedSet()


_real_wait = asyncio.wait


async def _ordered_wait(fs: Iterable[Any], *args: Any, **kwargs: Any) -> tuple[Any, Any]:
    order = list(fs)
    done, pending = await _real_wait(order, *args, **kwargs)
    return (
        _OrderedSet(f for f in order if f in done),
        _OrderedSet(f for f in order if f in pending),
    )


@contextlib.contextmanager
def deterministic_asyncio() -> Iterator[None]:
    """Swap in insertion-ordered TaskGroup and asyncio.wait for the duration."""
    saved = asyncio.TaskGroup, asyncio.wait
    asyncio.TaskGroup = _OrderedTaskGroup  # type: ignore[misc]
    asyncio.wait = _ordered_wait
    try:
        yield
    finally:
        asyncio.TaskGroup, asyncio.wait = saved  # type: ignore[misc]
