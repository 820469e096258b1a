"""One limiter, used at once from threads (``with``) and from event loops (``async with``),
and ``to_thread`` bounded by a limiter. Concurrency is measured with a threading counter.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from support import wait_until

import admission as adm

pytestmark = pytest.mark.anyio


class Gauge:
    """How many are inside right now, and the most ever, across threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.inside = 0
        self.peak = 0
        self.entries = 0

    def enter(self) -> None:
        with self._lock:
            self.inside += 1
            self.entries += 1
            self.peak = max(self.peak, self.inside)

    def leave(self) -> None:
        with self._lock:
            self.inside -= 1


async def join(threads: list[threading.Thread]) -> None:
    for t in threads:
        await anyio.to_thread.run_sync(t.join)


async def test_threads_and_event_loops_share_one_semaphore() -> None:
    limit = 3
    s = adm.Semaphore(limit)
    gauge = Gauge()
    errors: list[BaseException] = []
    threads_n, thread_rounds = 4, 500
    tasks_n, task_rounds = 12, 50
    other_loop_tasks, other_loop_rounds = 6, 50
    go = threading.Event()  # everyone starts together, so threads and tasks really contend

    def in_thread() -> None:
        go.wait(30)
        try:
            for _ in range(thread_rounds):
                with s:
                    gauge.enter()
                    time.sleep(0)  # lets the GIL go while holding the permit
                    gauge.leave()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    async def in_loop(rounds: int, checkpoint: Callable[[], Any]) -> None:
        go.set()
        for _ in range(rounds):
            async with s:
                gauge.enter()
                await checkpoint()
                gauge.leave()

    def other_event_loop() -> None:
        # A second asyncio loop, in its own thread, on the same semaphore.
        async def main() -> None:
            n = other_loop_tasks
            coros = [in_loop(other_loop_rounds, lambda: asyncio.sleep(0)) for _ in range(n)]
            await asyncio.gather(*coros)

        try:
            asyncio.run(main())
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=in_thread) for _ in range(threads_n)]
    threads.append(threading.Thread(target=other_event_loop))
    for t in threads:
        t.start()
    try:
        async with anyio.create_task_group() as tg:
            for _ in range(tasks_n):
                tg.start_soon(in_loop, task_rounds, lambda: anyio.lowlevel.checkpoint())
    finally:
        await join(threads)
    assert errors == []
    total = threads_n * thread_rounds + tasks_n * task_rounds + other_loop_tasks * other_loop_rounds
    assert gauge.entries == total
    assert gauge.peak <= limit
    assert (s.in_use, s.waiting, s.available) == (0, 0, limit)
    stats = s.stats()
    assert stats.high_water <= limit
    assert (stats.admitted, stats.rejected, stats.timed_out, stats.cancelled) == (total, 0, 0, 0)


async def test_a_thread_release_wakes_an_async_waiter() -> None:
    s = adm.Semaphore(1)
    assert s.try_acquire()
    done = anyio.Event()

    async def waiter() -> None:
        await s.acquire()
        done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await wait_until(lambda: s.waiting == 1)
        releaser = threading.Thread(target=s.release)
        releaser.start()
        await done.wait()
    await join([releaser])
    assert (s.in_use, s.waiting) == (1, 0)
    s.release()


async def test_an_async_release_wakes_a_blocked_thread() -> None:
    s = adm.Semaphore(1)
    assert s.try_acquire()
    acquired = threading.Event()

    def blocked() -> None:
        with s:
            acquired.set()

    t = threading.Thread(target=blocked)
    t.start()
    await wait_until(lambda: s.waiting == 1)
    async with anyio.create_task_group():
        s.release()
    await join([t])
    assert acquired.is_set()
    assert (s.in_use, s.waiting) == (0, 0)


async def test_rate_limiter_counts_threads_and_tasks_exactly() -> None:
    b = adm.TokenBucket(rate=1_000_000, per=1.0, burst=1_000_000)  # never waits
    threads_n, tasks_n, rounds = 4, 10, 200
    go = threading.Event()

    def in_thread() -> None:
        go.wait(30)
        for _ in range(rounds):
            with b:
                time.sleep(0)

    async def in_loop() -> None:
        go.set()
        for _ in range(rounds):
            async with b:
                await anyio.lowlevel.checkpoint()

    threads = [threading.Thread(target=in_thread) for _ in range(threads_n)]
    for t in threads:
        t.start()
    try:
        async with anyio.create_task_group() as tg:
            for _ in range(tasks_n):
                tg.start_soon(in_loop)
    finally:
        await join(threads)
    stats = b.stats()
    assert stats.admitted == (threads_n + tasks_n) * rounds
    assert stats.attempts == stats.admitted


# ---------------------------------------------------------------------------------------------
# to_thread


async def test_to_thread_is_bounded_by_the_limiter() -> None:
    limit, calls = 3, 12
    s = adm.Semaphore(limit)
    gauge = Gauge()
    # Every `limit` calls meet at the barrier: the peak is exactly `limit` when the bound
    # holds, and a broken bound shows up as a higher peak.
    barrier = threading.Barrier(limit, timeout=30)

    def work(i: int, *, scale: int) -> int:
        gauge.enter()
        try:
            barrier.wait()
        finally:
            gauge.leave()
        return i * scale

    results = await adm.gather(
        *(adm.to_thread(functools.partial(work, i, scale=10), limiter=s) for i in range(calls)),
        limit=calls,
    )
    assert results == [i * 10 for i in range(calls)]
    assert gauge.peak == limit
    assert gauge.entries == calls
    assert (s.in_use, s.waiting) == (0, 0)
    assert s.stats().admitted == calls


async def test_to_thread_propagates_exceptions_and_releases() -> None:
    s = adm.Semaphore(1)

    def fail() -> None:
        raise ValueError("from the thread")

    with pytest.raises(ValueError, match="from the thread"):
        await adm.to_thread(fail, limiter=s)
    assert (s.in_use, s.waiting) == (0, 0)


async def test_to_thread_passes_arguments_but_not_the_limiter() -> None:
    seen: dict[str, Any] = {}

    def fn(*args: Any, **kwargs: Any) -> str:
        seen["args"], seen["kwargs"] = args, kwargs
        seen["thread"] = threading.get_ident()
        return "ok"

    s = adm.Semaphore(2)
    assert await adm.to_thread(fn, 1, 2, limiter=s) == "ok"
    assert seen["args"] == (1, 2)
    assert seen["kwargs"] == {}
    assert seen["thread"] != threading.get_ident()
    # Keyword arguments for fn go through functools.partial (trio's and anyio's rule).
    assert await adm.to_thread(functools.partial(fn, 3, key="v"), limiter=s) == "ok"
    assert (seen["args"], seen["kwargs"]) == ((3,), {"key": "v"})
    assert await adm.to_thread(sum, [1, 2, 3]) == 6  # no limiter at all


async def test_to_thread_refuses_other_keywords_before_taking_anything() -> None:
    s = adm.Semaphore(1)
    with pytest.raises(TypeError, match="key"):
        await adm.to_thread(print, 1, key="v", limiter=s)  # type: ignore[call-arg]
    assert s.stats().attempts == 0


async def test_to_thread_with_a_rate_limiter() -> None:
    b = adm.TokenBucket(rate=10, per=3600.0, burst=10)
    assert await adm.to_thread(len, "abc", limiter=b) == 3
    assert b.stats().admitted == 1
