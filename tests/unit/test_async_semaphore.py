"""Semaphore in async code: fast path, FIFO, cancellation, timeouts, close, resize.

Every ``@pytest.mark.anyio`` test runs on asyncio, asyncio + uvloop and trio (see conftest.py).
Waiting for other tasks is done with ``sleep(0)`` loops and events, never with timed sleeps.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import weakref
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from support import ASYNCIO_ONLY, wait_until

import admission as adm


async def yield_many(times: int = 50) -> None:
    for _ in range(times):
        await anyio.lowlevel.checkpoint()


def assert_idle(s: adm.Semaphore) -> None:
    """Nothing held, nobody waiting: the semaphore is back to its initial state."""
    assert (s.in_use, s.waiting, s.available) == (0, 0, s.limit)


# ---------------------------------------------------------------------------------------------
# Fast path


@pytest.mark.anyio
@ASYNCIO_ONLY
async def test_immediate_admission_does_not_suspend() -> None:
    # On asyncio; trio requires every async call to be a checkpoint (the tests below).
    s = adm.Semaphore(3)
    other_ran = False

    async def other() -> None:
        nonlocal other_ran
        other_ran = True

    async with anyio.create_task_group() as tg:
        tg.start_soon(other)  # scheduled, but runs only when this task suspends
        assert await s.acquire() is None
        assert await s.acquire(2) is None
        s.release(3)
        async with s:
            assert s.in_use == 1
        assert not other_ran, "an immediate admission suspended the task"
    assert other_ran
    assert_idle(s)
    assert s.stats().admitted == 3


@pytest.mark.anyio
@ASYNCIO_ONLY
async def test_immediate_admission_does_not_suspend_on_the_asyncio_loop() -> None:
    # The strictest form: a callback already in the loop's ready queue has not run after
    # `await acquire()`, so the task never yielded to the loop (no Task or Future involved).
    loop = asyncio.get_running_loop()
    s = adm.Semaphore(1)
    ran: list[int] = []
    tasks_before = len(asyncio.all_tasks())
    loop.call_soon(ran.append, 1)
    await s.acquire()
    assert ran == []
    assert len(asyncio.all_tasks()) == tasks_before
    s.release()
    loop.call_soon(ran.append, 2)
    async with s:
        pass
    assert ran == []
    await asyncio.sleep(0)
    assert ran == [1, 2]


@pytest.mark.anyio
@ASYNCIO_ONLY
async def test_immediate_admission_awaits_one_shared_ready_object() -> None:
    s = adm.Semaphore(4)
    first = s.acquire()
    second = s.acquire(2)
    assert type(first).__name__ == "Acquire"
    assert s.in_use == 0, "acquire() takes nothing until it is awaited"
    # The first step hands back the shared, already-completed Ready: no Task, no Future.
    first_it = first.__await__()
    second_it = second.__await__()
    entered = s.__aenter__()  # async with awaits at once: decided at the call
    assert first_it is second_it is entered
    assert not inspect.iscoroutine(first_it)
    assert not asyncio.isfuture(first_it)
    assert type(first_it).__name__ == "Ready"
    assert s.in_use == 4
    with pytest.raises(StopIteration):
        next(first_it)
    s.release(4)
    assert_idle(s)


@pytest.mark.anyio
async def test_a_waiting_acquisition_queues_nothing_until_awaited() -> None:
    s = adm.Semaphore(1)
    s.try_acquire()
    slow = s.acquire()
    assert type(slow).__name__ != "Ready", "no permit was free: this is the waiting path"
    assert s.waiting == 0, "queued only when awaited"
    assert not asyncio.isfuture(slow), "before it is awaited it is a plain awaitable"
    slow.close()  # never started: it queued nothing
    assert s.waiting == 0
    s.release()
    assert_idle(s)


# ---------------------------------------------------------------------------------------------
# An acquisition that never runs takes nothing (issue 11, case 4)


@pytest.mark.anyio
async def test_an_acquisition_that_is_never_awaited_takes_nothing() -> None:
    s = adm.Semaphore(2)
    forgotten = s.acquire()  # a forgotten `await`
    also = s.acquire(2, timeout=1)
    assert (s.in_use, s.waiting) == (0, 0), "acquire() took permits before it was awaited"
    del forgotten, also
    assert_idle(s)
    assert s.stats().attempts == 0
    unstarted = s.acquire()
    unstarted.close()  # type: ignore[attr-defined]
    with pytest.raises(KeyError):  # thrown into before its first step: raised, nothing taken
        s.acquire().throw(KeyError("boom"))  # type: ignore[attr-defined]
    assert_idle(s)
    assert s.stats().attempts == 0
    await s.acquire()  # and awaiting one does take
    assert s.in_use == 1
    s.release()


@pytest.mark.anyio
@ASYNCIO_ONLY
async def test_wait_for_with_a_zero_timeout_takes_nothing_if_it_never_ran() -> None:
    # On 3.11 wait_for(aw, 0) wraps the awaitable in a Task and cancels it before it runs.
    s = adm.Semaphore(1)
    for _ in range(3):
        try:
            await asyncio.wait_for(s.acquire(), timeout=0)
        except asyncio.TimeoutError:
            pass
        else:  # 3.12+ may run it first: then it holds the permit, as it says
            s.release()
        assert_idle(s)


@pytest.mark.anyio
@ASYNCIO_ONLY
async def test_a_task_cancelled_before_its_first_step_takes_nothing() -> None:
    s = adm.Semaphore(1)
    for contended in (False, True):
        if contended:
            assert s.try_acquire()
        task = asyncio.ensure_future(s.acquire())
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert (s.in_use, s.waiting) == (int(contended), 0)
    s.release()
    assert_idle(s)
    assert s.stats().attempts == 1  # only the try_acquire


@pytest.mark.anyio
@ASYNCIO_ONLY
async def test_create_task_accepts_an_acquisition_free_or_contended() -> None:
    s = adm.Semaphore(1)
    assert asyncio.iscoroutine(s.acquire())
    free = asyncio.create_task(s.acquire())  # a permit is free
    assert s.in_use == 0, "taken by the task's first step, not by the call"
    assert await free is None
    assert s.in_use == 1
    contended = asyncio.create_task(s.acquire())
    await wait_until(lambda: s.waiting == 1)
    assert "acquire" in repr(contended)
    s.release()
    assert await asyncio.wait_for(contended, 5) is None
    assert (s.in_use, s.waiting) == (1, 0)
    # Cancelled while queued: withdrawn.
    waiting = asyncio.create_task(s.acquire())
    await wait_until(lambda: s.waiting == 1)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert (s.in_use, s.waiting) == (1, 0)
    s.release()
    assert_idle(s)
    stats = s.stats()
    assert (stats.admitted, stats.cancelled, stats.attempts) == (2, 1, 3)


@pytest.mark.anyio
@ASYNCIO_ONLY
async def test_an_acquisition_driven_by_hand_follows_the_coroutine_protocol() -> None:
    s = adm.Semaphore(1)
    assert s.try_acquire()
    aw = s.acquire()
    with pytest.raises(TypeError, match="non-None"):
        aw.send(1)  # type: ignore[attr-defined]
    waiter = aw.send(None)  # type: ignore[attr-defined]  # queued: yields its future
    assert asyncio.isfuture(waiter)
    assert s.waiting == 1
    s.release()  # granted
    with pytest.raises(StopIteration):
        aw.send(None)  # type: ignore[attr-defined]
    assert (s.in_use, s.waiting) == (1, 0)
    with pytest.raises(RuntimeError, match="already awaited"):
        aw.send(None)  # type: ignore[attr-defined]
    # Thrown into while queued: withdrawn, the exception propagates.
    queued = s.acquire()
    queued.send(None)  # type: ignore[attr-defined]
    assert s.waiting == 1
    with pytest.raises(KeyError):
        queued.throw(KeyError("boom"))  # type: ignore[attr-defined]
    assert (s.in_use, s.waiting) == (1, 0)
    s.release()
    assert_idle(s)


# ---------------------------------------------------------------------------------------------
# Every trio acquisition is a checkpoint (issue 11, case 5)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_every_acquisition_is_a_checkpoint_on_trio() -> None:
    import trio
    import trio.testing

    s = adm.Semaphore(2)
    with trio.testing.assert_checkpoints():
        await s.acquire()
    with trio.testing.assert_checkpoints():
        async with s:
            pass
    s.release()
    assert_idle(s)

    # Already cancelled: Cancelled is raised and nothing is taken.
    reached = []
    with trio.CancelScope() as scope:
        scope.cancel()
        await s.acquire()
        reached.append("acquire")  # pragma: no cover - the failure mode
    with trio.CancelScope() as scope:
        scope.cancel()
        async with s:
            reached.append("async with")  # pragma: no cover - the failure mode
    assert reached == []
    assert_idle(s)
    assert s.stats().attempts == 2, "the cancelled calls never asked"


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_a_reacquiring_trio_task_lets_the_others_in() -> None:
    # trio's own Semaphore does the same: the immediate path reschedules the task, so a task
    # that re-acquires in a loop does not keep the others from ever running.
    s = adm.Semaphore(1)
    order: list[str] = []

    async def loop(name: str) -> None:
        for _ in range(20):
            async with s:
                order.append(name)

    async with anyio.create_task_group() as tg:
        tg.start_soon(loop, "a")
        tg.start_soon(loop, "b")
    assert sorted(order) == ["a"] * 20 + ["b"] * 20
    first_b = order.index("b")
    assert first_b < order.index("a") + 20 - 1, f"one task ran alone: {order}"
    assert_idle(s)


# ---------------------------------------------------------------------------------------------
# FIFO


@pytest.mark.anyio
async def test_large_request_queued_first_is_served_before_small_ones() -> None:
    s = adm.Semaphore(4)
    assert s.try_acquire(3)
    order: list[str] = []

    async def take(name: str, n: int) -> None:
        await s.acquire(n)
        order.append(name)

    async with anyio.create_task_group() as tg:
        tg.start_soon(take, "big", 4)
        await wait_until(lambda: s.waiting == 1)
        for i in range(3):
            tg.start_soon(take, f"small{i}", 1)
            await wait_until(lambda i=i: s.waiting == 2 + i)
        # One permit is free, yet nobody barges past the big request.
        await yield_many()
        assert order == []
        assert s.available == 1
        assert not s.try_acquire(1), "try_acquire barged past a waiter"
        tg.start_soon(take, "newcomer", 1)  # an async newcomer queues too
        await wait_until(lambda: s.waiting == 5)
        await yield_many()
        assert order == []

        s.release(3)
        await wait_until(lambda: order == ["big"])
        await yield_many()
        assert order == ["big"], "small requests were admitted alongside the big one"
        assert (s.in_use, s.waiting) == (4, 4)

        # One permit at a time: each goes to the longest waiter.
        for step, expected in enumerate(("small0", "small1", "small2", "newcomer")):
            s.release(1)
            await wait_until(lambda step=step: len(order) == step + 2)
            await yield_many()
            assert order[-1] == expected
            assert len(order) == step + 2
    assert order == ["big", "small0", "small1", "small2", "newcomer"]
    assert s.in_use == 4
    s.release(4)
    assert_idle(s)


@pytest.mark.anyio
async def test_grants_follow_arrival_order_for_mixed_sizes() -> None:
    # Holders release one at a time; after each release the set of tasks ever granted must be
    # a prefix of the arrival order (trio runs woken tasks in random order, so the order in
    # which tasks *record* their grant within one batch proves nothing; prefixes do).
    limit = 5
    sizes = [3, 1, 5, 2, 2, 4, 1, 1, 5, 3, 2, 1, 4, 2, 3, 1]
    s = adm.Semaphore(limit)
    assert s.try_acquire(limit)
    granted: list[int] = []
    held: list[int] = []

    async def take(i: int, n: int) -> None:
        await s.acquire(n)
        granted.append(i)
        held.append(n)

    async with anyio.create_task_group() as tg:
        for i, n in enumerate(sizes):
            tg.start_soon(take, i, n)
            await wait_until(lambda i=i: s.waiting == i + 1)
        s.release(limit)
        while True:
            await wait_until(lambda: sum(held) == s.in_use, "woken tasks recorded their grants")
            await yield_many(5)
            assert sorted(granted) == list(range(len(granted))), "a later waiter went first"
            assert s.in_use <= limit
            assert s.waiting == len(sizes) - len(granted)
            if len(granted) == len(sizes):
                break
            s.release(held.pop(0))
    s.release(sum(held))
    assert_idle(s)
    stats = s.stats()
    assert stats.admitted == len(sizes) + 1
    assert stats.admitted_cost == sum(sizes) + limit


@pytest.mark.anyio
async def test_many_tasks_never_exceed_the_limit_and_counters_add_up() -> None:
    s = adm.Semaphore(3)
    inside = peak = 0
    tasks, rounds = 40, 10

    async def worker() -> None:
        nonlocal inside, peak
        for _ in range(rounds):
            async with s:
                inside += 1
                peak = max(peak, inside)
                await anyio.lowlevel.checkpoint()
                inside -= 1

    async with anyio.create_task_group() as tg:
        for _ in range(tasks):
            tg.start_soon(worker)
    assert peak == 3
    assert_idle(s)
    stats = s.stats()
    assert stats.high_water == 3
    assert (stats.admitted, stats.rejected, stats.timed_out, stats.cancelled) == (
        tasks * rounds,
        0,
        0,
        0,
    )


# ---------------------------------------------------------------------------------------------
# Cancellation


@pytest.mark.anyio
async def test_cancelled_waiter_leaves_no_trace() -> None:
    s = adm.Semaphore(1)
    assert s.try_acquire()
    got: list[str] = []
    scope_a = anyio.CancelScope()

    async def a() -> None:
        with scope_a:
            await s.acquire()
            got.append("a")

    async def b() -> None:
        await s.acquire()
        got.append("b")

    async with anyio.create_task_group() as tg:
        tg.start_soon(a)
        await wait_until(lambda: s.waiting == 1)
        tg.start_soon(b)
        await wait_until(lambda: s.waiting == 2)
        scope_a.cancel()
        await wait_until(lambda: s.waiting == 1)
        assert s.stats().cancelled == 1
        assert s.in_use == 1
        s.release()
    assert got == ["b"]
    assert (s.in_use, s.waiting) == (1, 0)
    s.release()
    assert_idle(s)
    stats = s.stats()
    assert (stats.admitted, stats.cancelled, stats.timed_out, stats.rejected) == (2, 1, 0, 0)


@pytest.mark.anyio
async def test_cancelling_a_large_head_admits_the_smaller_waiters_behind_it() -> None:
    s = adm.Semaphore(3)
    assert s.try_acquire(1)
    got: list[str] = []
    scope = anyio.CancelScope()

    async def big() -> None:
        with scope:
            await s.acquire(3)
            got.append("big")

    async def small(name: str) -> None:
        await s.acquire(1)
        got.append(name)

    async with anyio.create_task_group() as tg:
        tg.start_soon(big)
        await wait_until(lambda: s.waiting == 1)
        tg.start_soon(small, "s1")
        await wait_until(lambda: s.waiting == 2)
        tg.start_soon(small, "s2")
        await wait_until(lambda: s.waiting == 3)
        await yield_many()
        assert got == []
        scope.cancel()  # no release needed: the two free permits go to the waiters behind
        await wait_until(lambda: len(got) == 2)
    assert sorted(got) == ["s1", "s2"]
    assert (s.in_use, s.waiting) == (3, 0)
    s.release(3)
    assert_idle(s)
    assert s.stats().cancelled == 1


@pytest.mark.anyio
@ASYNCIO_ONLY
async def test_permit_granted_in_the_same_instant_as_cancel_is_passed_on() -> None:
    # gh-90155 class: release() hands the permit to A (its future is resolved), then A is
    # cancelled before it runs. A must pass the permit on to B, not lose it.
    s = adm.Semaphore(1)
    assert s.try_acquire()
    got: list[str] = []

    async def take(name: str) -> None:
        await s.acquire()
        got.append(name)

    a = asyncio.ensure_future(take("a"))
    await wait_until(lambda: s.waiting == 1)
    b = asyncio.ensure_future(take("b"))
    await wait_until(lambda: s.waiting == 2)

    s.release()  # granted to A right here: A's future is resolved, A has not run yet
    assert (s.in_use, s.waiting) == (1, 1)
    assert a.cancel()
    await asyncio.wait([a, b])

    assert a.cancelled()
    assert b.result() is None
    assert got == ["b"]
    assert (s.in_use, s.waiting) == (1, 0), "the permit was lost or duplicated"
    stats = s.stats()
    # A was granted but cancelled before it took the permit: it passed it to B and counts as
    # cancelled, not admitted (issue 11, case 6); the wait histogram has B, not A.
    assert (stats.admitted, stats.cancelled) == (2, 1)
    assert stats.wait.count == 2
    s.release()
    assert_idle(s)


@pytest.mark.anyio
@ASYNCIO_ONLY
async def test_permit_granted_in_the_same_instant_as_cancel_returns_when_nobody_waits() -> None:
    s = adm.Semaphore(2)
    assert s.try_acquire(2)
    a = asyncio.ensure_future(s.acquire(2))
    await wait_until(lambda: s.waiting == 1)
    s.release(2)
    assert s.in_use == 2  # handed to A
    a.cancel()
    await asyncio.wait([a])
    assert a.cancelled()
    assert_idle(s)


@pytest.mark.anyio
@ASYNCIO_ONLY
async def test_timeout_and_grant_in_the_same_instant_keeps_the_permit() -> None:
    # The grant arrives first, the timer fires in the same loop iteration: the waiter keeps
    # the permits it was handed (no AcquireTimeout, nothing lost).
    s = adm.Semaphore(1)
    assert s.try_acquire()
    task = asyncio.ensure_future(s.acquire(timeout=0.0))
    await asyncio.sleep(0)  # the task queues and arms its 0 s timer
    assert s.waiting == 1
    s.release()
    await asyncio.wait([task])
    assert task.result() is None
    assert (s.in_use, s.waiting) == (1, 0)
    s.release()
    assert s.stats().timed_out == 0


@pytest.mark.anyio
async def test_release_then_immediate_cancel_never_loses_the_permit() -> None:
    # The same race on every backend: on trio the woken task owns the permit and gives it
    # back when its cancellation arrives at the next checkpoint inside `async with`.
    s = adm.Semaphore(1)
    assert s.try_acquire()
    got: list[str] = []
    scope = anyio.CancelScope()

    async def a() -> None:
        with scope:
            async with s:
                got.append("a")
                await anyio.lowlevel.checkpoint()
                got.append("a-after-checkpoint")

    async def b() -> None:
        async with s:
            got.append("b")

    async with anyio.create_task_group() as tg:
        tg.start_soon(a)
        await wait_until(lambda: s.waiting == 1)
        tg.start_soon(b)
        await wait_until(lambda: s.waiting == 2)
        s.release()
        scope.cancel()
    assert "b" in got
    assert "a-after-checkpoint" not in got
    assert_idle(s)


@pytest.mark.anyio
async def test_cancelling_many_waiters_at_once() -> None:
    s = adm.Semaphore(2)
    assert s.try_acquire(2)

    async def take(n: int) -> None:
        await s.acquire(n)
        s.release(n)

    async with anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(take, 1 + i % 2)
        await wait_until(lambda: s.waiting == 20)
        tg.cancel_scope.cancel()
    assert (s.in_use, s.waiting) == (2, 0)
    assert s.stats().cancelled == 20
    s.release(2)
    assert_idle(s)


# ---------------------------------------------------------------------------------------------
# Timeouts


@pytest.mark.anyio
async def test_acquire_timeout_leaves_no_trace() -> None:
    s = adm.Semaphore(1)
    assert s.try_acquire()
    for timeout in (0.0, 0.01):
        with pytest.raises(adm.AcquireTimeout) as info:
            await s.acquire(timeout=timeout)
        assert isinstance(info.value, TimeoutError)
        assert isinstance(info.value, adm.AdmissionError)
        assert info.value.timeout == timeout
        assert info.value.needed is None  # a semaphore cannot know how long it would take
        assert (s.in_use, s.waiting) == (1, 0)
    stats = s.stats()
    assert (stats.admitted, stats.timed_out, stats.cancelled, stats.rejected) == (1, 2, 0, 0)
    s.release()
    assert_idle(s)
    await s.acquire(timeout=0.0)  # free: admitted at once, the timeout is irrelevant
    s.release()


@pytest.mark.anyio
async def test_acquire_within_timeout_succeeds() -> None:
    s = adm.Semaphore(1)
    assert s.try_acquire()
    done = anyio.Event()

    async def waiter() -> None:
        await s.acquire(timeout=3600.0)
        done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await wait_until(lambda: s.waiting == 1)
        s.release()
        await done.wait()
    assert (s.in_use, s.stats().timed_out) == (1, 0)
    s.release()
    assert_idle(s)


def test_timed_out_head_lets_the_next_waiter_through(virtual: Any) -> None:
    s = adm.Semaphore(2)
    events: list[tuple[str, float]] = []

    async def main() -> None:
        assert s.try_acquire(1)
        t0 = anyio.current_time()

        async def big() -> None:
            try:
                await s.acquire(2, timeout=5.0)
            except adm.AcquireTimeout:
                events.append(("big-timeout", anyio.current_time() - t0))

        async def small() -> None:
            await s.acquire(1)
            events.append(("small", anyio.current_time() - t0))

        async with anyio.create_task_group() as tg:
            tg.start_soon(big)
            await wait_until(lambda: s.waiting == 1)
            tg.start_soon(small)
            await wait_until(lambda: s.waiting == 2)

    virtual.run(main)
    assert [name for name, _ in events] == ["big-timeout", "small"]
    assert all(t == pytest.approx(5.0) for _, t in events)
    assert (s.in_use, s.waiting) == (2, 0)
    assert s.stats().timed_out == 1


def test_each_waiter_times_out_at_its_own_deadline_whatever_the_order(virtual: Any) -> None:
    # Timeouts of 5, 3, 5, 1 and none s, queued in that order; one is served at 2 s. On
    # asyncio the deadlines share one loop timer per semaphore: a shorter timeout queued
    # behind longer ones must still fire first, and a served waiter must not time out.
    s = adm.Semaphore(1)
    ends: dict[str, tuple[str, float]] = {}

    async def main() -> None:
        assert s.try_acquire()
        t0 = anyio.current_time()

        async def wait(name: str, seconds: float | None) -> None:
            try:
                await s.acquire(timeout=seconds)
            except adm.AcquireTimeout:
                ends[name] = ("timeout", anyio.current_time() - t0)
                return
            ends[name] = ("granted", anyio.current_time() - t0)
            await anyio.sleep(10)
            s.release()

        async with anyio.create_task_group() as tg:
            for i, (name, timeout) in enumerate(
                [("a", 5.0), ("b", 3.0), ("c", 5.0), ("d", 1.0), ("e", None)]
            ):
                tg.start_soon(wait, name, timeout)
                await wait_until(lambda i=i: s.waiting == i + 1)  # type: ignore[misc]
            await anyio.sleep(2)
            s.release()  # to "a", the head

    virtual.run(main)
    assert ends == {
        "d": ("timeout", pytest.approx(1.0)),
        "a": ("granted", pytest.approx(2.0)),
        "b": ("timeout", pytest.approx(3.0)),
        "c": ("timeout", pytest.approx(5.0)),
        "e": ("granted", pytest.approx(12.0)),
    }
    assert (s.in_use, s.waiting) == (0, 0)
    assert s.stats().timed_out == 3


@pytest.mark.anyio
async def test_bad_arguments_are_refused() -> None:
    s = adm.Semaphore(2)
    with pytest.raises(ValueError, match="timeout"):
        await s.acquire(timeout=-1)
    with pytest.raises(TypeError):
        await s.acquire(1.5)  # type: ignore[arg-type]
    with pytest.raises(adm.CapacityError):
        await s.acquire(3)  # can never fit: fails at once, never waits
    assert_idle(s)


# ---------------------------------------------------------------------------------------------
# close()


@pytest.mark.anyio
async def test_close_wakes_every_waiter_with_closed_and_held_permits_stay_valid() -> None:
    s = adm.Semaphore(3)
    assert s.try_acquire(2)
    outcomes: dict[str, str] = {}
    holder_inside = anyio.Event()
    holder_may_leave = anyio.Event()

    async def holder() -> None:
        async with s:
            holder_inside.set()
            await holder_may_leave.wait()
        outcomes["holder"] = "released"

    async def waiter(name: str, n: int) -> None:
        try:
            await s.acquire(n)
        except adm.Closed:
            outcomes[name] = "closed"
        else:  # pragma: no cover - the failure mode
            outcomes[name] = "admitted"

    async with anyio.create_task_group() as tg:
        tg.start_soon(holder)
        await holder_inside.wait()
        for i, (name, n) in enumerate((("three", 3), ("one", 1), ("two", 2))):
            tg.start_soon(waiter, name, n)
            await wait_until(lambda i=i: s.waiting == i + 1)
        s.close()
        await wait_until(lambda: len(outcomes) == 3)
        assert outcomes == {"three": "closed", "one": "closed", "two": "closed"}
        assert s.closed
        assert (s.in_use, s.waiting) == (3, 0), "close() must not revoke held permits"
        holder_may_leave.set()
    assert outcomes["holder"] == "released"
    assert s.in_use == 2
    s.release(2)
    assert s.in_use == 0

    with pytest.raises(adm.Closed):
        await s.acquire()
    with pytest.raises(adm.Closed):
        async with s:
            pass  # pragma: no cover
    with pytest.raises(adm.Closed):
        s.try_acquire()
    stats = s.stats()
    # The three woken waiters, and the three calls refused at once (issue 11, case 9).
    assert stats.rejected == 6
    assert stats.admitted == 2
    assert stats.admitted + stats.rejected + stats.timed_out + stats.cancelled == 8


# ---------------------------------------------------------------------------------------------
# Resizing


@pytest.mark.anyio
async def test_raising_the_limit_admits_waiters_and_lowering_it_refuses_too_large_ones() -> None:
    s = adm.Semaphore(2)
    assert s.try_acquire(2)
    outcomes: dict[str, Any] = {}

    async def take(name: str, n: int) -> None:
        try:
            await s.acquire(n)
        except adm.CapacityError as exc:
            outcomes[name] = exc
        else:
            outcomes[name] = "admitted"

    async with anyio.create_task_group() as tg:
        tg.start_soon(take, "two", 2)
        await wait_until(lambda: s.waiting == 1)
        tg.start_soon(take, "one", 1)
        await wait_until(lambda: s.waiting == 2)
        s.limit = 1  # "two" can never fit any more; "one" waits (in_use 2 > limit 1)
        await wait_until(lambda: "two" in outcomes)
        assert isinstance(outcomes["two"], adm.CapacityError)
        assert (s.in_use, s.available, s.waiting) == (2, 0, 1)
        s.release(1)  # in_use 1 == limit: still no room
        await yield_many()
        assert "one" not in outcomes
        s.limit = 2  # room for one more: granted by the resize itself
        await wait_until(lambda: "one" in outcomes)
    assert outcomes["one"] == "admitted"
    assert (s.in_use, s.limit, s.waiting) == (2, 2, 0)
    s.release(2)
    assert_idle(s)


# ---------------------------------------------------------------------------------------------
# Blocking calls in an event loop's thread (issue 11, case 16)


@pytest.mark.anyio
async def test_a_blocking_wait_in_the_loops_thread_is_refused() -> None:
    s = adm.Semaphore(1)
    with s:  # admitted at once: allowed anywhere, the loop is not blocked
        assert s.in_use == 1
        with pytest.raises(RuntimeError, match=r"async with semaphore"), s:
            pass  # pragma: no cover - the failure mode: this would block the loop forever
        with pytest.raises(RuntimeError, match=r"await semaphore\.acquire\(\)"):
            s.acquire_blocking(timeout=10)
        assert (s.in_use, s.waiting) == (1, 0)
    assert_idle(s)
    s.acquire_blocking()
    s.release()
    stats = s.stats()
    assert (stats.admitted, stats.rejected, stats.attempts) == (2, 2, 4)


def test_an_acquisition_object_is_reused_only_when_nobody_holds_it() -> None:
    # acquire() keeps its last object and reuses it once only that cache references it, so
    # `await s.acquire()` allocates nothing; an object somebody holds is never touched.
    s = adm.Semaphore(3)
    first = s.acquire()
    second = s.acquire(2)
    assert first is not second
    assert "n=1 not started" in repr(first)
    assert "n=2 not started" in repr(second)
    first.close()  # type: ignore[attr-defined]
    assert "n=1 done" in repr(first), "still held: not reused"
    # A forgotten acquisition keeps its semaphore alive until the next acquire() call.
    ref = weakref.ref(s)
    del first, second, s
    gc.collect()
    other = adm.Semaphore(1)
    other.acquire().close()  # type: ignore[attr-defined]
    gc.collect()
    assert ref() is None


def test_trio_is_recognised_in_every_thread_and_run() -> None:
    # The first step asks "is a trio task running in this thread?" through a per-thread
    # cache: a thread that runs asyncio, then trio, then asyncio again gets each one right.
    import threading

    import trio
    import trio.testing

    # One permit per thread: an acquisition never has to wait for the other thread's (the
    # asyncio check below is about the immediate path).
    s = adm.Semaphore(2)
    seen: list[str] = []

    async def on_trio() -> None:
        with trio.testing.assert_checkpoints():
            async with s:
                pass
        seen.append("trio")

    async def on_asyncio() -> None:
        loop = asyncio.get_running_loop()
        ran: list[int] = []
        loop.call_soon(ran.append, 1)
        async with s:
            pass
        assert ran == [], "the asyncio immediate path suspended"
        seen.append("asyncio")

    def worker() -> None:
        asyncio.run(on_asyncio())
        trio.run(on_trio)
        trio.run(on_trio)
        asyncio.run(on_asyncio())

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    trio.run(on_trio)
    assert sorted(seen) == ["asyncio"] * 4 + ["trio"] * 5
    assert_idle(s)
