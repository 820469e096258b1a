"""Small helpers shared by the unit tests (the async ones mostly); imported, not fixtures.

- ``ASYNCIO_ONLY``: narrows an ``@pytest.mark.anyio`` test to asyncio and asyncio + uvloop
  (``UVLOOP``: that backend, skipped where uvloop is not installed).
- ``wait_until`` / ``yields``: let other tasks run at checkpoints, no time passing.
- ``Tracker``: coroutines that record how they started and ended, for "no orphans" checks.
- ``unique``: a fresh primitive name, since the set of live primitives is process-wide.
"""

from __future__ import annotations

import importlib.util
import inspect
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
import anyio.lowlevel
import pytest

#: asyncio + uvloop as an anyio backend; skipped where uvloop is not installed (Windows).
UVLOOP = pytest.param(
    ("asyncio", {"use_uvloop": True}),
    id="uvloop",
    marks=pytest.mark.skipif(
        importlib.util.find_spec("uvloop") is None, reason="uvloop is not installed"
    ),
)

ASYNCIO_ONLY = pytest.mark.parametrize(
    "anyio_backend",
    [pytest.param("asyncio", id="asyncio"), UVLOOP],
)


async def wait_until(predicate: Callable[[], bool], what: str = "the condition") -> None:
    """Lets other tasks run (checkpoints, no time passes) until ``predicate()`` holds."""
    for _ in range(5_000):
        if predicate():
            return
        await anyio.lowlevel.checkpoint()
    raise AssertionError(f"never reached: {what}")


async def yields(n: int) -> None:
    for _ in range(n):
        await anyio.lowlevel.checkpoint()


class Tracker:
    """Makes coroutines that record when they start, how they end, and the peak concurrency."""

    def __init__(self) -> None:
        self.started: list[int] = []
        self.ended: dict[int, str] = {}
        self.running = 0
        self.peak = 0
        self.coros: list[Coroutine[Any, Any, Any]] = []

    def make(self, i: int, body: Callable[[int], Coroutine[Any, Any, Any]]) -> Any:
        async def run() -> Any:
            self.started.append(i)
            self.running += 1
            self.peak = max(self.peak, self.running)
            outcome = "error"
            try:
                result = await body(i)
                outcome = "done"
                return result
            except anyio.get_cancelled_exc_class():
                outcome = "cancelled"
                raise
            finally:
                self.running -= 1
                self.ended[i] = outcome

        coro = run()
        self.coros.append(coro)
        return coro

    def assert_no_orphans(self) -> None:
        assert self.running == 0
        assert sorted(self.ended) == sorted(self.started), "a started body never finished"
        states = [inspect.getcoroutinestate(c) for c in self.coros]
        assert states == ["CORO_CLOSED"] * len(self.coros), "a coroutine was left unfinished"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"
