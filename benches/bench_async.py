"""Async hot paths (issue 3), peers in the same run.

- ``async with`` on a free limiter: admission vs asyncio.Semaphore, aiolimiter, anyio.
- 1,000 tasks through a limit of 10, each ``await asyncio.sleep(0)``: the per-task overhead
  over the same 1,000 tasks with no limit; and the same with a 30 s acquisition timeout
  (``acquire(timeout=30)`` vs the usual ``asyncio.wait_for(sem.acquire(), 30)`` and
  ``asyncio.timeout(30)``).
- ``gather`` of 10,000 trivial coroutines with at most 10 at once: admission.gather vs
  aiometer.run_all vs the usual hand-written ``asyncio.Semaphore`` + ``asyncio.gather``.

Each round runs inside one ``loop.run_until_complete`` call; with 10,000 operations per round
the loop's per-round cost (tens of microseconds) adds only a few ns per operation, the same
for every implementation.
"""

from __future__ import annotations

import asyncio
import functools
import sys
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

import aiolimiter
import aiometer
import anyio
import pytest

import admission as adm

UNCONTENDED_CALLS = 10_000
TASKS = 1_000
CONTENDED_ROUNDS = 100
GATHER_ITEMS = 10_000


@pytest.fixture(scope="module")
def loop() -> Any:
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


class Row(NamedTuple):
    """One implementation in a group: its labels (see conftest.py) and what it is made from."""

    key: str
    impl: str
    role: str
    baseline: bool
    #: Makes the limiter (``async with`` and tasks groups), or is the round itself (gather).
    make: Callable[[], Any]


def parametrize_rows(
    table: list[tuple[str, str, str, bool, Callable[[], Any]]],
) -> pytest.MarkDecorator:
    """Runs the benchmark once per row of ``table``, as ``row``, with the row's key as its id."""
    return pytest.mark.parametrize("row", [Row(*r) for r in table], ids=[r[0] for r in table])


def run_rounds(
    benchmark: Any,
    loop: asyncio.AbstractEventLoop,
    make_round: Callable[[], Awaitable[None]],
    row: Row,
    *,
    calls: int,
    rounds: int = 20,
) -> None:
    benchmark.extra_info.update(
        key=row.key, impl=row.impl, role=row.role, baseline=row.baseline, calls=calls
    )
    benchmark.pedantic(
        lambda: loop.run_until_complete(make_round()), rounds=rounds, iterations=1, warmup_rounds=2
    )


# --- async with, uncontended ------------------------------------------------------------------


def _async_with_round(limiter: Any) -> Callable[[], Awaitable[None]]:
    async def one_round() -> None:
        for _ in range(UNCONTENDED_CALLS):
            async with limiter:
                pass

    return one_round


UNCONTENDED = [
    (
        "admission.Semaphore",
        "admission Semaphore(10)",
        "admission",
        True,
        lambda: adm.Semaphore(10),
    ),
    (
        "admission.TokenBucket",
        "admission TokenBucket",
        "admission",
        False,
        lambda: adm.TokenBucket(rate=1e9, burst=10**9),
    ),
    ("asyncio.Semaphore", "asyncio.Semaphore(10)", "peer", False, lambda: asyncio.Semaphore(10)),
    (
        "aiolimiter",
        "aiolimiter.AsyncLimiter",
        "peer",
        False,
        lambda: aiolimiter.AsyncLimiter(1e12, 1.0),
    ),
    (
        "anyio.CapacityLimiter",
        "anyio.CapacityLimiter(10)",
        "peer",
        False,
        lambda: anyio.CapacityLimiter(10),
    ),
]


@pytest.mark.benchmark(group="async with, uncontended")
@parametrize_rows(UNCONTENDED)
def test_async_with_uncontended(benchmark: Any, loop: Any, row: Row) -> None:
    limiter = loop.run_until_complete(_make_in_loop(row.make))
    run_rounds(benchmark, loop, _async_with_round(limiter), row, calls=UNCONTENDED_CALLS)


async def _make_in_loop(make: Callable[[], Any]) -> Any:
    return make()  # anyio's limiter binds to the running loop's backend


# --- 1,000 tasks through a limit of 10 --------------------------------------------------------


def _tasks_round(limiter: Any | None) -> Callable[[], Awaitable[None]]:
    async def task() -> None:
        if limiter is None:
            await asyncio.sleep(0)
            return
        async with limiter:
            await asyncio.sleep(0)

    async def one_round() -> None:
        await asyncio.gather(*(task() for _ in range(TASKS)))

    return one_round


