"""Rate limiters in async code: fast path, FIFO reservations, refunds, fail-fast timeouts,
LoopClock under virtual time, and `all_of`.

Tests that wait for seconds or minutes run on the ``virtual`` runner (asyncio and trio under an
autojumping virtual clock, limiters on ``adm.LoopClock()``): they assert exact virtual times and
take no real time. The others run on asyncio, uvloop and trio through anyio.
"""

from __future__ import annotations

import inspect
import itertools
import sys
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from support import ASYNCIO_ONLY, wait_until

import admission as adm

Limiter = adm.TokenBucket | adm.SlidingWindow


def one_per(seconds: float, clock: Any = None, *, kind: str = "bucket") -> Limiter:
    """A limiter admitting 1 per ``seconds``, capacity 1, of either kind."""
    if kind == "bucket":
        return adm.TokenBucket(rate=1, per=seconds, burst=1, clock=clock)
    return adm.SlidingWindow(limit=1, window=seconds, clock=clock)


def decision(limiter: Limiter | adm.AllOf, cost: Any = 1) -> tuple[Any, ...]:
    d = limiter.peek(cost)
    return (d.allowed, d.remaining, d.retry_after, d.reset_after)


KINDS = pytest.mark.parametrize("kind", ["bucket", "window"])


# ---------------------------------------------------------------------------------------------
# Fast path


def limiter(kind: str, burst: int = 10) -> Limiter:
    """A limiter with ``burst`` free now and nothing more for an hour."""
    if kind == "bucket":
        return adm.TokenBucket(rate=burst, per=3600.0, burst=burst)
    return adm.SlidingWindow(limit=burst, window=3600.0)


@pytest.mark.anyio
@ASYNCIO_ONLY
@KINDS
async def test_immediate_admission_awaits_the_shared_ready_object_without_suspending(
    kind: str,
) -> None:
    lim = limiter(kind)
    other_ran = False

    async def other() -> None:
        nonlocal other_ran
        other_ran = True

    async with anyio.create_task_group() as tg:
        tg.start_soon(other)
        first = lim.acquire()
        second = lim.acquire(cost=2)
        assert type(first).__name__ == "Acquire"
        assert lim.stats().attempts == 0, "acquire() takes nothing until it is awaited"
        # The first step hands back the shared, already-completed Ready: no Task, no Future.
        first_it = first.__await__()
        second_it = second.__await__()
        assert first_it is second_it is lim.__aenter__()
        assert not inspect.iscoroutine(first_it)
        assert type(first_it).__name__ == "Ready"
        with pytest.raises(StopIteration):
            next(first_it)
        assert await lim.acquire() is None
        async with lim:
            pass
        assert not other_ran, "an immediate admission suspended the task"
    stats = lim.stats()
    assert (stats.admitted, stats.admitted_cost) == (5, 6)
    assert not lim.try_acquire(5)


@pytest.mark.anyio
@KINDS
async def test_an_acquisition_that_never_runs_takes_nothing(kind: str) -> None:
    lim = limiter(kind, burst=1)
    forgotten = lim.acquire()  # never awaited
    del forgotten
    assert lim.peek().allowed
    assert lim.stats().attempts == 0
    assert lim.try_acquire()


@pytest.mark.anyio
@ASYNCIO_ONLY
@KINDS
async def test_an_acquisition_cancelled_before_it_ran_takes_nothing(kind: str) -> None:
    import asyncio

    lim = limiter(kind, burst=1)
    task = asyncio.ensure_future(lim.acquire())
    task.cancel()  # before its first step
    with pytest.raises(asyncio.CancelledError):
        await task
    if sys.version_info < (3, 12):
        # wait_for with a zero timeout cancels the task before it ever runs.
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(lim.acquire(), timeout=0)
    assert lim.stats().attempts == 0
    assert lim.peek().allowed
    # create_task accepts an acquisition, whether it is admitted at once or must wait.
    await asyncio.create_task(lim.acquire())
    waiting = asyncio.create_task(lim.acquire())
    await wait_until(lambda: lim.stats().waiting == 1, "the second one waits")
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    stats = lim.stats()
    assert (stats.admitted, stats.cancelled, stats.attempts, stats.waiting) == (1, 1, 2, 0)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["trio"])
