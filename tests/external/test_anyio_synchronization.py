"""anyio's synchronization tests, ported to `admission.Semaphore` on asyncio, uvloop and trio.

Source: agronholm/anyio, ``tests/test_synchronization.py`` at commit
660a06d548ca72759e9d89ed722dd1ad5227afe4 (4.14.2 + 39; the file last changed in 12d0aa7).
Ported: ``TestSemaphore`` and ``TestCapacityLimiter`` (both -> ``adm.Semaphore``) and the
``TestLock`` tests that apply to ``adm.Semaphore(1)``. Each runs through anyio's pytest plugin
on asyncio, asyncio + uvloop and trio; upstream's asyncio-only tests on asyncio and uvloop.
Not ported, not applicable: ``TestEvent`` and ``TestCondition`` (no such primitives);
``TestLock.test_acquire_twice_async``/``_sync``, ``test_cancel_after_release``,
``test_owner_after_release``, ``test_instantiate_outside_event_loop`` (lock ownership: the
owner task, the RuntimeError for re-acquiring a held lock); ``TestCapacityLimiter``'s
``test_borrow_twice`` (the same RuntimeError for a borrower borrowing twice; admission's
permits belong to no task, so the second acquire just waits) and
``test_current_default_thread_limiter`` (anyio's worker-thread limiter).

Translation (API names only; every assertion is upstream's):

- ``Semaphore(v)`` / ``CapacityLimiter(n)`` / ``Lock()`` -> ``adm.Semaphore(v)`` /
  ``adm.Semaphore(n)`` / ``adm.Semaphore(1)``; ``Semaphore(v, max_value=m)`` ->
  ``held(m, value=v)`` (``adm.Semaphore(m)`` with ``m - v`` permits taken, see
  ``external_support.py``); ``max_value`` and ``total_tokens`` -> ``limit``,
  ``value``/``available_tokens`` -> ``available``, ``borrowed_tokens`` -> ``in_use``,
  ``statistics().tasks_waiting`` -> ``waiting``, ``statistics().locked`` -> ``locked()``.
- ``acquire_nowait()`` (and ``acquire_on_behalf_of_nowait``) raise ``WouldBlock`` where
  ``try_acquire()`` returns False: ``acquire_nowait()`` -> ``assert s.try_acquire()``;
  ``pytest.raises(WouldBlock, s.acquire_nowait)`` -> ``assert not s.try_acquire()``.
- ``start_soon(s.acquire)`` / ``create_task(s.acquire())`` -> the ``acquire`` coroutine
  below (task APIs take coroutines; admission's ``acquire()`` is a native awaitable).
- Borrower objects of ``acquire_on_behalf_of`` are dropped (one borrower holds one token,
  so ``statistics().borrowers == ("B",)`` -> ``in_use == 1``).
- Error messages name admission's argument: ``total_tokens must be ...`` ->
  ``limit must be ...``.
"""

from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING, Any

import pytest
from anyio import (
    CancelScope,
    Event,
    create_task_group,
    fail_after,
    move_on_after,
    run,
    wait_all_tasks_blocked,
)
from anyio.lowlevel import checkpoint
from external_support import UVLOOP, held, only

import admission as adm

if TYPE_CHECKING:
    from anyio.abc import TaskStatus

pytestmark = pytest.mark.anyio

asyncio_params = [pytest.param("asyncio", id="asyncio"), UVLOOP]

README_LIMIT = (
    "README, Configuration: a concurrency limit is 'an integer from 1 to 1073741823' "
    "(Semaphore docstring: TypeError/ValueError otherwise): no limit of 0, no infinite limit"
)
README_TRIO_CHECKPOINT = (
    "README, Async: 'trio checkpoints: on trio, await s.acquire() and async with s: are "
    "checkpoints even when a permit is free', as trio requires of every await; anyio's "
    "fast_acquire=True opts out of that, admission does not"
)


def trio_checkpoints(request: pytest.FixtureRequest, anyio_backend: Any) -> None:
    """Marks the running test as the documented difference when it runs on trio. Not strict:
    at a checkpoint trio's scheduler runs the ready tasks in a random order, so the other
    task runs first only about half the time."""
    name = anyio_backend if isinstance(anyio_backend, str) else anyio_backend[0]
    if name == "trio":
        request.applymarker(
            pytest.mark.xfail(
                raises=only(AssertionError), reason=README_TRIO_CHECKPOINT, strict=False
            )
        )


