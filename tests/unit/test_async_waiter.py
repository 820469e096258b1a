"""The native asyncio waiting path of `Semaphore.acquire()` (``_native.Waiter``).

On asyncio a waiting acquisition is one native object that the task blocks on directly (the
future protocol). These tests hold it to what an ``asyncio.Future`` guarantees, plus what a
semaphore must: nothing lost when the awaiting coroutine is cancelled, thrown into, closed
or dropped at any point; wake-ups in the task's own context; callbacks' errors reported.
"""

from __future__ import annotations

import asyncio
import contextvars
import ctypes
import gc
import sys
import threading
import weakref
from typing import Any

import pytest
from support import ASYNCIO_ONLY, wait_until

import admission as adm
from admission import _native


def held(s: adm.Semaphore) -> tuple[int, int]:
    return s.in_use, s.waiting


def full(limit: int = 1) -> adm.Semaphore:
    """A semaphore whose permits are all taken: the next acquisition waits."""
    s = adm.Semaphore(limit)
    assert s.try_acquire(limit)
    return s


async def queued(s: adm.Semaphore, *requests: int) -> list[asyncio.Future[None]]:
    """Tasks acquiring ``requests`` permits each, once all of them wait in ``s``'s queue."""
    tasks = [asyncio.ensure_future(s.acquire(n)) for n in requests]
    await wait_until(lambda: s.waiting == len(requests))
    return tasks


@pytest.mark.anyio
@ASYNCIO_ONLY
async def test_waiting_task_blocks_on_the_waiter_itself() -> None:
    s = full()
    [task] = await queued(s, 1)
    waiter = task._fut_waiter  # type: ignore[attr-defined]
    assert type(waiter).__name__ == "Waiter"
    assert asyncio.isfuture(waiter)
    assert not waiter.done()
    # asyncio finds its loop as a legacy future's: the `_loop` attribute (no get_loop).
    assert asyncio.futures._get_loop(waiter) is asyncio.get_running_loop()  # type: ignore[attr-defined]
    assert not hasattr(waiter, "get_loop")
    s.release()
    await task
    assert waiter.done()
    assert waiter.result() is None
    assert waiter.exception() is None
    assert held(s) == (1, 0)
    s.release()


@pytest.mark.anyio
@ASYNCIO_ONLY
async def test_grant_then_cancel_before_the_task_resumes_passes_the_permit_on() -> None:
    s = full()
    first, second = await queued(s, 1, 1)
    s.release()  # granted to `first`, whose task has not resumed yet
    assert held(s) == (1, 1)
    first.cancel()  # its waiter is settled: the task throws CancelledError into it
    with pytest.raises(asyncio.CancelledError):
        await first
    await asyncio.wait_for(second, 5)  # the permit went on to the next waiter
    assert held(s) == (1, 0)
    s.release()
    assert held(s) == (0, 0)