@KINDS
async def test_every_rate_acquisition_is_a_checkpoint_on_trio(kind: str) -> None:
    import trio
    import trio.testing

    lim = limiter(kind, burst=3)
    with trio.testing.assert_checkpoints():
        await lim.acquire()
    with trio.testing.assert_checkpoints():
        async with lim:
            pass
    # Already cancelled: Cancelled is raised and nothing is taken.
    reached = []
    with trio.CancelScope() as scope:
        scope.cancel()
        await lim.acquire()
        reached.append("acquire")  # pragma: no cover - the failure mode
    with trio.CancelScope() as scope:
        scope.cancel()
        async with lim:
            reached.append("async with")  # pragma: no cover - the failure mode
    assert reached == []
    stats = lim.stats()
    assert (stats.admitted, stats.attempts) == (2, 2), "the cancelled calls never asked"
    assert lim.try_acquire()


@pytest.mark.anyio
@KINDS
async def test_cost_that_can_never_fit_fails_at_once(kind: str) -> None:
    lim = one_per(3600.0, kind=kind)
    with pytest.raises(adm.CapacityError):
        await lim.acquire(cost=2)
    assert lim.try_acquire()  # nothing was charged


@pytest.mark.anyio
async def test_manual_clock_waits_advance_the_clock_instead_of_sleeping() -> None:
    clock = adm.testing.ManualClock()
    b = adm.TokenBucket(rate=1, per=3600.0, burst=1, clock=clock)
    assert b.try_acquire()
    await b.acquire()  # would take an hour of real time on the monotonic clock
    assert clock.now() == pytest.approx(3600.0)
    assert b.stats().admitted == 2


# ---------------------------------------------------------------------------------------------
# FIFO


@KINDS
def test_large_request_issued_first_is_served_before_small_ones(virtual: Any, kind: str) -> None:
    admitted: list[tuple[str, float]] = []
    barged: list[bool] = []

    async def main() -> None:
        clock = adm.LoopClock()
        lim: Limiter
        if kind == "bucket":
            lim = adm.TokenBucket(rate=10, per=1.0, burst=10, clock=clock)
        else:
            lim = adm.SlidingWindow(limit=10, window=1.0, clock=clock)
        t0 = anyio.current_time()
        assert lim.try_acquire(10)

        async def take(name: str, cost: int) -> None:
            await lim.acquire(cost)
            admitted.append((name, anyio.current_time() - t0))

        async with anyio.create_task_group() as tg:
            tg.start_soon(take, "big", 10)
            await wait_until(lambda: lim.peek(1).retry_after > 1.0)
            for i in range(3):
                tg.start_soon(take, f"small{i}", 1)
                await anyio.lowlevel.checkpoint()
            await anyio.sleep(0.5)
            # Five tokens have refilled, but they are the big request's: nobody may barge.
            barged.append(lim.try_acquire())

    virtual.run(main)
    assert barged == [False]
    assert admitted[0] == ("big", pytest.approx(1.0))
    assert sorted(name for name, _ in admitted[1:]) == ["small0", "small1", "small2"]
    if kind == "bucket":
        # One token every 0.1 s after the big request, in arrival order.
        assert admitted[1:] == [
            ("small0", pytest.approx(1.1)),
            ("small1", pytest.approx(1.2)),
            ("small2", pytest.approx(1.3)),
        ]
    else:
        # The window holds the big request's 10 until 2.0.
        assert all(t == pytest.approx(2.0) for _, t in admitted[1:])


def test_waiters_are_admitted_in_arrival_order_at_the_rate(virtual: Any) -> None:
    arrivals: list[int] = []
    admitted: list[tuple[int, float]] = []

    async def main() -> None:
        b = adm.TokenBucket(rate=10, per=1.0, burst=1, clock=adm.LoopClock())
        t0 = anyio.current_time()

        async def take(i: int) -> None:
            arrivals.append(i)  # the reservation is made synchronously right after this
            await b.acquire()
            admitted.append((i, anyio.current_time() - t0))

        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(take, i)

    virtual.run(main)
    assert [i for i, _ in admitted] == arrivals  # FIFO (trio starts tasks in random order)
    assert [t for _, t in admitted] == [pytest.approx(k * 0.1) for k in range(20)]


