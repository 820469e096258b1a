"""Which event loop a waiting acquisition belongs to.

On CPython 3.10/3.11 the native layer caches "the loop running in this thread" against the
holder object asyncio keeps in the thread state (asyncio's own lookup makes a getpid system
call per call). A stale answer would tie a waiter to a loop that no longer runs: its task
would fail with "attached to a different loop" or never wake. These tests change the running
loop in every way a program can and check each wait is served on the loop that runs it.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import sys
import threading
from typing import Any

import pytest

import admission as adm
from admission import _native


async def wait_once(s: adm.Semaphore) -> asyncio.AbstractEventLoop:
    """Waits for a permit that a later step of this loop frees; returns the waiter's loop."""
    assert s.try_acquire(1)
    waiter = s.acquire().__await__()
    assert type(waiter).__name__ == "Waiter", "the native asyncio path was not taken"
    loop = asyncio.get_running_loop()
    loop.call_soon(s.release)
    await waiter
    s.release()
    return waiter._loop  # type: ignore[attr-defined,no-any-return]


def test_each_new_loop_in_the_same_thread_gets_its_own_waiters() -> None:
    s = adm.Semaphore(1)
    seen = []
    for _ in range(3):
        loop = asyncio.new_event_loop()
        try:
            seen.append((loop, loop.run_until_complete(wait_once(s))))
        finally:
            loop.close()
    assert all(waiter_loop is loop for loop, waiter_loop in seen)
    assert s.in_use == 0


def test_a_loop_run_again_after_another_is_recognised() -> None:
    s = adm.Semaphore(1)
    first, second = asyncio.new_event_loop(), asyncio.new_event_loop()
    try:
        for loop in (first, second, first):
            assert loop.run_until_complete(wait_once(s)) is loop
    finally:
        first.close()
        second.close()


def test_nested_loop_in_a_worker_thread_is_its_own() -> None:
    s = adm.Semaphore(1)
    outer = asyncio.new_event_loop()
    results: dict[str, object] = {}

    def worker() -> None:
        results["worker"] = asyncio.run(wait_once(adm.Semaphore(1)))

    async def main() -> None:
        results["outer"] = await wait_once(s)
        thread = threading.Thread(target=worker)
        thread.start()
        await asyncio.to_thread(thread.join)
        results["outer again"] = await wait_once(s)

    try:
        outer.run_until_complete(main())
    finally:
        outer.close()
    assert results["outer"] is outer
    assert results["outer again"] is outer
    assert isinstance(results["worker"], asyncio.AbstractEventLoop)
    assert results["worker"] is not outer


def test_no_loop_after_the_loop_stopped() -> None:
    s = adm.Semaphore(1)
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(wait_once(s))
    finally:
        loop.close()
    assert s.try_acquire(1)
    # Outside any loop nothing is cached as running: the call gives the portable awaitable.
    pending = s.acquire().__await__()
    assert type(pending).__name__ != "Waiter"
    pending.close()  # type: ignore[attr-defined]
    s.release()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_does_not_see_the_parents_loop() -> None:
    async def parent() -> int:
        s = adm.Semaphore(1)
        await wait_once(s)  # the cache now holds this loop
        pid = os.fork()
        if pid == 0:  # the child: asyncio says no loop runs here, so must we
            code = 1
            try:
                assert s.try_acquire(1)
                pending = s.acquire().__await__()
                kind = type(pending).__name__
                pending.close()  # type: ignore[attr-defined]
                s.release()
                served = asyncio.run(wait_once(adm.Semaphore(1)))
                code = 0 if kind != "Waiter" and served is not None else 2
            finally:
                os._exit(code)  # its exit status is the verdict
        return pid

    _, status = os.waitpid(asyncio.run(parent()), 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_forgetting_is_harmless_in_any_state() -> None:
    _native._forget_running_loop()  # nothing cached: a no-op
    s = adm.Semaphore(1)

    async def main() -> None:
        await wait_once(s)
        _native._forget_running_loop()
        assert await wait_once(s) is asyncio.get_running_loop()

    asyncio.run(main())


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="the cache is only used before 3.12")
def test_the_cache_lives_in_the_thread_state_next_to_asyncios_holder() -> None:
    # The design this relies on: asyncio keeps a holder per running-loop setting in the
    # thread-state dict, and the cache is (that holder, the loop) under its own key.
    c_get_dict = ctypes.pythonapi.PyThreadState_GetDict
    c_get_dict.restype = ctypes.c_void_p  # a borrowed reference: not a py_object, which steals
    c_get_dict.argtypes = []

    def get_dict() -> dict[str, Any]:
        state: dict[str, Any] = ctypes.cast(c_get_dict(), ctypes.py_object).value
        return state

    async def main() -> None:
        await wait_once(adm.Semaphore(1))
        state = get_dict()
        holder, cached = state["__admission_running_loop__"]
        assert holder is state["__asyncio_running_event_loop__"]
        assert cached is asyncio.get_running_loop()

    asyncio.run(main())
    # After the loop stopped, asyncio set a new holder: the cached one is stale and unused.
    state = get_dict()
    assert state["__admission_running_loop__"][0] is not state["__asyncio_running_event_loop__"]
    s = adm.Semaphore(1)
    assert s.try_acquire(1)
    pending = s.acquire().__await__()
    assert type(pending).__name__ != "Waiter"
    pending.close()  # type: ignore[attr-defined]
    s.release()
