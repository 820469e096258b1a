"""Async hot paths (issue 3), peers in the same run.

- ``async with`` on a free limiter: admission vs asyncio.Semaphore, aiolimiter, anyio.
- 1,000 tasks through a limit of 10, each ``await asyncio.sleep(0)``: the per-task overhead
  over the same 1,000 tasks with no limit.
- ``gather`` of 10,000 trivial coroutines with at most 10 at once: admission.gather vs
  aiometer.run_all vs the usual hand-written ``asyncio.Semaphore`` + ``asyncio.gather``.

Each round runs inside one ``loop.run_until_complete`` call; with 10,000 operations per round
the loop's per-round cost (tens of microseconds) adds only a few ns per operation, the same
for every implementation.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any

import aiolimiter
import aiometer
import anyio
import pytest

import admission as adm

UNCONTENDED_CALLS = 10_000
TASKS = 1_000
GATHER_ITEMS = 10_000


@pytest.fixture(scope="module")
def loop() -> Any:
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


def run_rounds(
    benchmark: Any,
    loop: asyncio.AbstractEventLoop,
    make_round: Callable[[], Awaitable[None]],
    *,
    key: str,
    impl: str,
    role: str,
    calls: int,
    baseline: bool = False,
    rounds: int = 20,
) -> None:
    benchmark.extra_info.update(key=key, impl=impl, role=role, baseline=baseline, calls=calls)
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
@pytest.mark.parametrize(
    ("key", "impl", "role", "baseline", "make"), UNCONTENDED, ids=[u[0] for u in UNCONTENDED]
)
def test_async_with_uncontended(
    benchmark: Any, loop: Any, key: str, impl: str, role: str, baseline: bool, make: Any
) -> None:
    limiter = loop.run_until_complete(_make_in_loop(make))
    run_rounds(
        benchmark,
        loop,
        _async_with_round(limiter),
        key=key,
        impl=impl,
        role=role,
        calls=UNCONTENDED_CALLS,
        baseline=baseline,
    )


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
    ("no limit", "no limit (baseline)", "reference", False, lambda: None),
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
@pytest.mark.parametrize(
    ("key", "impl", "role", "baseline", "make"), CONTENDED, ids=[c[0] for c in CONTENDED]
)
def test_tasks_through_limit(
    benchmark: Any, loop: Any, key: str, impl: str, role: str, baseline: bool, make: Any
) -> None:
    limiter = loop.run_until_complete(_make_in_loop(make))
    run_rounds(
        benchmark,
        loop,
        _tasks_round(limiter),
        key=key,
        impl=impl,
        role=role,
        calls=TASKS,
        baseline=baseline,
    )
    if isinstance(limiter, adm.Semaphore):
        assert limiter.stats().high_water == 10  # the bound really was reached, and held


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
@pytest.mark.parametrize(
    ("key", "impl", "role", "baseline", "fn"), GATHERS, ids=[g[0] for g in GATHERS]
)
def test_bounded_gather(
    benchmark: Any, loop: Any, key: str, impl: str, role: str, baseline: bool, fn: Any
) -> None:
    run_rounds(
        benchmark,
        loop,
        fn,
        key=key,
        impl=impl,
        role=role,
        calls=GATHER_ITEMS,
        baseline=baseline,
        rounds=10,
    )