@pytest.mark.anyio
@ASYNCIO_ONLY
async def test_grant_then_cancel_with_nobody_behind_returns_the_permit() -> None:
    s = full(2)
    [task] = await queued(s, 2)
    s.release(2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert held(s) == (0, 0)
    stats = s.stats()
    # The two immediate permits; the grant the task never took counts as cancelled.
    assert (stats.admitted, stats.cancelled) == (1, 1)
    assert stats.wait.count == 1


@pytest.mark.anyio
@ASYNCIO_ONLY
async def test_cancel_message_reaches_the_task() -> None:
    s = full()
    [task] = await queued(s, 1)
    task.cancel("shutting down")
    with pytest.raises(asyncio.CancelledError) as info:
        await task
    # The coroutine saw the message; 3.10's Task raises a bare CancelledError chained to it.
    raised = info.value if sys.version_info >= (3, 11) else info.value.__context__
    assert isinstance(raised, asyncio.CancelledError)
    assert raised.args == ("shutting down",)
    assert held(s) == (1, 0)
    assert s.stats().cancelled == 1


@pytest.mark.anyio
@ASYNCIO_ONLY
async def test_an_exception_thrown_into_a_granted_waiter_releases_it() -> None:
    s = full()
    waiter = s.acquire().__await__()
    assert next(waiter.__await__()) is waiter  # queued, as a task's first step would
    s.release()
    assert waiter.done()
    assert held(s) == (1, 0)
    with pytest.raises(KeyError):
        waiter.throw(KeyError("boom"))
    assert held(s) == (0, 0), "granted but never seen: passed back"


@pytest.mark.anyio
@ASYNCIO_ONLY
async def test_closing_a_queued_waiter_withdraws_it() -> None:
    s = full()
    waiter = s.acquire().__await__()
    next(waiter.__await__())
    assert held(s) == (1, 1)
    waiter.close()
    assert held(s) == (1, 0)
    s.release()
    assert held(s) == (0, 0)


@pytest.mark.anyio
@ASYNCIO_ONLY
async def test_an_awaited_acquisition_cannot_be_awaited_again() -> None:
    s = full()
    waiter = s.acquire()
    task = asyncio.ensure_future(_await(waiter))
    await wait_until(lambda: s.waiting == 1)
    s.release()
    await task
    with pytest.raises(RuntimeError, match="already awaited"):
        await waiter
    assert held(s) == (1, 0), "the second await took nothing"
    s.release()


async def _await(aw: Any) -> Any:
    return await aw


@pytest.mark.anyio
@ASYNCIO_ONLY
async def test_wait_for_and_gather_accept_a_waiting_acquisition() -> None:
    s = full()
    with pytest.raises(asyncio.TimeoutError):  # not the builtin before 3.11
        await asyncio.wait_for(s.acquire(), 0.01)
    assert held(s) == (1, 0)
    gathered = asyncio.gather(s.acquire(), s.acquire())
    await wait_until(lambda: s.waiting == 2)
    s.release()
    await wait_until(lambda: s.waiting == 1)
    s.release()
    assert await asyncio.wait_for(gathered, 5) == [None, None]
    assert held(s) == (1, 0)
    s.release()


@pytest.mark.anyio
@ASYNCIO_ONLY
async def test_the_task_resumes_in_its_own_context() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var")
    s = full()

    async def worker(name: str) -> str:
        var.set(name)
        async with s:
            return var.get()

    tasks = [asyncio.ensure_future(worker(f"w{i}")) for i in range(5)]
    await wait_until(lambda: s.waiting == 5)
    s.release()
    assert await asyncio.wait_for(asyncio.gather(*tasks), 5) == [f"w{i}" for i in range(5)]


@pytest.mark.anyio
@ASYNCIO_ONLY
async def test_a_failing_done_callback_is_reported_and_the_others_still_run() -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        s = full()
        waiter = s.acquire().__await__()
        next(waiter.__await__())
        ran: list[str] = []

        def boom(_fut: Any) -> None:
            raise ValueError("callback failed")

        waiter.add_done_callback(boom)
        waiter.add_done_callback(lambda fut: ran.append(type(fut).__name__))
        s.release()
        await wait_until(lambda: bool(ran))
        assert ran == ["Waiter"]
        assert [type(c["exception"]) for c in reported] == [ValueError]
        assert "Exception in callback" in reported[0]["message"]
    finally:
        loop.set_exception_handler(previous)
    assert waiter.remove_done_callback(boom) == 0  # already called: nothing registered
    waiter.close()  # the test is done with it without seeing the grant: passed back
    assert held(s) == (0, 0)


@pytest.mark.anyio
@ASYNCIO_ONLY
async def test_a_done_callback_context_must_be_a_context() -> None:
    s = full()
    waiter = s.acquire().__await__()
    next(waiter.__await__())
    with pytest.raises(TypeError, match=r"contextvars\.Context, not dict"):
        waiter.add_done_callback(print, context={})  # type: ignore[arg-type]
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="outside")
    seen: list[str] = []
    ctx = contextvars.copy_context()
    ctx.run(var.set, "inside")
    waiter.add_done_callback(lambda _fut: seen.append(var.get()), context=ctx)
    waiter.add_done_callback(lambda _fut: seen.append(var.get()))  # the current context
    s.release()
    await wait_until(lambda: len(seen) == 2)
    assert seen == ["inside", "outside"]
    waiter.close()
    assert held(s) == (0, 0)


def _getattr_by_c_string(obj: object, name: bytes) -> Any:
    """``PyObject_GetAttrString(obj, name)``: the lookup asyncio's Task makes for ``result``."""
    get = ctypes.pythonapi.PyObject_GetAttrString
    get.restype = ctypes.py_object
    get.argtypes = [ctypes.py_object, ctypes.c_char_p]
    return get(obj, name)


