"""Semaphore ``try_acquire`` + ``release`` pair, uncontended: admission against the stdlib.

One operation is a non-blocking acquire of one permit followed by its release, on a
semaphore of 10 permits that nobody else holds:

- admission: ``try_acquire(); release()``;
- ``threading.Semaphore`` / ``threading.BoundedSemaphore``: ``acquire(False); release()``
  (pure Python over a ``Condition``);
- ``asyncio.Semaphore``: ``await acquire(); release()`` inside a coroutine. Its non-async
  surface (``locked()``) decides nothing, so the awaited pair is the comparable operation.
  Uncontended, ``acquire()`` never suspends, so the coroutine is driven directly with
  ``send(None)``: this is its cost without any event-loop overhead (a lower bound for
  ``async with``, which admission's async API will be compared with later);
- reference: a C lock, ``_thread.lock``: ``acquire(False); release()`` (its ``acquire``
  parses keyword arguments, which is most of its cost);
- admission's awaitable ``acquire()`` the same way, for the like-for-like row;
- floor: two calls of a C method that does nothing (``(0).bit_length``): the price of two
  Python-to-C calls, below which no pair of calls can go.
"""

from __future__ import annotations

import _thread
import asyncio
import threading
from typing import Any

import pytest

import admission as adm

GROUP = "semaphore try_acquire+release"
LIMIT = 10


@pytest.mark.benchmark(group=GROUP)
def test_admission(measure: Any) -> None:
    sem = adm.Semaphore(LIMIT)
    measured = measure(
        key="admission.Semaphore",
        impl="admission Semaphore",
        role="admission",
        baseline=True,
        stmt="acquire(); release()",
        env={"acquire": sem.try_acquire, "release": sem.release},
    )
    stats = sem.stats()
    assert (stats.admitted, stats.rejected, stats.in_use) == (measured.total_calls, 0, 0)
    assert stats.high_water == 1


@pytest.mark.benchmark(group=GROUP)
@pytest.mark.parametrize(
    "cls", [threading.Semaphore, threading.BoundedSemaphore], ids=lambda c: c.__name__
)
def test_threading(measure: Any, cls: type[threading.Semaphore]) -> None:
    sem = cls(LIMIT)
    measure(
        key=f"threading.{cls.__name__}",
        impl=f"threading.{cls.__name__}",
        role="peer",
        stmt="acquire(False); release()",
        env={"acquire": sem.acquire, "release": sem.release},
    )
    assert sem._value == LIMIT


@pytest.mark.benchmark(group=GROUP)
def test_admission_async(measure: Any) -> None:
    sem = adm.Semaphore(LIMIT)
    if not hasattr(sem, "acquire"):
        pytest.skip("this admission has no awaitable Semaphore.acquire yet")
    measured = measure(
        key="admission.Semaphore.async",
        impl="admission Semaphore (await acquire(); release(), no loop overhead)",
        role="admission",
        stmt="await acquire(); release()",
        env={"acquire": sem.acquire, "release": sem.release},
        is_async=True,
    )
    stats = sem.stats()
    assert (stats.admitted, stats.rejected, stats.in_use) == (measured.total_calls, 0, 0)


@pytest.mark.benchmark(group=GROUP)
def test_asyncio(measure: Any) -> None:
    sem = asyncio.Semaphore(LIMIT)
    measure(
        key="asyncio.Semaphore",
        impl="asyncio.Semaphore (await acquire(); release(), no loop overhead)",
        role="peer",
        stmt="await acquire(); release()",
        env={"acquire": sem.acquire, "release": sem.release},
        is_async=True,
    )
    assert not sem.locked()
    assert sem._value == LIMIT


@pytest.mark.benchmark(group=GROUP)
def test_c_lock(measure: Any) -> None:
    lock = _thread.allocate_lock()
    measure(
        key="_thread.lock",
        impl="_thread.lock acquire(False); release() (C lock)",
        role="reference",
        stmt="acquire(False); release()",
        env={"acquire": lock.acquire, "release": lock.release},
    )
    assert not lock.locked()


@pytest.mark.benchmark(group=GROUP)
def test_call_floor(measure: Any) -> None:
    noop = (0).bit_length
    measure(
        key="two_c_calls",
        impl="two no-op C method calls (floor)",
        role="floor",
        stmt="acquire(); release()",
        env={"acquire": noop, "release": noop},
    )


# --- `with semaphore:` in a thread, uncontended (issue 11, case 14) ---------------------------
#
# The sync context manager as threads use it, on a semaphore nobody else holds: admission's
# `with` against `threading.Semaphore`'s `with` in the same run (target: at most a quarter of
# its time), and `_thread.lock`'s `with` as the C reference.

WITH_GROUP = "semaphore with (thread)"


@pytest.mark.benchmark(group=WITH_GROUP)
def test_with_admission(measure: Any) -> None:
    sem = adm.Semaphore(LIMIT)
    measured = measure(
        key="admission.Semaphore.with",
        impl="admission Semaphore `with`",
        role="admission",
        baseline=True,
        stmt="with sem: pass",
        env={"sem": sem},
    )
    stats = sem.stats()
    assert (stats.admitted, stats.rejected, stats.in_use) == (measured.total_calls, 0, 0)


@pytest.mark.benchmark(group=WITH_GROUP)
@pytest.mark.parametrize(
    "cls", [threading.Semaphore, threading.BoundedSemaphore], ids=lambda c: c.__name__
)
def test_with_threading(measure: Any, cls: type[threading.Semaphore]) -> None:
    sem = cls(LIMIT)
    measure(
        key=f"threading.{cls.__name__}.with",
        impl=f"threading.{cls.__name__} `with`",
        role="peer",
        stmt="with sem: pass",
        env={"sem": sem},
    )
    assert sem._value == LIMIT


@pytest.mark.benchmark(group=WITH_GROUP)
def test_with_c_lock(measure: Any) -> None:
    lock = _thread.allocate_lock()
    measure(
        key="_thread.lock.with",
        impl="_thread.lock `with` (C lock)",
        role="reference",
        stmt="with lock: pass",
        env={"lock": lock},
    )
    assert not lock.locked()


# --- withdrawing waiters from a long queue (issue 11, case 3) -----------------------------------
#
# 50,000 requests queued behind a held permit, then all withdrawn (`_cancel`, what a cancelled
# or timed-out waiter does), oldest first or newest first. Each withdrawal is O(1): both orders
# cost the same per call. (A search of the queue made newest-first quadratic: minutes.)

CANCEL_GROUP = "semaphore cancel, 50,000 queued"
QUEUED = 50_000


@pytest.mark.benchmark(group=CANCEL_GROUP)
@pytest.mark.parametrize("order", ["oldest first", "newest first"])
def test_cancel_from_a_long_queue(benchmark: Any, order: str) -> None:
    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        sem = adm.Semaphore(1)
        assert sem.try_acquire()
        tickets = [sem._enqueue(1, int) for _ in range(QUEUED)]
        if order == "newest first":
            tickets.reverse()
        return (sem, tickets), {}

    def withdraw_all(sem: adm.Semaphore, tickets: list[Any]) -> None:
        cancel = sem._cancel
        for ticket in tickets:
            cancel(ticket)
        assert sem.waiting == 0

    benchmark.extra_info.update(
        key=f"admission.Semaphore._cancel.{order}",
        impl=f"admission Semaphore, {order}",
        role="admission",
        baseline=order == "oldest first",
        calls=QUEUED,
    )
    benchmark.pedantic(withdraw_all, setup=setup, rounds=5, iterations=1)
