"""Fixtures for the unit tests: the event loops every async test runs on, and a clean environment.

- ``anyio_backend``: each ``@pytest.mark.anyio`` test runs on asyncio, asyncio + uvloop and trio.
- ``virtual``: a runner whose clock is virtual and jumps to the next timer whenever every task
  is blocked (trio's ``MockClock(autojump_threshold=0)``, and the same for asyncio), so tests
  about waits of seconds or minutes run in no real time and assert on exact virtual times.
- ``no_admission_variables``: no ``ADMISSION_*`` variable in the environment, for tests of
  configuration loading (request it with ``pytest.mark.usefixtures``).
"""

from __future__ import annotations

import os
from typing import Any, TypeVar

import pytest
from support import UVLOOP, VirtualRunner

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