@pytest.mark.anyio
@ASYNCIO_ONLY
async def test_lookups_by_c_string_match_lookups_by_str() -> None:
    # The Task wakes with PyObject_CallMethod(waiter, "result", NULL); the waiter answers
    # that C-string lookup with itself, whose call is result(). Everything else is generic.
    s = full()
    waiter = s.acquire().__await__()
    next(waiter.__await__())
    result = _getattr_by_c_string(waiter, b"result")
    assert result is waiter  # the fast path is in place (no string, no bound method)
    with pytest.raises(asyncio.InvalidStateError, match="Result is not set"):
        result()
    with pytest.raises(asyncio.InvalidStateError, match="Result is not set"):
        waiter.result()
    assert _getattr_by_c_string(waiter, b"done")() is False
    assert _getattr_by_c_string(waiter, b"_loop") is asyncio.get_running_loop()
    with pytest.raises(AttributeError, match="get_loop"):
        _getattr_by_c_string(waiter, b"get_loop")
    assert waiter.result != waiter  # Python's lookups are unchanged: a bound method
    s.release()
    assert result() is None
    assert waiter() is None
    assert waiter.result() is None
    waiter.close()  # granted, never seen by a coroutine: passed back
    assert held(s) == (0, 0)

    # Ended without the permits: the call raises what result() raises.
    s = full()
    cancelled = s.acquire().__await__()
    next(cancelled.__await__())
    assert cancelled.cancel("bye")
    with pytest.raises(asyncio.CancelledError, match="bye"):
        _getattr_by_c_string(cancelled, b"result")()
    assert held(s) == (1, 0)
    s.release()


TASKS = 20


def _result_lookups_by_c_string(task_factory: Any) -> int:
    """Lookups of ``result`` by C string on waiters while ``TASKS`` tasks, made by
    ``task_factory`` (None: asyncio's own), pass one at a time through a semaphore: all but
    the first wait on a native waiter, and their task wakes from it once."""

    async def main() -> None:
        asyncio.get_running_loop().set_task_factory(task_factory)
        s = adm.Semaphore(1)

        async def one() -> None:
            async with s:
                await asyncio.sleep(0)

        await asyncio.gather(*(one() for _ in range(TASKS)))
        assert s.stats().admitted == TASKS

    _native._count_result_lookups(True)
    try:
        asyncio.run(main())
    finally:
        counted = _native._count_result_lookups(False)
    return counted


def test_asyncio_task_looks_result_up_by_c_string() -> None:
    # The shortcut in rust/py/src/asyncio/result_lookup.rs answers the Task's lookup of
    # `result` by C string (PyObject_CallMethod(fut, "result", NULL) in task_wakeup). If
    # CPython stops looking it up that way, the shortcut is dead code and every wake-up takes
    # the generic lookup again: remove or move the shortcut then.
    assert asyncio.Task is asyncio.tasks._CTask  # type: ignore[attr-defined]
    counted = _result_lookups_by_c_string(None)
    assert counted == TASKS - 1, (
        f"asyncio's Task looked `result` up by C string {counted} times for {TASKS - 1} "
        "wake-ups: CPython changed how its Task reads a future's result, and the tp_getattr "
        "shortcut (rust/py/src/asyncio/result_lookup.rs) no longer applies"
    )


def test_the_lookup_count_tells_c_string_lookups_from_str_lookups() -> None:
    # asyncio's pure-Python Task reads `future.result` as an attribute (by str): the same
    # waits count nothing, so the count above measures what the C Task does.
    def python_task(loop: Any, coro: Any, **kwargs: Any) -> Any:
        return asyncio.tasks._PyTask(coro, loop=loop, **kwargs)  # type: ignore[attr-defined]

    assert _result_lookups_by_c_string(python_task) == 0
    assert _result_lookups_by_c_string(None) == TASKS - 1  # and counting stopped in between


def test_a_failure_to_pass_on_a_dropped_waiters_permits_is_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A granted waiter dropped before its coroutine took the permits passes them on. If that
    # fails (here: the caller released the waiter's permit itself), the error goes to
    # sys.unraisablehook instead of vanishing.
    reported: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", reported.append)

    async def main() -> adm.Semaphore:
        s = full()
        waiter = s.acquire().__await__()
        assert next(waiter) is waiter  # queued
        s.release()  # granted to the waiter: it holds the permit
        assert held(s) == (1, 0)
        s.release()  # a caller's bug: the waiter's permit released by someone else
        del waiter  # dropped unseen: nothing left to pass on
        gc.collect()
        return s

    s = asyncio.run(main())
    assert len(reported) == 1, reported
    assert isinstance(reported[0].exc_value, ValueError)
    assert "release of 1 permits but only 0 are in use" in str(reported[0].exc_value)
    assert "dropped before it took them" in str(reported[0].object)
    assert held(s) == (0, 0)


@pytest.mark.anyio
@ASYNCIO_ONLY
async def test_timeout_raises_and_counts() -> None:
    s = full()
    with pytest.raises(adm.AcquireTimeout) as info:
        await s.acquire(timeout=0.01)
    assert info.value.timeout == pytest.approx(0.01)
    assert held(s) == (1, 0)
    assert s.stats().timed_out == 1
    s.release()


