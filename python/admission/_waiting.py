"""Which async framework is running, and how a task waits on it (asyncio, uvloop, trio).

Only slow paths come here: on asyncio an admission that is immediate never suspends and never
creates a Task or Future (see ``Ready`` in the native module); on trio every acquisition is a
checkpoint (``on_trio`` tells the native first step which). On asyncio a waiting semaphore task
blocks on one native ``Waiter`` (the awaitable, queue ticket, waker and future in one object);
trio has no futures, so its waiters park the task (`TrioWaiter`).

A waiter's ``wake`` may be called from any thread (a semaphore is released by whoever holds
it, a thread or another event loop); it is safe to call more than once and after the waiter
gave up.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from asyncio.events import _get_running_loop
from collections.abc import Callable
from typing import Any

__all__ = ["TrioWaiter", "on_trio", "running_loop", "sleep", "trio_waiter"]


def running_loop() -> asyncio.AbstractEventLoop | None:
    """The running asyncio (or uvloop) loop, or None (on trio, or outside any loop).

    The C helper behind ``asyncio.get_running_loop``, without its exception: one call on the
    slow paths that ask, "asyncio or trio?".
    """
    return _get_running_loop()


def on_trio() -> bool:
    """Whether this thread is running a trio task (asked only once trio is imported and no
    asyncio loop runs here: the native acquisitions' first step)."""
    trio = sys.modules.get("trio")
    if trio is None:
        return False
    try:
        return bool(trio.lowlevel.in_trio_task())
    except AttributeError:  # pragma: no cover - trio < 0.27 has no in_trio_task
        try:
            trio.lowlevel.current_task()
        except RuntimeError:
            return False
        return True


class TrioWaiter:
    """Parks the running trio task until `wake` (from any thread) or a timeout."""

    __slots__ = ("_aborted", "_task", "_thread", "_token", "_woken")

    def __init__(self) -> None:
        import trio

        self._task = trio.lowlevel.current_task()
        self._token = trio.lowlevel.current_trio_token()
        self._thread = threading.get_ident()
        self._woken = False
        self._aborted = False

    def _reschedule(self) -> None:
        import trio

        # Runs on the trio thread. After an abort the task is no longer blocked on us.
        if not self._woken and not self._aborted:
            self._woken = True
            trio.lowlevel.reschedule(self._task)

    def wake(self) -> None:
        if threading.get_ident() == self._thread:
            self._reschedule()
            return
        with contextlib.suppress(RuntimeError):  # the trio run finished: nobody to wake
            self._token.run_sync_soon(self._reschedule)

    async def wait(self, timeout: float | None) -> bool:
        import trio

        def abort(_raise_cancel: Any) -> Any:
            self._aborted = True
            return trio.lowlevel.Abort.SUCCEEDED

        with trio.move_on_after(timeout if timeout is not None else float("inf")):
            await trio.lowlevel.wait_task_rescheduled(abort)
            return True
        return False


def trio_waiter() -> TrioWaiter:
    """A waiter for the running trio task; the caller has checked that asyncio is not running."""
    if "trio" in sys.modules:
        return TrioWaiter()
    raise RuntimeError("admission: no running event loop (asyncio or trio) in this thread")


def in_event_loop_thread() -> bool:
    """Whether an event loop (asyncio or trio) runs in this thread: a blocking wait here would
    stall it, with every task on it."""
    return running_loop() is not None or on_trio()


async def trio_take_now(take: Callable[[], bool]) -> bool:
    """trio's first step of an acquisition, a checkpoint whether or not it waits: raises
    ``Cancelled`` (having taken nothing) in a cancelled scope; then ``take()``, and if that
    admits, a shielded schedule point (so a task that re-acquires in a loop lets the others
    run) and True. False: the caller must wait."""
    import trio

    await trio.lowlevel.checkpoint_if_cancelled()
    if not take():
        return False
    await trio.lowlevel.cancel_shielded_checkpoint()
    return True


async def sleep(seconds: float) -> None:
    """Sleeps on the running framework."""
    if running_loop() is not None:
        await asyncio.sleep(seconds)
        return
    import trio

    await trio.sleep(seconds)