# ---------------------------------------------------------------------------------------------
# Cancellation refunds


@pytest.mark.anyio
@KINDS
async def test_cancelled_waiter_reservation_is_refunded(kind: str) -> None:
    # A real clock and a one-hour period: the waiter certainly still waits when cancelled.
    lim = one_per(3600.0, kind=kind)
    assert lim.try_acquire()
    before = lim.peek().retry_after
    assert before == pytest.approx(3600.0, abs=5.0)
    scope = anyio.CancelScope()
    finished = anyio.Event()

    async def waiter() -> None:
        try:
            with scope:
                await lim.acquire()
        finally:
            finished.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await wait_until(lambda: lim.peek().retry_after > before + 1000, "the reservation")
        scope.cancel()
        await finished.wait()
    assert lim.peek().retry_after == pytest.approx(before, abs=5.0), "not refunded"
    stats = lim.stats()
    assert (stats.admitted, stats.cancelled, stats.timed_out, stats.rejected) == (1, 1, 0, 0)


@KINDS
@pytest.mark.parametrize("follower", ["waiter", "try_acquire"])
def test_next_waiter_and_try_acquire_see_a_cancelled_reservation_given_back(
    virtual: Any, kind: str, follower: str
) -> None:
    # One per 10 s, capacity 1, drained at 0. A waits for the slot at 10 and is cancelled at
    # 1. With the refund, the slot at 10 is free again: a later waiter gets it (not 20), and
    # a try_acquire at 10 succeeds.
    got: dict[str, Any] = {}

    async def main() -> None:
        lim = one_per(10.0, adm.LoopClock(), kind=kind)
        t0 = anyio.current_time()
        assert lim.try_acquire()
        scope = anyio.CancelScope()

        async def a() -> None:
            with scope:
                await lim.acquire()  # due at 10
                got["a"] = anyio.current_time() - t0  # pragma: no cover

        async with anyio.create_task_group() as tg:
            tg.start_soon(a)
            await anyio.sleep(1.0)
            scope.cancel()
            await anyio.sleep(1.0)
            if follower == "waiter":
                await lim.acquire()
                got["b"] = anyio.current_time() - t0
            else:
                await anyio.sleep(8.0)
                got["try_at_10"] = lim.try_acquire()

    virtual.run(main)
    assert "a" not in got
    if follower == "waiter":
        assert got["b"] == pytest.approx(10.0)
    else:
        assert got["try_at_10"] is True


@pytest.mark.parametrize("kind", ["bucket", "window"])
def test_cancelling_a_waiter_in_the_middle_of_the_queue_keeps_the_rate_bound(
    virtual: Any, kind: str
) -> None:
    # Capacity 1, one per 100 s: any two admissions must be >= 100 s apart, whatever waiters
    # are cancelled. A (due 100) and B (due 200) wait; A is cancelled; C arrives.
    times: dict[str, float] = {}

    async def main() -> None:
        lim = one_per(100.0, adm.LoopClock(), kind=kind)
        t0 = anyio.current_time()
        assert lim.try_acquire()
        times["first"] = 0.0
        scope = anyio.CancelScope()

        async def take(name: str) -> None:
            await lim.acquire()
            times[name] = anyio.current_time() - t0

        async def a() -> None:
            with scope:
                await take("A")

        async with anyio.create_task_group() as tg:
            tg.start_soon(a)
            await anyio.sleep(1.0)
            tg.start_soon(take, "B")
            await anyio.sleep(1.0)
            scope.cancel()
            await anyio.sleep(1.0)
            tg.start_soon(take, "C")

    virtual.run(main)
    assert "A" not in times
    assert set(times) == {"first", "B", "C"}
    for (n1, t1), (n2, t2) in itertools.combinations(times.items(), 2):
        assert abs(t1 - t2) >= 100.0 - 1e-6, (
            f"{n1} at {t1} s and {n2} at {t2} s: two admissions within one emission interval "
            f"of a capacity-1 limiter ({times})"
        )


# ---------------------------------------------------------------------------------------------
# Timeouts: fail at once when they cannot be met