README_BOUNDED = (
    "README, What you get, Semaphore: every admission semaphore is bounded by its limit "
    "('releasing more than held raises'); there is no max_value=None"
)
README_RELEASE = (
    "README, What you get, Semaphore: 'releasing more than held raises' a ValueError (not "
    "anyio's RuntimeError about the borrower: permits belong to no task)"
)


async def acquire(s: adm.Semaphore) -> None:
    await s.acquire()


# ---------------------------------------------------------------------------------------------
# TestLock, against adm.Semaphore(1)


class TestLock:
    async def test_contextmanager(self) -> None:
        async def task() -> None:
            assert lock.locked()
            async with lock:
                results.append("2")

        results = []
        lock = adm.Semaphore(1)
        async with create_task_group() as tg, lock:
            tg.start_soon(task)
            await wait_all_tasks_blocked()
            results.append("1")

        assert not lock.locked()
        assert results == ["1", "2"]

    async def test_manual_acquire(self) -> None:
        async def task() -> None:
            assert lock.locked()
            await lock.acquire()
            try:
                results.append("2")
            finally:
                lock.release()

        results = []
        lock = adm.Semaphore(1)
        async with create_task_group() as tg:
            await lock.acquire()
            try:
                tg.start_soon(task)
                await wait_all_tasks_blocked()
                results.append("1")
            finally:
                lock.release()

        assert not lock.locked()
        assert results == ["1", "2"]

    async def test_fast_acquire(self, request: pytest.FixtureRequest, anyio_backend: Any) -> None:
        """
        Test that fast_acquire=True does not yield back control to the event loop when
        there is no contention.

        """
        trio_checkpoints(request, anyio_backend)
        other_task_called = False

        async def other_task() -> None:
            nonlocal other_task_called
            other_task_called = True

        lock = adm.Semaphore(1)  # Lock(fast_acquire=True)
        async with create_task_group() as tg:
            tg.start_soon(other_task)
            async with lock:
                assert not other_task_called

    async def test_acquire_nowait(self) -> None:
        lock = adm.Semaphore(1)
        assert lock.try_acquire()
        assert lock.locked()

    async def test_acquire_nowait_wouldblock(self) -> None:
        async def try_lock() -> None:
            assert not lock.try_acquire()

        lock = adm.Semaphore(1)
        async with lock, create_task_group() as tg:
            assert lock.locked()
            tg.start_soon(try_lock)

    @pytest.mark.parametrize(
        "release_first",
        [pytest.param(False, id="releaselast"), pytest.param(True, id="releasefirst")],
    )
    async def test_cancel_during_acquire(self, release_first: bool) -> None:
        acquired = False

        async def task(*, task_status: TaskStatus[None]) -> None:
            nonlocal acquired
            task_status.started()
            async with lock:
                acquired = True

        lock = adm.Semaphore(1)
        async with create_task_group() as tg:
            await lock.acquire()
            await tg.start(task)
            tg.cancel_scope.cancel()
            with CancelScope(shield=True):
                if release_first:
                    lock.release()
                    await wait_all_tasks_blocked()
                else:
                    await wait_all_tasks_blocked()
                    lock.release()

        assert not acquired
        assert not lock.locked()

    async def test_statistics(self) -> None:
        async def waiter() -> None:
            async with lock:
                pass

        lock = adm.Semaphore(1)
        async with create_task_group() as tg:
            assert not lock.locked()
            assert lock.waiting == 0
            async with lock:
                assert lock.locked()
                assert lock.waiting == 0
                for i in range(1, 3):
                    tg.start_soon(waiter)
                    await wait_all_tasks_blocked()
                    assert lock.waiting == i

        assert not lock.locked()
        assert lock.waiting == 0

    @pytest.mark.parametrize("anyio_backend", asyncio_params)
    async def test_asyncio_deadlock(self) -> None:
        """Regression test for #398."""
        lock = adm.Semaphore(1)

        async def acquire() -> None:
            async with lock:
                await asyncio.sleep(0)

        loop = asyncio.get_running_loop()
        task1 = loop.create_task(acquire())
        task2 = loop.create_task(acquire())
        await asyncio.sleep(0)
        task1.cancel()
        await asyncio.wait_for(task2, 1)

    async def test_cancelled_after_acquire(self) -> None:
        lock = adm.Semaphore(1)
        assert lock.try_acquire()
        async with create_task_group() as tg:
            task1 = tg.create_task(acquire(lock))
            await wait_all_tasks_blocked()
            task1.cancel()
            lock.release()
            assert lock.waiting == 0
            with fail_after(3):
                await lock.acquire()


