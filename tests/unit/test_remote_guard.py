"""The guard around each round trip of a limiter in a network store (`remote._Guarded`): what
the caller's task waits on (`remote._Waiter`) and the deadlines (`remote._Deadlines`), on
each kind of task a loop runs (asyncio's C task, its pure-Python task, uvloop's loop).

No wall-clock assertions: turns of the loop and timers are counted."""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

import admission as adm
from admission.stores.remote import LATE_REPLY_WITHIN, _Guarded

TASK_KINDS = ["C task", "Python task", "uvloop"]


def run_on(kind: str, main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Runs ``main()`` as a task of ``kind``."""
    if kind == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        uvloop.run(main())
        return

    async def spawn() -> None:
        loop = asyncio.get_running_loop()
        if kind == "Python task":
            py_task: Any = asyncio.tasks._PyTask  # type: ignore[attr-defined]
            loop.set_task_factory(lambda loop, coro, **kw: py_task(coro, loop=loop, **kw))
        task = loop.create_task(main())
        assert (type(task) is asyncio.tasks._CTask) == (kind == "C task")  # type: ignore[attr-defined]
        await task

    asyncio.run(spawn())


class Turns:
    """Counts the loop's turns: a callback that runs once per turn and schedules itself."""

    def __init__(self) -> None:
        self.count = 0
        self._loop = asyncio.get_running_loop()
        self._loop.call_soon(self._tick)
        self._stopped = False

    def _tick(self) -> None:
        self.count += 1
        if not self._stopped:
            self._loop.call_soon(self._tick)

    def stop(self) -> None:
        self._stopped = True


@pytest.mark.parametrize("kind", TASK_KINDS)
def test_the_caller_resumes_in_the_turn_the_drivers_future_completes(kind: str) -> None:
    """No turn of the loop between the driver's reply and the caller: the guard costs the
    round trip no extra turn (an asyncio.Future in between would cost one)."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        turns = Turns()
        reply: asyncio.Future[int] = loop.create_future()
        completed_in: list[int] = []
        # Runs in the turn the reply's callbacks run, just before the guard's own.
        reply.add_done_callback(lambda _: completed_in.append(turns.count))
        loop.call_later(0.01, reply.set_result, 7)

        async def driver() -> int:
            return await reply

        for _ in range(2):  # with a deadline and without
            assert await _Guarded(driver(), pytest.fail, timeout=5.0, expired=pytest.fail) == 7
            assert completed_in == [turns.count]
            reply = loop.create_future()
            completed_in.clear()
            reply.add_done_callback(lambda _: completed_in.append(turns.count))
            loop.call_later(0.01, reply.set_result, 7)
            assert await _Guarded(driver(), pytest.fail) == 7
            assert completed_in == [turns.count]
        turns.stop()

    run_on(kind, main)


@pytest.mark.parametrize("kind", TASK_KINDS)
def test_a_cancelled_caller_gets_its_message_and_the_call_hands_over_its_reply(kind: str) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[int] = loop.create_future()
        late: list[int] = []

        async def driver() -> int:
            return await reply

        async def call() -> int:
            return await _Guarded(driver(), late.append)

        caller = loop.create_task(call())
        await asyncio.sleep(0)  # waiting on the guard's waiter now
        assert caller.cancel("given up")
        with pytest.raises(asyncio.CancelledError) as raised:
            await caller
        if sys.version_info >= (3, 11):  # 3.10's task drops a waiter's message
            assert raised.value.args == ("given up",)
        assert not reply.done()  # the driver's future was not cancelled
        reply.set_result(3)
        for _ in range(5):
            await asyncio.sleep(0)
        assert late == [3]

    run_on(kind, main)


@pytest.mark.parametrize("later", [1, 2, 3], ids=lambda n: f"completed {n} callbacks later")
@pytest.mark.parametrize("kind", TASK_KINDS)
def test_a_call_taken_over_never_resumes_its_driver_before_its_futures_other_callbacks(
    kind: str, later: int
) -> None:
    """The caller gives up (cancelled) and the driver's future completes a few callbacks
    later, as a socket's readiness comes in the next turn's I/O, after what the turn before
    scheduled: the task the call goes on in (one more on 3.11, whose `asyncio.wait_for`
    runs the call in a task of its own) then resumed the driver in a step scheduled before
    the future's other callbacks. asyncio's sock_connect removes its writer in such a
    callback: the driver, resumed first, closed the refused socket, another socket took its
    descriptor and registered it, and the late callback removed that registration, so the
    other connection, to a healthy Redis Cluster node, never completed
    (test_a_node_killed_mid_load, 5 failures in 12 runs under PYTHONASYNCIODEBUG=1)."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        order: list[object] = []
        reply: asyncio.Future[int] = loop.create_future()
        reply.add_done_callback(lambda _: order.append("the future's callback"))

        async def driver() -> int:
            await reply
            order.append("the driver")
            return 1

        async def call() -> int:
            return await _Guarded(driver(), order.append)

        def complete(after: int) -> None:
            if after:
                loop.call_soon(complete, after - 1)
            else:
                reply.set_result(1)

        caller = loop.create_task(call())
        await asyncio.sleep(0)  # waiting on the guard's waiter now
        caller.cancel()
        loop.call_soon(complete, later - 1)
        with pytest.raises(asyncio.CancelledError):
            await caller
        for _ in range(8):
            await asyncio.sleep(0)
        assert order == ["the future's callback", "the driver", 1]

    run_on(kind, main)


class CountingLoop(asyncio.SelectorEventLoop):
    """Counts the timers scheduled on it."""

    timers = 0

    def call_at(self, *args: Any, **kwargs: Any) -> asyncio.TimerHandle:
        self.timers += 1
        return super().call_at(*args, **kwargs)


def test_calls_sharing_a_timeout_share_one_timer_and_each_expires_at_its_own_deadline() -> None:
    loop = CountingLoop()
    late: list[int] = []

    def expired() -> BaseException:
        return adm.StoreUnavailable("memory", "late")

    async def main() -> None:
        # 200 quick calls: each waits on a future completed in the next turn.
        async def quick(n: int) -> int:
            reply = loop.create_future()
            loop.call_soon(reply.set_result, n)
            return await reply

        before = loop.timers
        for n in range(200):
            assert await _Guarded(quick(n), pytest.fail, timeout=30.0, expired=expired) == n
        assert loop.timers - before == 1  # one timer for all of them, not one each

        # Three slow calls started one after the other, the second answered at once: the
        # first and the third fail at their deadlines and hand their replies over later.
        replies = [loop.create_future() for _ in range(3)]

        async def slow(i: int) -> int:
            return await replies[i]

        async def call(i: int) -> int:
            return await _Guarded(slow(i), late.append, timeout=0.05, expired=expired)

        calls = []
        for i in range(3):
            calls.append(loop.create_task(call(i)))
            await asyncio.sleep(0.01)
        replies[1].set_result(1)
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert results[1] == 1
        assert isinstance(results[0], adm.StoreUnavailable)
        assert isinstance(results[2], adm.StoreUnavailable)
        replies[0].set_result(0)
        replies[2].set_result(2)
        for _ in range(5):
            await asyncio.sleep(0)
        assert sorted(late) == [0, 2]

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


def _expired() -> BaseException:
    return adm.StoreUnavailable("memory", "late")


def test_a_call_started_as_the_last_one_expired_gets_its_whole_timeout() -> None:
    """A caller whose call expired starts the next at once, in the turn the deadline fired
    (the deadline wakes it): each call still fails at its own deadline. (That new call's
    timer and the firing one's made two; the spare fired a timeout early, taking the
    next call's deadline for its own: the third call failed at once.)"""
    from support import VirtualTimeLoop  # type: ignore[import-not-found]

    loop = VirtualTimeLoop()
    failed_after: list[float] = []

    async def never() -> None:
        await loop.create_future()

    async def main() -> None:
        for _ in range(5):
            start = loop.time()
            with pytest.raises(adm.StoreUnavailable):
                await _Guarded(never(), pytest.fail, timeout=0.1, expired=_expired)
            failed_after.append(loop.time() - start)
        await asyncio.sleep(LATE_REPLY_WITHIN + 1)  # the calls taken over end

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    assert failed_after == pytest.approx([0.1] * 5)


def test_a_deadline_never_resumes_the_driver_before_its_futures_other_callbacks() -> None:
    """The driver's future completes in the turn its deadline fires: the driver resumes
    after the future's other callbacks, as a task would have it (asyncio's sock_connect
    relies on it: its callback after the connect must run before the transport is made,
    or it fails, logged, on the transport's file descriptor)."""
    from support import VirtualTimeLoop

    loop = VirtualTimeLoop()
    order: list[str] = []

    async def driver() -> int:
        reply = loop.create_future()
        reply.add_done_callback(lambda _: order.append("the future's callback"))
        loop.call_at(loop.time() + 0.1, reply.set_result, 1)  # the guard's deadline too
        await reply
        order.append("the driver")
        return 1

    async def main() -> None:
        assert await _Guarded(driver(), pytest.fail, timeout=0.1, expired=_expired) == 1

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    assert order == ["the future's callback", "the driver"]


def test_a_call_taken_over_then_cancelled_is_cancelled_in_its_driver_while_the_loop_runs() -> None:
    """The loop ends (asyncio.run cancels what is left) while a call that outlived its
    deadline goes on: its driver is cancelled then, and cleans up in the loop (redis-py's
    disconnect needs one), not when the garbage collector closes it after the loop is gone
    ("Exception ignored ... no running event loop")."""
    cleaned_up: list[str] = []

    async def driver() -> None:
        try:
            await asyncio.get_running_loop().create_future()
        finally:
            try:
                asyncio.get_running_loop()
                cleaned_up.append("in the loop")
            except RuntimeError:
                cleaned_up.append("after the loop")

    async def main() -> None:
        with pytest.raises(adm.StoreUnavailable):
            await _Guarded(driver(), pytest.fail, timeout=0.01, expired=_expired)
        await asyncio.sleep(0.01)  # the call goes on in a task of its own

    asyncio.run(main())
    gc.collect()
    assert cleaned_up == ["in the loop"]


def test_an_error_the_task_throws_in_goes_to_the_driver_at_once() -> None:
    """The driver awaits a future of another event loop (a store first used on another
    loop): the task throws RuntimeError in place of waiting. The guard passes it to the
    driver, which fails the call with it; held until the future completed (never), the
    task was handed the same wait again and threw again: a busy loop, forever. (Run in a
    thread of its own, so that a regression fails here rather than hangs.)"""
    other = asyncio.new_event_loop()
    outcome: list[BaseException] = []

    async def driver() -> int:
        return await other.create_future()  # type: ignore[no-any-return]

    async def main() -> None:
        try:
            await _Guarded(driver(), pytest.fail, timeout=0.1, expired=_expired)
        except BaseException as error:
            outcome.append(error)

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    thread.join(10)
    other.close()
    assert not thread.is_alive()
    assert len(outcome) == 1
    assert isinstance(outcome[0], RuntimeError)
    assert "different loop" in str(outcome[0])


@pytest.mark.parametrize("kind", TASK_KINDS)
def test_a_caller_that_calls_again_from_its_expiry_leaves_the_others_deadlines_alone(
    kind: str,
) -> None:
    """A caller whose call expires resumes at once, inside the timer's callback, and may
    start its next call there (watched by the same `_Deadlines`). Each of two callers
    doing so, their calls a little apart: every call still expires at its own deadline,
    never before (the timer scheduled from inside the callback once made a second one, and
    the older one fired with the newer one's deadline, expiring calls just started)."""
    timeout = 0.05

    def expired() -> BaseException:
        return adm.StoreUnavailable("memory", "late")

    lasted: list[float] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()

        async def no_answer() -> None:
            await loop.create_future()

        async def caller() -> None:
            for _ in range(6):
                start = loop.time()
                with pytest.raises(adm.StoreUnavailable):
                    await _Guarded(no_answer(), pytest.fail, timeout=timeout, expired=expired)
                lasted.append(loop.time() - start)

        first = loop.create_task(caller())
        await asyncio.sleep(timeout / 5)
        await asyncio.gather(first, caller())

    run_on(kind, main)
    assert len(lasted) == 12
    # Never early (a timer may run up to the clock's resolution early: far less than this).
    assert min(lasted) > timeout * 0.9, lasted


@pytest.mark.parametrize(
    ("thread", "answered_at", "outcome"),
    [
        # Busy 0.5 s with its own work from 0.01: a reply at 0.56 came within the 0.1 s it
        # waited, and one that never comes fails after that 0.1 s of waiting, at 0.6.
        ("busy", 0.56, 1),
        ("busy", None, 0.6),
        # Blocked 0.5 s (asleep, or waiting for the GIL: no busy time of its own): the
        # store had the whole time to answer, and failed at the first turn after it.
        ("blocked", 0.56, 0.51),
    ],
)
def test_a_deadline_discounts_the_time_its_loop_was_busy(
    thread: str, answered_at: float | None, outcome: float
) -> None:
    """A loop busy with its own work (thousands of callers resumed at once) cannot read a
    reply the store sent in time: that time does not count against the store (20,000
    callers at once on a cold Redis store failed 1,000 to 17,000 of them, the breaker
    opened by the loop's own lag)."""
    from support import VirtualTimeLoop

    loop = VirtualTimeLoop()
    late: list[int] = []

    async def driver() -> int:
        reply = loop.create_future()
        if answered_at is not None:
            loop.call_at(answered_at, reply.set_result, 1)
        return await reply

    def occupied() -> None:
        if thread == "busy":
            loop.spend(0.5)
        else:
            loop._virtual_now += 0.5  # type: ignore[attr-defined]

    async def main() -> int | float:
        loop.call_at(0.01, occupied)
        try:
            return await _Guarded(driver(), late.append, timeout=0.1, expired=_expired)
        except adm.StoreUnavailable:
            return loop.time()

    try:
        assert loop.run_until_complete(main()) == pytest.approx(outcome)
        loop.run_until_complete(asyncio.sleep(LATE_REPLY_WITHIN + 1))  # the taken over end
    finally:
        loop.close()
    # A reply after the call failed is the late one, handed over (it was given to
    # pytest.fail, whose TypeError on an int went unseen in the background task).
    answered_late = answered_at is not None and outcome != 1  # (else the time it failed)
    assert late == ([1] if answered_late else [])


def test_a_loop_busy_for_ever_still_fails_a_call_after_the_grace() -> None:
    """The discount has a bound: a loop never idle fails an unanswered call
    `BUSY_LOOP_GRACE` timeouts after its start (a dead store under a saturated process
    still opens the breaker)."""
    from support import VirtualTimeLoop

    from admission.stores.remote import BUSY_LOOP_GRACE

    loop = VirtualTimeLoop()
    working = True

    def work() -> None:
        loop.spend(0.003)
        if working and loop.time() < 5:  # (a test of a loop without the bound ends)
            loop.call_soon(work)

    async def never() -> None:
        await loop.create_future()

    async def main() -> float:
        nonlocal working
        loop.call_soon(work)
        start = loop.time()
        with pytest.raises(adm.StoreUnavailable):
            await _Guarded(never(), pytest.fail, timeout=0.1, expired=_expired)
        working = False
        return loop.time() - start

    try:
        lasted = loop.run_until_complete(main())
        loop.run_until_complete(asyncio.sleep(LATE_REPLY_WITHIN + 1))
    finally:
        loop.close()
    # Expired in the first turn past the grace (each turn takes 3 ms).
    assert BUSY_LOOP_GRACE * 0.1 <= lasted <= BUSY_LOOP_GRACE * 0.1 + 0.01


@pytest.mark.parametrize("waits_on", ["a future", "a bare yield"])
def test_a_guard_destroyed_with_its_task_closes_its_call_without_error(waits_on: str) -> None:
    """A loop closed with a guarded call in flight (its task never cancelled): the collector
    closes the guard and the store's call in either order. The call closed first, the
    guard threw the GeneratorExit into it anyway ("cannot reuse already awaited
    coroutine", an unraisable error at some later collection)."""
    loop = asyncio.new_event_loop()
    closed: list[str] = []

    async def driver() -> None:
        try:
            if waits_on == "a future":
                await loop.create_future()
            else:
                await asyncio.sleep(0)
                await loop.create_future()
        finally:
            closed.append("driver")

    async def main() -> None:
        call = driver()
        steps = _Guarded(call, pytest.fail, timeout=0.1, expired=_expired).__await__()
        steps.send(None)  # (its task's first step, by hand: the call now waits)
        call.close()  # the collector's first
        assert closed == ["driver"]
        steps.close()  # then its task's: no error

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
