"""Small helpers shared by the unit tests (the async ones mostly); imported, not fixtures.

- ``ASYNCIO_ONLY``: narrows an ``@pytest.mark.anyio`` test to asyncio and asyncio + uvloop
  (``UVLOOP``: that backend, skipped where uvloop is not installed).
- ``wait_until`` / ``yields``: let other tasks run at checkpoints, no time passing.
- ``Tracker``: coroutines that record how they started and ended, for "no orphans" checks.
- ``unique``: a fresh primitive name, since the set of live primitives is process-wide.
- ``VirtualRunner``: runs an async function on asyncio or trio under a virtual, autojumping
  clock (the ``virtual`` fixture's runner; importable, unlike conftest.py, from test helpers).
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import selectors
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import anyio
import anyio.lowlevel
import pytest

T = TypeVar("T")

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


class ManualTimeLoop(asyncio.SelectorEventLoop):
    """An asyncio loop whose clock (``now``, seconds) moves only when the test says so."""

    def __init__(self, now: float = 0.0) -> None:
        super().__init__()
        self.now = now

    def time(self) -> float:
        return self.now

    def settle(self, turns: int = 5) -> None:
        """Runs the loop's ready callbacks for a few turns (no time passes)."""
        for _ in range(turns):
            self.run_until_complete(asyncio.sleep(0))

    def close_cancelling(self) -> None:
        """Cancels every task still on the loop (waiters, heartbeats, give-backs), lets them
        end, and closes it."""
        for task in asyncio.all_tasks(self):
            task.cancel()
        self.settle()
        self.close()


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An asyncio loop on virtual time: whenever it would block waiting for a timer, its clock
    jumps to that timer instead (what trio's ``MockClock(autojump_threshold=0)`` does).

    I/O still works (a zero-timeout poll runs first), so wake-ups from other threads arrive;
    only the waiting for timers is skipped.

    Its thread's busy time is virtual too (``busy``, advanced by `spend`): the network
    stores' deadlines discount it (`admission.stores.remote.BUSY_LOOP_GRACE`), and the
    real CPU time of a test against this clock would move them (the ``virtual_busy_time``
    fixture makes them read this one).
    """

    def __init__(self) -> None:
        super().__init__(selectors.DefaultSelector())
        self._virtual_now = 0.0
        self.busy = 0.0
        real_select = self._selector.select  # type: ignore[attr-defined]

        def select(timeout: float | None = None) -> list[Any]:
            if timeout is None or timeout <= 0:
                return real_select(timeout)
            events = real_select(0)
            if not events:
                self._virtual_now += timeout
            return events

        self._selector.select = select  # type: ignore[attr-defined]

    def time(self) -> float:
        return self._virtual_now

    def spend(self, seconds: float) -> None:
        """The thread busy for ``seconds`` (a turn of the loop that long): its clock and its
        busy time move on together."""
        self._virtual_now += seconds
        self.busy += seconds


class VirtualRunner:
    """Runs an async function on ``backend`` under a virtual, autojumping clock."""

    def __init__(self, backend: str) -> None:
        self.backend = backend

    def run(self, fn: Callable[[], Awaitable[T]]) -> T:
        if self.backend == "trio":
            import trio
            import trio.testing

            return trio.run(fn, clock=trio.testing.MockClock(autojump_threshold=0))

        async def main() -> T:
            return await fn()

        loop = VirtualTimeLoop()  # asyncio.Runner(loop_factory=...) is 3.11+
        try:
            return loop.run_until_complete(main())
        finally:  # what asyncio.Runner.close does
            leftover = asyncio.all_tasks(loop)
            for task in leftover:
                task.cancel()
            if leftover:
                loop.run_until_complete(asyncio.gather(*leftover, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    def __repr__(self) -> str:
        return f"VirtualRunner({self.backend!r})"
