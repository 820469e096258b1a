"""Circuit breaker, closed path (issue 14): admission against pybreaker, aiobreaker, purgatory.

One operation is one call through a closed breaker that succeeds at once (the breaker's own
cost: a permission and an outcome):

- sync: admission ``try_acquire(); record(True, d)`` (the low-level pair), ``with breaker:``
  and a decorated function; pybreaker ``call(fn)`` and ``with calling():``; purgatory's sync
  ``with factory.get_breaker(name):``; floor: a plain Python call of the same no-op function
  (what any decorator costs at least);
- async: ``async with breaker:`` inside a coroutine, admission against ``asyncio.Semaphore``
  (the issue's yardstick: at most half its cost), a decorated coroutine function, aiobreaker
  ``call_async`` and purgatory's ``async with await factory.get_breaker(name):``; floor:
  ``await fn()`` of the same no-op coroutine function (what any wrapper costs at least). No
  operation suspends, so each coroutine is driven by hand without an event loop (conftest's
  ``is_async``): the same for every row.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiobreaker
import pybreaker
import pytest
from purgatory import AsyncCircuitBreakerFactory, SyncCircuitBreakerFactory

import admission as adm

SYNC = "breaker closed path: one call (sync)"
ASYNC = "breaker closed path: one call (async)"


def noop() -> None:
    return None


async def anoop() -> None:
    return None


def closed_breaker() -> adm.CircuitBreaker:
    return adm.CircuitBreaker("bench", window=100, min_calls=20)


@pytest.mark.benchmark(group=SYNC)
def test_admission_try_acquire_record(measure: Any) -> None:
    b = closed_breaker()
    measured = measure(
        key="admission.CircuitBreaker.try_acquire+record",
        impl="admission try_acquire(); record(True, d)",
        role="admission",
        baseline=True,
        stmt="try_acquire(); record(True, 0.001)",
        env={"try_acquire": b.try_acquire, "record": b.record},
    )
    s = b.stats()
    assert (s.permitted, s.success, s.state) == (
        measured.total_calls,
        measured.total_calls,
        "closed",
    )


@pytest.mark.benchmark(group=SYNC)
def test_admission_with(measure: Any) -> None:
    b = closed_breaker()

    def call() -> None:
        with b:
            noop()

    measured = measure(
        key="admission.CircuitBreaker.with",
        impl="admission with breaker: fn()",
        role="admission",
        stmt="call()",
        env={"call": call},
    )
    assert b.stats().success == measured.total_calls


@pytest.mark.benchmark(group=SYNC)
def test_admission_decorated(measure: Any) -> None:
    b = closed_breaker()
    measured = measure(
        key="admission.CircuitBreaker.decorated",
        impl="admission @breaker fn()",
        role="admission",
        stmt="call()",
        env={"call": b(noop)},
    )
    assert b.stats().success == measured.total_calls


@pytest.mark.benchmark(group=SYNC)
def test_pybreaker_call(measure: Any) -> None:
    b = pybreaker.CircuitBreaker(fail_max=20, reset_timeout=30)
    measure(
        key="pybreaker.call",
        impl="pybreaker call(fn)",
        role="peer",
        stmt="call(noop)",
        env={"call": b.call, "noop": noop},
    )
    assert b.current_state == "closed"


@pytest.mark.benchmark(group=SYNC)
def test_pybreaker_calling(measure: Any) -> None:
    b = pybreaker.CircuitBreaker(fail_max=20, reset_timeout=30)

    def call() -> None:
        with b.calling():
            noop()

    measure(
        key="pybreaker.calling",
        impl="pybreaker with calling(): fn()",
        role="peer",
        stmt="call()",
        env={"call": call},
    )


@pytest.mark.benchmark(group=SYNC)
def test_purgatory_sync(measure: Any) -> None:
    factory = SyncCircuitBreakerFactory(default_threshold=20, default_ttl=30)

    def call() -> None:
        with factory.get_breaker("bench"):
            noop()

    measure(
        key="purgatory.sync",
        impl="purgatory with get_breaker(name): fn()",
        role="peer",
        stmt="call()",
        env={"call": call},
    )


@pytest.mark.benchmark(group=SYNC)
def test_floor_plain_call(measure: Any) -> None:
    def call() -> None:
        noop()

    measure(
        key="floor.call",
        impl="floor: a Python function calling fn()",
        role="floor",
        stmt="call()",
        env={"call": call},
    )


@pytest.mark.benchmark(group=ASYNC)
def test_admission_async_with(measure: Any) -> None:
    b = closed_breaker()

    async def call() -> None:
        async with b:
            await anoop()

    measured = measure(
        key="admission.CircuitBreaker.async_with",
        impl="admission async with breaker: await fn()",
        role="admission",
        stmt="await call()",
        env={"call": call},
        is_async=True,
    )
    assert b.stats().success == measured.total_calls


@pytest.mark.benchmark(group=ASYNC)
def test_admission_async_decorated(measure: Any) -> None:
    b = closed_breaker()
    measured = measure(
        key="admission.CircuitBreaker.async_decorated",
        impl="admission @breaker await fn()",
        role="admission",
        stmt="await call()",
        env={"call": b(anoop)},
        is_async=True,
    )
    assert b.stats().success == measured.total_calls


@pytest.mark.benchmark(group=ASYNC)
def test_floor_await(measure: Any) -> None:
    measure(
        key="floor.await",
        impl="floor: await fn() (the coroutine made and run, no breaker)",
        role="floor",
        stmt="await call()",
        env={"call": anoop},
        is_async=True,
    )


@pytest.mark.benchmark(group=ASYNC)
def test_asyncio_semaphore(measure: Any) -> None:
    sem = asyncio.Semaphore(10)

    async def call() -> None:
        async with sem:
            await anoop()

    measure(
        key="asyncio.Semaphore.async_with",
        impl="asyncio.Semaphore async with: await fn() (yardstick)",
        role="reference",
        baseline=True,
        stmt="await call()",
        env={"call": call},
        is_async=True,
    )


@pytest.mark.benchmark(group=ASYNC)
def test_aiobreaker(measure: Any) -> None:
    b = aiobreaker.CircuitBreaker(fail_max=20)
    measure(
        key="aiobreaker.call_async",
        impl="aiobreaker await call_async(fn)",
        role="peer",
        stmt="await call(anoop)",
        env={"call": b.call_async, "anoop": anoop},
        is_async=True,
    )


@pytest.mark.benchmark(group=ASYNC)
def test_purgatory_async(measure: Any) -> None:
    factory = AsyncCircuitBreakerFactory(default_threshold=20, default_ttl=30)

    async def call() -> None:
        async with await factory.get_breaker("bench"):
            await anoop()

    measure(
        key="purgatory.async",
        impl="purgatory async with await get_breaker(name): await fn()",
        role="peer",
        stmt="await call()",
        env={"call": call},
        is_async=True,
    )