CONTENDED = [
    ("no limit", "no limit (floor)", "floor", False, lambda: None),
    (
        "admission.Semaphore",
        "admission Semaphore(10)",
        "admission",
        True,
        lambda: adm.Semaphore(10),
    ),
    ("asyncio.Semaphore", "asyncio.Semaphore(10)", "peer", False, lambda: asyncio.Semaphore(10)),
    (
        "anyio.CapacityLimiter",
        "anyio.CapacityLimiter(10)",
        "peer",
        False,
        lambda: anyio.CapacityLimiter(10),
    ),
]


@pytest.mark.benchmark(group="1,000 tasks through a limit of 10, sleep(0) body")
@parametrize_rows(CONTENDED)
def test_tasks_through_limit(benchmark: Any, loop: Any, row: Row) -> None:
    limiter = loop.run_until_complete(_make_in_loop(row.make))
    # A round is only ~10 ms: 100 of them span a second or two, so that a burst of noise
    # from other tenants of the host spoils a few rounds of a row rather than its median.
    run_rounds(benchmark, loop, _tasks_round(limiter), row, calls=TASKS, rounds=CONTENDED_ROUNDS)
    if isinstance(limiter, adm.Semaphore):
        assert limiter.stats().high_water == 10  # the bound really was reached, and held


# --- the same, with an acquisition timeout --------------------------------------------------------

ACQUIRE_TIMEOUT = 30.0


def _timed_round(acquire: Callable[[], Awaitable[Any]], release: Callable[[], None]) -> Any:
    async def task() -> None:
        await acquire()
        try:
            await asyncio.sleep(0)
        finally:
            release()

    async def one_round() -> None:
        await asyncio.gather(*(task() for _ in range(TASKS)))

    return one_round


def _timed_admission() -> Any:
    s = adm.Semaphore(10)
    return _timed_round(lambda: s.acquire(timeout=ACQUIRE_TIMEOUT), s.release)


def _timed_wait_for() -> Any:
    s = asyncio.Semaphore(10)
    return _timed_round(lambda: asyncio.wait_for(s.acquire(), ACQUIRE_TIMEOUT), s.release)


def _timed_timeout_cm() -> Any:
    s = asyncio.Semaphore(10)

    async def acquire() -> None:
        async with asyncio.timeout(ACQUIRE_TIMEOUT):
            await s.acquire()

    return _timed_round(acquire, s.release)


TIMED = [
    ("admission.Semaphore", "admission acquire(timeout=30)", "admission", True, _timed_admission),
    (
        "asyncio.wait_for",
        "asyncio.Semaphore + wait_for(acquire(), 30)",
        "peer",
        False,
        _timed_wait_for,
    ),
]
if sys.version_info >= (3, 11):  # asyncio.timeout is 3.11+
    TIMED.append(
        (
            "asyncio.timeout",
            "asyncio.Semaphore + async with timeout(30)",
            "peer",
            False,
            _timed_timeout_cm,
        )
    )


@pytest.mark.benchmark(group="1,000 tasks through a limit of 10, 30 s acquire timeout")
@parametrize_rows(TIMED)
def test_tasks_through_limit_with_timeout(benchmark: Any, loop: Any, row: Row) -> None:
    one_round = loop.run_until_complete(_make_in_loop(row.make))
    run_rounds(benchmark, loop, one_round, row, calls=TASKS, rounds=CONTENDED_ROUNDS)


# --- bounded gather -----------------------------------------------------------------------------


async def _trivial(i: int) -> int:
    return i


async def _gather_admission() -> None:
    out = await adm.gather(*(_trivial(i) for i in range(GATHER_ITEMS)), limit=10)
    assert out[-1] == GATHER_ITEMS - 1


async def _gather_aiometer() -> None:
    out = await aiometer.run_all(
        [functools.partial(_trivial, i) for i in range(GATHER_ITEMS)], max_at_once=10
    )
    assert out[-1] == GATHER_ITEMS - 1


async def _gather_semaphore() -> None:
    sem = asyncio.Semaphore(10)

    async def bounded(i: int) -> int:
        async with sem:
            return await _trivial(i)

    out = await asyncio.gather(*(bounded(i) for i in range(GATHER_ITEMS)))
    assert out[-1] == GATHER_ITEMS - 1


GATHERS = [
    ("admission.gather", "admission.gather(limit=10)", "admission", True, _gather_admission),
    ("aiometer.run_all", "aiometer.run_all(max_at_once=10)", "peer", False, _gather_aiometer),
    (
        "semaphore+gather",
        "asyncio.Semaphore(10) + asyncio.gather",
        "peer",
        False,
        _gather_semaphore,
    ),
]


@pytest.mark.benchmark(group="gather 10,000 trivial coroutines, 10 at once")
@parametrize_rows(GATHERS)
def test_bounded_gather(benchmark: Any, loop: Any, row: Row) -> None:
    run_rounds(benchmark, loop, row.make, row, calls=GATHER_ITEMS, rounds=10)