# ---------------------------------------------------------------------------------------------
# TestSemaphore


class TestSemaphore:
    async def test_contextmanager(self) -> None:
        async def acquire() -> None:
            async with semaphore:
                assert semaphore.available in (0, 1)

        semaphore = adm.Semaphore(2)
        async with create_task_group() as tg:
            tg.start_soon(acquire, name="task 1")
            tg.start_soon(acquire, name="task 2")

        assert semaphore.available == 2

    async def test_manual_acquire(self) -> None:
        async def acquire() -> None:
            await semaphore.acquire()
            try:
                assert semaphore.available in (0, 1)
            finally:
                semaphore.release()

        semaphore = adm.Semaphore(2)
        async with create_task_group() as tg:
            tg.start_soon(acquire, name="task 1")
            tg.start_soon(acquire, name="task 2")

        assert semaphore.available == 2

    async def test_fast_acquire(self, request: pytest.FixtureRequest, anyio_backend: Any) -> None:
        """
        Test that fast_acquire=True does not yield back control to the event loop when
        there is no contention.

        """
        trio_checkpoints(request, anyio_backend)
        other_task_called = False

        async def other_task() -> None:
            nonlocal other_task_called
            other_task_called = True

        semaphore = adm.Semaphore(1)  # Semaphore(1, fast_acquire=True)
        async with create_task_group() as tg:
            tg.start_soon(other_task)
            async with semaphore:
                assert not other_task_called

    async def test_acquire_nowait(self) -> None:
        semaphore = adm.Semaphore(1)
        assert semaphore.try_acquire()
        assert semaphore.available == 0
        assert not semaphore.try_acquire()

    @pytest.mark.parametrize(
        "release_first",
        [pytest.param(False, id="releaselast"), pytest.param(True, id="releasefirst")],
    )
    async def test_cancel_during_acquire(self, release_first: bool) -> None:
        acquired = False

        async def task(*, task_status: TaskStatus[None]) -> None:
            nonlocal acquired
            task_status.started()
            async with semaphore:
                acquired = True

        semaphore = adm.Semaphore(1)
        async with create_task_group() as tg:
            await semaphore.acquire()
            await tg.start(task)
            tg.cancel_scope.cancel()
            with CancelScope(shield=True):
                if release_first:
                    semaphore.release()
                    await wait_all_tasks_blocked()
                else:
                    await wait_all_tasks_blocked()
                    semaphore.release()

        assert not acquired
        assert semaphore.available == 1

    @pytest.mark.parametrize(
        "max_value",
        [
            2,
            pytest.param(
                None,
                marks=pytest.mark.xfail(raises=TypeError, reason=README_BOUNDED, strict=True),
            ),
        ],
    )
    async def test_max_value(self, max_value: int | None) -> None:
        semaphore = held(max_value, value=0)  # type: ignore[arg-type]  # Semaphore(0, max_value)
        assert semaphore.limit == max_value

    async def test_max_value_exceeded(self) -> None:
        semaphore = held(2, value=1)  # Semaphore(1, max_value=2)
        semaphore.release()
        with pytest.raises(ValueError):  # noqa: PT011 (upstream: pytest.raises(ValueError, ...))
            semaphore.release()

    async def test_statistics(self) -> None:
        async def waiter() -> None:
            async with semaphore:
                pass

        semaphore = adm.Semaphore(1)
        async with create_task_group() as tg:
            assert semaphore.waiting == 0
            async with semaphore:
                assert semaphore.waiting == 0
                for i in range(1, 3):
                    tg.start_soon(waiter)
                    await wait_all_tasks_blocked()
                    assert semaphore.waiting == i

        assert semaphore.waiting == 0

    async def test_acquire_race(self) -> None:
        """
        Test against a race condition: when a task waiting on acquire() is rescheduled
        but another task snatches the last available slot, the task should not raise
        WouldBlock.

        """
        semaphore = adm.Semaphore(1)
        async with create_task_group() as tg:
            assert semaphore.try_acquire()
            tg.start_soon(acquire, semaphore)
            await wait_all_tasks_blocked()
            semaphore.release()
            assert not semaphore.try_acquire()

    @pytest.mark.parametrize("anyio_backend", asyncio_params)
    async def test_asyncio_deadlock(self) -> None:
        """Regression test for #398."""
        semaphore = adm.Semaphore(1)

        async def acquire() -> None:
            async with semaphore:
                await asyncio.sleep(0)

        loop = asyncio.get_running_loop()
        task1 = loop.create_task(acquire())
        task2 = loop.create_task(acquire())
        await asyncio.sleep(0)
        task1.cancel()
        await asyncio.wait_for(task2, 1)

    @pytest.mark.parametrize("anyio_backend", asyncio_params)
    async def test_cancel_after_release(self) -> None:
        """
        Test that a native asyncio cancellation will not cause a semaphore ownership
        to get lost between a release() and the resumption of acquire().

        """
        # Create the semaphore in such a way that any task acquiring it will block
        semaphore = held(1, value=0)  # Semaphore(0, max_value=1)

        # Start a task that gets blocked on trying to acquire the semaphore
        loop = asyncio.get_running_loop()
        task1 = loop.create_task(acquire(semaphore))
        await asyncio.sleep(0)

        # Trigger the acquiring task to be rescheduled, but also cancel it right away
        semaphore.release()
        task1.cancel()
        assert semaphore.available == 0
        await asyncio.wait([task1], timeout=5)

        # The acquire() method should've released the semaphore because acquisition
        # failed due to cancellation
        assert semaphore.available == 1
        assert semaphore.waiting == 0
        assert semaphore.try_acquire()

    async def test_cancelled_after_acquire(self) -> None:
        semaphore = adm.Semaphore(1)  # Semaphore(1, max_value=1)
        assert semaphore.try_acquire()
        async with create_task_group() as tg:
            task1 = tg.create_task(acquire(semaphore))
            await wait_all_tasks_blocked()
            task1.cancel()
            semaphore.release()
            assert semaphore.waiting == 0
            with fail_after(3):
                await semaphore.acquire()

    def test_instantiate_outside_event_loop(
        self, anyio_backend_name: str, anyio_backend_options: dict[str, Any]
    ) -> None:
        async def use_semaphore() -> None:
            async with semaphore:
                pass

        semaphore = held(3, value=1)  # Semaphore(1, max_value=3)
        assert semaphore.available == 1
        assert semaphore.limit == 3
        assert semaphore.waiting == 0

        run(
            use_semaphore,
            backend=anyio_backend_name,
            backend_options=anyio_backend_options,
        )


