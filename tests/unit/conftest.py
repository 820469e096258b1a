"""Fixtures for the unit tests: the event loops every async test runs on, and a clean environment.

- ``anyio_backend``: each ``@pytest.mark.anyio`` test runs on asyncio, asyncio + uvloop and trio.
- ``virtual``: a runner whose clock is virtual and jumps to the next timer whenever every task
  is blocked (trio's ``MockClock(autojump_threshold=0)``, and the same for asyncio), so tests
  about waits of seconds or minutes run in no real time and assert on exact virtual times.
- ``no_admission_variables``: no ``ADMISSION_*`` variable in the environment, for tests of
  configuration loading (request it with ``pytest.mark.usefixtures``).
"""

from __future__ import annotations

import asyncio
import os
import selectors
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from support import UVLOOP

T = TypeVar("T")


@pytest.fixture(
    params=[
        pytest.param("asyncio", id="asyncio"),
        UVLOOP,
        pytest.param("trio", id="trio"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    return request.param


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An asyncio loop on virtual time: whenever it would block waiting for a timer, its clock
    jumps to that timer instead (what trio's ``MockClock(autojump_threshold=0)`` does).

    I/O still works (a zero-timeout poll runs first), so wake-ups from other threads arrive;
    only the waiting for timers is skipped.
    """

    def __init__(self) -> None:
        super().__init__(selectors.DefaultSelector())
        self._virtual_now = 0.0
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


@pytest.fixture(params=["asyncio", "trio"])
def virtual(request: pytest.FixtureRequest) -> VirtualRunner:
    """A virtual-time runner on asyncio and on trio; read its time with ``anyio.current_time()``."""
    return VirtualRunner(request.param)


@pytest.fixture
def virtual_asyncio() -> VirtualRunner:
    """The asyncio half of ``virtual``, for APIs that are asyncio-only (``adm.map``)."""
    return VirtualRunner("asyncio")


@pytest.fixture
def no_admission_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Removes every ``ADMISSION_*`` variable from the environment for the test."""
    for name in list(os.environ):
        if name.startswith("ADMISSION_"):
            monkeypatch.delenv(name)