@pytest.mark.anyio
@ASYNCIO_ONLY
async def test_release_from_another_thread_wakes_the_waiter() -> None:
    s = full()
    [task] = await queued(s, 1)
    thread = threading.Thread(target=s.release)
    thread.start()
    thread.join()
    await asyncio.wait_for(task, 5)
    assert held(s) == (1, 0)
    s.release()


def queued_on_a_new_loop(s: adm.Semaphore) -> tuple[asyncio.AbstractEventLoop, asyncio.Task[None]]:
    """A task of a new loop queued on the full ``s``; the loop is left stopped."""
    loop = asyncio.new_event_loop()

    async def wait() -> None:
        await s.acquire()

    task = loop.create_task(wait())
    loop.run_until_complete(asyncio.sleep(0))
    assert held(s) == (1, 1)
    return loop, task


def test_a_granted_waiter_whose_loop_closed_gives_its_permit_back() -> None:
    s = full()
    loop, task = queued_on_a_new_loop(s)
    s.release()  # granted; the task's wake-up is scheduled on a loop that will never run it
    assert held(s) == (1, 0)
    loop.close()
    del task
    gc.collect()
    assert held(s) == (0, 0)


@pytest.mark.parametrize("releaser", ["same thread", "another thread"])
def test_a_waiter_whose_loop_is_closed_passes_a_grant_on_at_once(releaser: str) -> None:
    """Its loop closed without cancelling it, and its task still referenced (so never
    freed): a release must not hand the permit to a coroutine that will never resume."""
    s = full()
    loop, task = queued_on_a_new_loop(s)
    loop.close()
    if releaser == "same thread":
        s.release()
    else:
        thread = threading.Thread(target=s.release)
        thread.start()
        thread.join()
    assert held(s) == (0, 0)
    assert s.try_acquire()
    assert s.stats().cancelled == 1
    s.release()
    assert not task.done()  # (kept alive on purpose)


def test_timed_waits_on_many_loops_do_not_keep_the_closed_loops_alive() -> None:
    # A semaphore keeps one deadline timer per loop its timed waiters used; a long-lived
    # semaphore used by one `asyncio.run` after another must not keep every closed loop.
    s = full()
    loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []

    async def timed_out_wait() -> None:
        loops.append(weakref.ref(asyncio.get_running_loop()))
        with pytest.raises(adm.AcquireTimeout):
            await s.acquire(timeout=0.001)

    for _ in range(3):
        asyncio.run(timed_out_wait())
    gc.collect()
    assert [ref() is None for ref in loops[:-1]] == [True, True]
    assert held(s) == (1, 0)
    s.release()


@pytest.mark.anyio
@ASYNCIO_ONLY
async def test_counters_match_what_tasks_saw_under_many_wait_for_cancellations() -> None:
    # Issue 11, case 6: a waiter granted a permit and cancelled in the same loop turn (here by
    # wait_for's timeout, or by hand right after a release) raises CancelledError; it must be
    # counted cancelled, not admitted, and its wait must not reach the histogram.
    s = adm.Semaphore(3)
    seen = {"admitted": 0, "failed": 0}

    async def worker(i: int) -> None:
        for j in range(150):
            try:
                # Timeouts of 0.1 to 0.5 ms: many expire in the turn the permit is granted.
                await asyncio.wait_for(s.acquire(), timeout=(1 + (i * 7 + j) % 5) * 1e-4)
            except asyncio.TimeoutError:
                seen["failed"] += 1
                continue
            seen["admitted"] += 1
            # One hold in ten outlasts every timeout, so that some waiters surely time out
            # (on 3.12+, whose wait_for adds no task, holds of one turn let none).
            await asyncio.sleep(0 if j % 10 else 1e-3)
            s.release()

    await asyncio.gather(*(worker(i) for i in range(12)))
    before = s.stats()
    assert (s.in_use, s.waiting) == (0, 0)
    assert before.admitted == seen["admitted"]
    assert before.timed_out + before.cancelled + before.rejected == seen["failed"]
    assert before.wait.count == before.admitted
    assert before.attempts == 12 * 150
    assert seen["failed"] > 0

    # Deterministic: the permit is handed to the queued task, which is cancelled at once.
    cancelled_after_grant = 0
    for _ in range(200):
        s = full()
        waiting = asyncio.ensure_future(s.acquire())
        await wait_until(lambda s=s: s.waiting == 1)
        s.release()  # granted to `waiting`, which has not run yet
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        stats = s.stats()
        assert held(s) == (0, 0)
        assert (stats.admitted, stats.cancelled, stats.wait.count) == (1, 1, 1)
        cancelled_after_grant += 1
    assert cancelled_after_grant == 200