# ---------------------------------------------------------------------------------------------
# TestCapacityLimiter


class TestCapacityLimiter:
    async def test_bad_init_type(self) -> None:
        with pytest.raises(TypeError, match="limit must be an integer"):
            adm.Semaphore(1.0)  # type: ignore[arg-type]

    async def test_bad_init_value(self) -> None:
        with pytest.raises(ValueError, match="limit must be"):
            adm.Semaphore(-1)

    @pytest.mark.xfail(raises=ValueError, reason=README_LIMIT, strict=True)
    async def test_zero_tokens(self) -> None:
        limiter = adm.Semaphore(0)
        assert limiter.limit == 0

    async def test_borrow(self) -> None:
        limiter = adm.Semaphore(2)
        assert limiter.limit == 2
        assert limiter.available == 2
        assert limiter.in_use == 0
        async with limiter:
            assert limiter.limit == 2
            assert limiter.available == 1
            assert limiter.in_use == 1

    async def test_limit(self) -> None:
        value = 0

        async def taskfunc() -> None:
            nonlocal value
            for _ in range(5):
                async with limiter:
                    assert value == 0
                    value = 1
                    await wait_all_tasks_blocked()
                    value = 0

        limiter = adm.Semaphore(1)
        async with create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(taskfunc)

    @pytest.mark.xfail(raises=ValueError, reason=README_RELEASE, strict=True)
    async def test_bad_release(self) -> None:
        limiter = adm.Semaphore(1)
        with pytest.raises(RuntimeError) as exc:
            limiter.release()

        exc.match("this borrower isn't holding any of this CapacityLimiter's tokens")

    async def test_increase_tokens(self) -> None:
        async def setter() -> None:
            # Wait until waiter() is inside the limiter block
            await event1.wait()
            async with limiter:
                # This can only happen when total_tokens has been increased
                event2.set()

        async def waiter() -> None:
            async with limiter:
                event1.set()
                await event2.wait()

        limiter = adm.Semaphore(1)
        event1, event2 = Event(), Event()
        async with create_task_group() as tg:
            tg.start_soon(setter)
            tg.start_soon(waiter)
            await wait_all_tasks_blocked()
            assert event1.is_set()
            assert not event2.is_set()
            limiter.limit = 2

        assert event2.is_set()

    async def test_statistics(self) -> None:
        async def waiter() -> None:
            async with limiter:
                pass

        limiter = adm.Semaphore(1)
        assert limiter.limit == 1
        assert limiter.in_use == 0
        assert limiter.waiting == 0
        async with create_task_group() as tg, limiter:
            assert limiter.in_use == 1
            assert limiter.waiting == 0
            for i in range(1, 3):
                tg.start_soon(waiter)
                await wait_all_tasks_blocked()
                assert limiter.waiting == i

        assert limiter.waiting == 0
        assert limiter.in_use == 0

    @pytest.mark.parametrize("anyio_backend", asyncio_params)
    async def test_asyncio_deadlock(self) -> None:
        """Regression test for #398."""
        limiter = adm.Semaphore(1)

        async def acquire() -> None:
            async with limiter:
                await asyncio.sleep(0)

        loop = asyncio.get_running_loop()
        task1 = loop.create_task(acquire())
        task2 = loop.create_task(acquire())
        await asyncio.sleep(0)
        task1.cancel()
        await asyncio.wait_for(task2, 1)

    async def test_ordered_queue(self) -> None:
        limiter = adm.Semaphore(1)
        results = []
        event = Event()

        async def append(x: int, task_status: TaskStatus[None]) -> None:
            task_status.started()
            async with limiter:
                await event.wait()
                results.append(x)

        async with create_task_group() as tg:
            for i in [0, 1, 2]:
                await tg.start(append, i)

            event.set()

        assert results == [0, 1, 2]

    async def test_increase_tokens_lets_others_acquire(self) -> None:
        limiter = adm.Semaphore(1)
        entered_events = [Event() for _ in range(3)]
        continue_event = Event()

        async def worker(entered_event: Event) -> None:
            async with limiter:
                entered_event.set()
                await continue_event.wait()

        async with create_task_group() as tg:
            for event in entered_events[:2]:
                tg.start_soon(worker, event)

            # One task should be able to acquire the limiter while the other is left
            # waiting
            await wait_all_tasks_blocked()
            assert sum(ev.is_set() for ev in entered_events) == 1

            # Increase the total tokens and start another worker.
            # All tasks should be able to acquire the limiter now.
            limiter.limit = 3
            tg.start_soon(worker, entered_events[2])
            with fail_after(1):
                for ev in entered_events[1:]:
                    await ev.wait()

            # Allow all tasks to exit
            continue_event.set()

    def test_instantiate_outside_event_loop(
        self, anyio_backend_name: str, anyio_backend_options: dict[str, Any]
    ) -> None:
        async def use_limiter() -> None:
            async with limiter:
                pass

        limiter = adm.Semaphore(1)
        limiter.limit = 2

        with pytest.raises(TypeError):
            limiter.limit = "2"  # type: ignore[assignment]

        with pytest.raises(TypeError):
            limiter.limit = 3.0  # type: ignore[assignment]

        assert limiter.limit == 2
        assert limiter.in_use == 0
        assert limiter.limit == 2  # statistics.total_tokens
        assert limiter.in_use == 0  # statistics.borrowed_tokens
        assert limiter.in_use == 0  # statistics.borrowers == ()
        assert limiter.waiting == 0

        run(
            use_limiter,
            backend=anyio_backend_name,
            backend_options=anyio_backend_options,
        )

    @pytest.mark.xfail(raises=ValueError, reason=README_LIMIT, strict=True)
    def test_zero_tokens_outside_event_loop(self) -> None:
        # Regression test for the CapacityLimiterAdapter setter rejecting 0,
        # which contradicted the 4.12 behavior of allowing 0 total tokens
        limiter = adm.Semaphore(1)
        limiter.limit = 0
        assert limiter.limit == 0
        assert adm.Semaphore(0).limit == 0

    @pytest.mark.xfail(raises=TypeError, reason=README_LIMIT, strict=True)
    def test_float_infinity_outside_event_loop(self) -> None:
        # Regression test: the CapacityLimiterAdapter setter checked for
        # infinity with the identity operator (``value is not math.inf``), so
        # ``float("inf")`` -- a distinct object that merely equals ``math.inf``
        # -- was rejected outside an event loop, while every backend setter
        # (which uses ``math.isinf``) accepts it.
        assert adm.Semaphore(float("inf")).limit == math.inf  # type: ignore[arg-type]
        assert adm.Semaphore(math.inf).limit == math.inf  # type: ignore[arg-type]

        limiter = adm.Semaphore(1)
        limiter.limit = float("inf")  # type: ignore[assignment]
        assert limiter.limit == math.inf

    async def test_total_tokens_as_kwarg(self) -> None:
        # Regression test for #515
        limiter = adm.Semaphore(limit=1)
        assert limiter.limit == 1

    async def test_acquire_cancelled(self) -> None:
        # Regression test for #947
        limiter = adm.Semaphore(1)

        async def borrower(event: Event, *, task_status: TaskStatus[CancelScope]) -> None:
            with CancelScope() as scope:
                task_status.started(scope)
                async with limiter:
                    event.set()
                    await checkpoint()

        async with create_task_group() as tg:
            async with limiter:
                event1 = Event()
                scope1 = await tg.start(borrower, event1)
                event2 = Event()
                await tg.start(borrower, event2)
                scope1.cancel()

            with move_on_after(0.1):
                await event2.wait()
                return

            tg.cancel_scope.cancel()

        pytest.fail("The second borrower failed to acquire the limiter")

    async def test_acquire_nowait(self) -> None:
        results = []

        async def borrower() -> None:
            results.append(limiter.try_acquire())  # limiter.acquire_nowait()

        limiter = adm.Semaphore(1)
        assert limiter.try_acquire()
        async with create_task_group() as tg:
            tg.start_soon(borrower)
        assert results == [False]  # pytest.RaisesGroup(pytest.RaisesExc(WouldBlock))

    async def test_acquire_on_behalf_of_nowait(self) -> None:
        limiter = adm.Semaphore(1)
        assert limiter.try_acquire()  # acquire_on_behalf_of_nowait(borrower1)
        assert not limiter.try_acquire()  # acquire_on_behalf_of_nowait(borrower2): WouldBlock

    async def test_nowait_acquire_after_release_does_not_oversubscribe(self) -> None:
        # Regression test for #1170: a non-blocking acquire issued in the window
        # between releasing a token (which notifies the next waiter) and that
        # waiter actually resuming must not slip through, as the freed token is
        # already reserved for the woken waiter. The over-granting bug was
        # specific to the asyncio backend, but the invariant holds on both.
        limiter = adm.Semaphore(1)
        assert limiter.try_acquire()  # "A"

        async def waiter() -> None:
            await limiter.acquire()  # "B"

        async with create_task_group() as tg:
            tg.start_soon(waiter)
            await wait_all_tasks_blocked()
            assert limiter.waiting == 1

            # Frees the only token and reserves it for the still-parked "B"; no
            # token is available, so the nowait acquire must raise WouldBlock.
            limiter.release()  # release_on_behalf_of("A")
            assert not limiter.try_acquire()  # "X"

        assert limiter.in_use <= limiter.limit
        assert limiter.available >= 0
        assert limiter.in_use == 1  # statistics().borrowers == ("B",)
        limiter.release()  # release_on_behalf_of("B")