@KINDS
def test_timeout_that_cannot_be_met_fails_at_once(virtual: Any, kind: str) -> None:
    got: dict[str, Any] = {}

    async def main() -> None:
        lim = one_per(60.0, adm.LoopClock(), kind=kind)
        assert lim.try_acquire()
        t0 = anyio.current_time()
        before = decision(lim)
        for timeout in (5.0, 0.0):
            with pytest.raises(adm.AcquireTimeout) as info:
                await lim.acquire(timeout=timeout)
            got[timeout] = info.value
        got["elapsed"] = anyio.current_time() - t0
        got["decision_unchanged"] = decision(lim) == before
        await lim.acquire(timeout=60.0)  # exactly enough: admitted at 60
        got["admitted_at"] = anyio.current_time() - t0
        got["stats"] = lim.stats()

    virtual.run(main)
    assert got["elapsed"] == 0.0, "it slept before failing"
    for timeout in (5.0, 0.0):
        exc = got[timeout]
        assert isinstance(exc, TimeoutError)
        assert exc.timeout == timeout
        assert exc.needed == pytest.approx(60.0)
        assert "60.000 s" in str(exc)
    assert got["decision_unchanged"], "a failed reservation wrote state"
    assert got["admitted_at"] == pytest.approx(60.0)
    stats = got["stats"]
    assert (stats.admitted, stats.timed_out, stats.cancelled, stats.rejected) == (2, 2, 0, 0)


@pytest.mark.anyio
@KINDS
async def test_timeout_error_on_every_backend(kind: str) -> None:
    lim = one_per(3600.0, kind=kind)
    assert lim.try_acquire()
    with pytest.raises(TimeoutError) as info:
        await lim.acquire(timeout=1.0)
    assert isinstance(info.value, adm.AcquireTimeout)
    assert info.value.needed == pytest.approx(3600.0, abs=5.0)
    with pytest.raises(ValueError, match="timeout"):
        await lim.acquire(timeout=-1.0)
    assert lim.stats().timed_out == 1


# ---------------------------------------------------------------------------------------------
# LoopClock


@KINDS
def test_loop_clock_follows_virtual_time(virtual: Any, kind: str) -> None:
    got: dict[str, float] = {}

    async def main() -> None:
        lim = one_per(60.0, adm.LoopClock(), kind=kind)
        t0 = anyio.current_time()
        assert adm.LoopClock().now() == pytest.approx(t0)
        for _ in range(5):
            await lim.acquire()
        got["elapsed"] = anyio.current_time() - t0

    virtual.run(main)
    assert got["elapsed"] >= 239.0
    assert got["elapsed"] == pytest.approx(240.0)


def test_loop_clock_outside_a_running_loop_raises() -> None:
    clock = adm.LoopClock()
    with pytest.raises(RuntimeError, match="running event loop"):
        clock.now()
    b = adm.TokenBucket(rate=1, clock=clock)
    with pytest.raises(RuntimeError, match="running event loop"):
        b.try_acquire()
    w = adm.SlidingWindow(limit=1, window=1.0, clock=clock)
    with pytest.raises(RuntimeError, match="running event loop"):
        w.peek()


@pytest.mark.anyio
async def test_loop_clock_inside_every_backend() -> None:
    b = adm.TokenBucket(rate=1, per=3600.0, clock=adm.LoopClock())
    assert adm.LoopClock().now() == pytest.approx(anyio.current_time())
    assert b.try_acquire()
    assert not b.try_acquire()
    with pytest.raises(adm.AcquireTimeout) as info:
        await b.acquire(timeout=1.0)
    assert info.value.needed == pytest.approx(3600.0, abs=5.0)


