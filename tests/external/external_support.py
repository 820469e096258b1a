"""Shared by the ported upstream suites in this directory; imported, not fixtures.

- ``UVLOOP``: asyncio + uvloop as an anyio backend (skipped where uvloop is not installed).
- ``only(...)``: the ``raises=`` of an xfail whose error arrives inside a task group's
  exception group.
- ``held``: a semaphore of ``limit`` permits, ``limit - value`` of them held: how the ports
  spell an upstream semaphore whose value starts below its bound (``asyncio.Semaphore(0)``
  that the test then releases ``k`` times is ``held(k)``), since admission's limit is at
  least 1 and its value never exceeds its limit.
"""

from __future__ import annotations

import importlib.util
import sys

import pytest

import admission as adm

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

UVLOOP = pytest.param(
    ("asyncio", {"use_uvloop": True}),
    id="uvloop",
    marks=pytest.mark.skipif(
        importlib.util.find_spec("uvloop") is None, reason="uvloop is not installed"
    ),
)


class _Only(type):
    """``isinstance(e, Only[T])``: ``e`` is a ``T``, or an exception group (a task group's)
    whose every leaf is a ``T``; what an ``xfail(raises=...)`` accepts when the expected
    error may be raised in a child task."""

    kinds: tuple[type[BaseException], ...]

    def __instancecheck__(cls, exc: object) -> bool:
        if isinstance(exc, BaseExceptionGroup):
            return all(isinstance(e, cls) for e in exc.exceptions)
        return isinstance(exc, cls.kinds)


def only(*kinds: type[BaseException]) -> type:
    """The ``raises=`` for an xfail whose error may arrive wrapped in exception groups."""
    return _Only("only", (), {"kinds": kinds})


def held(limit: int, value: int = 0) -> adm.Semaphore:
    """``adm.Semaphore(limit)`` with ``limit - value`` permits taken: ``available == value``."""
    sem = adm.Semaphore(limit)
    if limit - value:
        assert sem.try_acquire(limit - value)
    return sem
