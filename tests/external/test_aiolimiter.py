"""aiolimiter's tests, ported to `admission.TokenBucket` on asyncio.

Source: mjpieters/aiolimiter, ``tests/test_aiolimiter.py`` at commit
01c52ea9a5721cc3e56a325697472996f9c5b72f (v1.2.1 + 407). aiolimiter is asyncio-only and its
time mock patches the loop's ``time`` attribute (a uvloop loop has none to patch), so these
run on asyncio alone. Not ported: ``test_version`` (aiolimiter's own package version against
its git tags).

Translation (API names only; every assertion is upstream's):

- ``AsyncLimiter(max_rate, time_period=60)`` -> ``TokenBucket(rate=max_rate,
  per=time_period, burst=max_rate)`` (the ``AsyncLimiter`` function below); both start full.
  Its attributes ``max_rate`` and ``time_period`` -> ``rate`` and ``per``;
  ``has_capacity(amount)`` -> ``peek(amount).allowed``; ``acquire(amount)`` and
  ``async with`` are the same calls.
- ``MockLoopTime`` patches ``loop.time`` as upstream; the buckets of the tests that use it
  take ``clock=adm.LoopClock()``, which the README prescribes under asyncio loop-time mocks
  (the bucket then reads the patched loop clock, and its waits are loop timers).
- A test that would wait on a timer the frozen mock clock never reaches is ended by
  ``watchdog`` after 2 s of real time, as an AssertionError (upstream has no such case: its
  limiter never makes the test task itself wait).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Collection, Coroutine, Iterator
from typing import Any, TypeVar
from unittest import mock

import pytest

import admission as adm

pytestmark = pytest.mark.anyio

# max number of wait_for rounds when waiting for all events to settle
MAX_WAIT_FOR_ITER = 5

T = TypeVar("T")

README_NO_BARGING = (
    "README, Async: 'FIFO for every waiter, multi-permit and multi-cost requests included: a "
    "large request is never starved by small ones, and newcomers never barge past waiters' "
    "(and admission_tokens_available: 0 when 'waiters are ahead: no barging'); aiolimiter "
    "lets any request that fits the bucket's level pass waiting ones"
)
README_NEVER_FITS = (
    "README, What you get: 'CapacityError (also a ValueError) is raised at once for a request "
    "that can never fit (cost > burst)': by peek(42) on a burst of 1 too, where aiolimiter's "
    "has_capacity(42) answers False"
)
README_LOOPS = (
    "README, Async: 'Sync (with, threads) and async use of one limiter at once stay correct: "
    "a waiter is woken on its own loop or thread': one limiter on several loops is supported, "
    "so there is no re-use warning"
)


@pytest.fixture
def anyio_backend() -> Any:
    return "asyncio"


def AsyncLimiter(
    max_rate: int, time_period: float = 60, *, clock: adm.LoopClock | None = None
) -> adm.TokenBucket:
    return adm.TokenBucket(rate=max_rate, per=time_period, burst=max_rate, clock=clock)


def has_capacity(limiter: adm.TokenBucket, amount: int = 1) -> bool:
    return limiter.peek(amount).allowed


@contextlib.contextmanager
def watchdog(seconds: float = 2.0) -> Iterator[None]:
    """Fails the test (AssertionError) if its task is still inside after ``seconds`` (real)."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    fired = threading.Event()

    def fire() -> None:
        fired.set()
        loop.call_soon_threadsafe(task.cancel)

    timer = threading.Timer(seconds, fire)
    timer.start()
    try:
        yield
    except asyncio.CancelledError:
        if not fired.is_set():
            raise
        if hasattr(task, "uncancel"):  # 3.11+
            task.uncancel()
        raise AssertionError(
            f"still waiting after {seconds} s (the mock clock is frozen)"
        ) from None
    finally:
        timer.cancel()


def test_attributes() -> None:
    limiter = AsyncLimiter(42, 81)
    assert limiter.rate == 42
    assert limiter.per == 81


@pytest.mark.xfail(raises=adm.CapacityError, reason=README_NEVER_FITS, strict=True)
async def test_has_capacity() -> None:
    limiter = AsyncLimiter(1)
    assert has_capacity(limiter)
    assert not has_capacity(limiter, 42)

    await limiter.acquire()
    assert not has_capacity(limiter)


async def test_over_acquire() -> None:
    limiter = AsyncLimiter(1)
    with pytest.raises(ValueError):  # noqa: PT011 (upstream's assertion)
        await limiter.acquire(42)


async def acquire_task(limiter: adm.TokenBucket) -> None:
    await limiter.acquire()


async def async_contextmanager_task(limiter: adm.TokenBucket) -> None:
    async with limiter:
        pass