def test_counters_add_up_over_every_outcome(virtual: Any) -> None:
    got: dict[str, Any] = {}

    async def main() -> None:
        b = adm.TokenBucket(rate=1, per=1.0, burst=2, clock=adm.LoopClock())
        attempts = 0
        async with anyio.create_task_group() as tg:
            for _ in range(10):
                attempts += 1
                b.try_acquire()
            for _ in range(3):
                attempts += 1
                with pytest.raises(adm.AcquireTimeout):
                    await b.acquire(timeout=0.0)
            scopes = [anyio.CancelScope() for _ in range(4)]

            async def waiter(scope: anyio.CancelScope) -> None:
                with scope:
                    await b.acquire()

            for scope in scopes:
                attempts += 1
                tg.start_soon(waiter, scope)
            await anyio.sleep(0.5)
            scopes[1].cancel()
            scopes[3].cancel()
        got["attempts"] = attempts
        got["stats"] = b.stats()

    virtual.run(main)
    stats = got["stats"]
    assert (stats.admitted, stats.rejected, stats.timed_out, stats.cancelled) == (4, 8, 3, 2)
    assert stats.attempts == got["attempts"]


# ---------------------------------------------------------------------------------------------
# all_of


def test_all_of_refusal_charges_no_limiter() -> None:
    clock = adm.testing.ManualClock()
    rpm = adm.TokenBucket(rate=60, per=60.0, burst=5, clock=clock)
    tpm = adm.TokenBucket(rate=1_000, per=60.0, burst=1_000, clock=clock)
    both = adm.all_of(rpm, tpm)
    assert both.try_acquire(costs=(1, 900))
    before = (decision(rpm), decision(tpm, 100), rpm.stats(), tpm.stats())

    assert not both.try_acquire(costs=(1, 200))  # tpm refuses: rpm must not be charged
    assert (decision(rpm), decision(tpm, 100)) == before[:2]
    for lim, old in ((rpm, before[2]), (tpm, before[3])):
        new = lim.stats()
        assert (new.admitted, new.admitted_cost) == (old.admitted, old.admitted_cost)
        assert new.cancelled == old.cancelled

    for _ in range(4):
        assert rpm.try_acquire()
    before = (decision(rpm), decision(tpm, 100))
    assert not both.try_acquire(costs=(1, 1))  # rpm refuses first: tpm untouched
    assert (decision(rpm), decision(tpm, 100)) == before
    assert tpm.stats().admitted_cost == 900


def test_all_of_capacity_error_charges_and_counts_nothing_on_the_other_limiters() -> None:
    clock = adm.testing.ManualClock()
    rpm = adm.TokenBucket(rate=60, per=60.0, burst=5, clock=clock)
    tpm = adm.TokenBucket(rate=1_000, per=60.0, burst=1_000, clock=clock)
    both = adm.all_of(rpm, tpm)
    before = (decision(rpm), decision(tpm), rpm.stats(), tpm.stats())
    with pytest.raises(adm.CapacityError):
        both.try_acquire(costs=(1, 5_000))
    assert (decision(rpm), decision(tpm)) == before[:2]
    # Not a waiting request withdrawn by cancellation: it must not be counted as one. The
    # limiter that raised counts the call as rejected (refused at call time); rpm, whose
    # take was undone, counts nothing.
    assert rpm.stats() == before[2], "a CapacityError was counted on rpm"
    after = tpm.stats()
    assert (after.rejected, after.attempts) == (before[3].rejected + 1, before[3].attempts + 1)


def test_all_of_acquire_waits_for_the_latest_limiter(virtual: Any) -> None:
    got: dict[str, Any] = {}

    async def main() -> None:
        clock = adm.LoopClock()
        rpm = adm.TokenBucket(rate=1, per=10.0, burst=1, clock=clock)
        tpm = adm.TokenBucket(rate=100, per=10.0, burst=100, clock=clock)  # 10 tokens/s
        both = adm.all_of(rpm, tpm)
        t0 = anyio.current_time()
        assert tpm.try_acquire(100)
        await both.acquire(costs=(1, 50))  # rpm: now; tpm: in 5 s
        got["first"] = anyio.current_time() - t0
        await both.acquire(costs=(1, 1))  # rpm: at 10; tpm: at 5.1
        got["second"] = anyio.current_time() - t0
        with pytest.raises(adm.AcquireTimeout) as info:
            await both.acquire(costs=(1, 1), timeout=5.0)  # rpm needs 10 s: fail at once
        got["timeout"] = info.value
        got["after_timeout"] = anyio.current_time() - t0
        got["stats"] = (rpm.stats(), tpm.stats())

    virtual.run(main)
    assert got["first"] == pytest.approx(5.0)
    assert got["second"] == pytest.approx(10.0)
    assert got["after_timeout"] == got["second"], "it waited before failing"
    assert got["timeout"].needed == pytest.approx(10.0)
    rpm_stats, tpm_stats = got["stats"]
    assert (rpm_stats.admitted, tpm_stats.admitted) == (2, 3)
    assert tpm_stats.admitted_cost == 151


