"""Fixtures for the unit tests: the event loops every async test runs on, and a clean environment.

- ``anyio_backend``: each ``@pytest.mark.anyio`` test runs on asyncio, asyncio + uvloop and trio.
- ``virtual``: a runner whose clock is virtual and jumps to the next timer whenever every task
  is blocked (trio's ``MockClock(autojump_threshold=0)``, and the same for asyncio), so tests
  about waits of seconds or minutes run in no real time and assert on exact virtual times.
- ``no_admission_variables``: no ``ADMISSION_*`` variable in the environment, for tests of
  configuration loading (request it with ``pytest.mark.usefixtures``).
- ``virtual_busy_time`` (every test): on a `support.VirtualTimeLoop`, the network stores'
  deadlines read the loop's virtual busy time, not the thread's real CPU time.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, TypeVar

import pytest
from support import UVLOOP, VirtualRunner, VirtualTimeLoop

from admission.stores import remote

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


@pytest.fixture(autouse=True)
def virtual_busy_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """A deadline discounts its loop thread's busy time (`remote.BUSY_LOOP_GRACE`): against
    a virtual clock, the test's real CPU time would move it on (each firing by the CPU the
    last took, up to the grace), so a virtual loop's own busy time is read instead."""

    real_busy_time = remote._busy_time

    def busy_time() -> float:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop running (a test calling it directly): the real one
            return real_busy_time()
        return loop.busy if isinstance(loop, VirtualTimeLoop) else real_busy_time()

    monkeypatch.setattr(remote, "_busy_time", busy_time)