async def wait_for_n_done(tasks: Collection[asyncio.Task[T]], n: int) -> set[asyncio.Task[T]]:
    """Wait for n (or more) tasks to have completed."""
    iteration = 0
    remainder = len(tasks) - n
    pending_count = len(tasks)
    pending: set[asyncio.Task[T]] = set()
    while iteration <= MAX_WAIT_FOR_ITER:
        iteration += 1
        _, pending = await asyncio.wait(tasks, timeout=0, return_when=asyncio.FIRST_COMPLETED)
        if len(pending) <= remainder:
            break
        if len(pending) < pending_count:
            iteration = 0
            pending_count = len(pending)
    assert len(pending) <= remainder
    return pending


class MockLoopTime:
    def __init__(self) -> None:
        self.current_time: float = 0
        event_loop = asyncio.get_running_loop()
        self.patch = mock.patch.object(event_loop, "time", self.mocked_time)

    def mocked_time(self) -> float:
        return self.current_time

    def __enter__(self) -> MockLoopTime:
        self.patch.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.patch.stop()


@pytest.mark.xfail(raises=AssertionError, reason=README_NO_BARGING, strict=True)
@pytest.mark.parametrize("task", [acquire_task, async_contextmanager_task])
async def test_acquire(
    task: Callable[[adm.TokenBucket], Coroutine[Any, Any, None]],
) -> None:
    # capacity released every 2 seconds
    limiter = AsyncLimiter(5, 10, clock=adm.LoopClock())

    with MockLoopTime() as mocked_time:
        tasks = [asyncio.ensure_future(task(limiter)) for _ in range(10)]

        pending = await wait_for_n_done(tasks, 5)
        assert len(pending) == 5

        mocked_time.current_time = 3  # releases capacity for one and some buffer
        assert has_capacity(limiter)

        pending = await wait_for_n_done(pending, 1)
        assert len(pending) == 4

        mocked_time.current_time = 7  # releases capacity for two more, plus buffer
        pending = await wait_for_n_done(pending, 2)
        assert len(pending) == 2

        mocked_time.current_time = 11  # releases the remainder
        pending = await wait_for_n_done(pending, 2)
        assert len(pending) == 0


async def test_acquire_wait_time() -> None:
    limiter = AsyncLimiter(3, 3, clock=adm.LoopClock())

    with MockLoopTime() as mocked_time:
        # Fill the bucket with an amount of 1
        await limiter.acquire(1)

        # Acquiring an amount of 3 now should take 1 second
        task = asyncio.ensure_future(limiter.acquire(3))
        pending = await wait_for_n_done([task], 0)
        assert pending

        mocked_time.current_time = 1
        pending = await wait_for_n_done([task], 1)
        assert not pending


@pytest.mark.xfail(raises=AssertionError, reason=README_NO_BARGING, strict=True)
async def test_decreasing_acquire() -> None:
    limiter = AsyncLimiter(3, 3, clock=adm.LoopClock())
    with MockLoopTime() as mocked_time, watchdog():
        # Fill the bucket with an amount of 1
        await limiter.acquire(1)

        # Acquiring an amount of 3 would take 1 second
        task = asyncio.ensure_future(limiter.acquire(3))
        pending = await wait_for_n_done([task], 0)
        assert pending

        # _Unless_ a lower amount is acquired in-between
        # increasing the wait time to 2 seconds
        await limiter.acquire(1)

        mocked_time.current_time = 1
        pending = await wait_for_n_done([task], 0)
        assert pending

        mocked_time.current_time = 2
        pending = await wait_for_n_done([task], 1)
        assert not pending


async def test_task_cancelled() -> None:
    limiter = AsyncLimiter(3, 3, clock=adm.LoopClock())
    with MockLoopTime() as mocked_time:
        # Fill the bucket with an amount of 1
        await limiter.acquire(1)

        # Two tasks asking for an amount of 3 would take 4 seconds
        tasks = [asyncio.ensure_future(limiter.acquire(3)) for _ in range(2)]
        pending = await wait_for_n_done(tasks, 0)
        assert pending

        # But if the first one is cancelled, it should only take 1 second for
        # the second to finish
        tasks[0].cancel()
        mocked_time.current_time = 1
        pending = await wait_for_n_done(tasks[1:], 1)
        assert not pending


@pytest.mark.xfail(raises=pytest.fail.Exception, reason=README_LOOPS, strict=True)
def test_multiple_loops() -> None:
    limiter = AsyncLimiter(1, 1)

    async def task() -> None:
        # ensure a task has to wait
        tasks = [asyncio.ensure_future(limiter.acquire()) for _ in range(5)]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED, timeout=0)

    asyncio.run(task())

    with pytest.warns(
        RuntimeWarning,
        match="This AsyncLimiter instance is being re-used across loops.",
    ):
        asyncio.run(task())