@pytest.mark.anyio
async def test_all_of_cancelled_acquire_refunds_every_limiter() -> None:
    # The real clock: the waiter really waits (an hour) until it is cancelled. (On a
    # ManualClock all_of would advance the clock instead of waiting, like a single limiter.)
    rpm = adm.TokenBucket(rate=1, per=3600.0, burst=1)
    tpm = adm.TokenBucket(rate=1_000, per=60.0, burst=1_000)
    both = adm.all_of(rpm, tpm)
    assert rpm.try_acquire()
    rpm_retry_before = rpm.peek().retry_after
    scope = anyio.CancelScope()
    finished = anyio.Event()

    async def waiter() -> None:
        try:
            with scope:
                await both.acquire(costs=(1, 10))
        finally:
            finished.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await wait_until(lambda: not tpm.peek(1_000).allowed, "the reservations")
        assert rpm.peek().retry_after == pytest.approx(7200.0, abs=60.0)  # (real time passes)
        scope.cancel()
        await finished.wait()
    # Both reservations were refunded: rpm is back to one wait of (nearly) an hour, tpm full.
    assert rpm.peek().retry_after == pytest.approx(rpm_retry_before, abs=60.0)
    assert rpm.peek().retry_after < 3600.0 + 1.0
    assert tpm.peek(1_000).allowed
    assert (rpm.stats().cancelled, tpm.stats().cancelled) == (1, 1)
    assert (rpm.stats().admitted, tpm.stats().admitted) == (1, 0)


@pytest.mark.anyio
async def test_all_of_waits_on_manual_clocks_advance_them_instead_of_sleeping() -> None:
    # Like a single limiter on a ManualClock (see the test above), all_of must not sleep in
    # real time for virtual waits: it should advance the manual clock.
    clock = adm.testing.ManualClock()
    b = adm.TokenBucket(rate=1, per=0.2, burst=1, clock=clock)
    assert b.try_acquire()
    await adm.all_of(b).acquire()
    assert clock.now() == pytest.approx(0.2)


def test_all_of_blocking_waits_on_manual_clocks_advance_them_instead_of_sleeping() -> None:
    clock = adm.testing.ManualClock()
    b = adm.TokenBucket(rate=1, per=0.2, burst=1, clock=clock)
    assert b.try_acquire()
    adm.all_of(b).acquire_blocking()
    assert clock.now() == pytest.approx(0.2)


def test_all_of_argument_checks() -> None:
    b = adm.TokenBucket(rate=1)
    with pytest.raises(ValueError, match="at least one"):
        adm.all_of()
    with pytest.raises(TypeError):
        adm.all_of(b, adm.Semaphore(1))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="one entry per limiter"):
        adm.all_of(b, b).try_acquire(costs=(1,))


@pytest.mark.anyio
async def test_an_all_of_acquisition_takes_nothing_until_it_runs() -> None:
    rpm, tpm = limiter("bucket", burst=2), limiter("bucket", burst=2000)
    both = adm.all_of(rpm, tpm)
    forgotten = both.acquire(costs=(1, 1000))  # never awaited
    del forgotten
    assert (rpm.stats().attempts, tpm.stats().attempts) == (0, 0)
    await both.acquire(costs=(1, 1000))
    async with both:
        pass
    assert (rpm.stats().admitted, tpm.stats().admitted_cost) == (2, 1001)
    assert not both.try_acquire(costs=(1, 1))


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_every_all_of_acquisition_is_a_checkpoint_on_trio() -> None:
    import trio
    import trio.testing

    both = adm.all_of(limiter("bucket"), limiter("window"))
    with trio.testing.assert_checkpoints():
        await both.acquire()
    with trio.testing.assert_checkpoints():
        async with both:
            pass
    with trio.CancelScope() as scope:
        scope.cancel()
        await both.acquire()
    assert [lim.stats().attempts for lim in both.limiters] == [2, 2]
