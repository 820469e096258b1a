"""How a task waits, on whichever async framework is running it (asyncio, uvloop, trio).

Only the slow path comes here: an admission that is immediate never suspends and never
creates a Task or Future (see ``Ready`` in the native module).

A `Waiter` is made by the task that will wait. Its ``wake`` may be called from any thread
(a semaphore is released by whoever holds it, a thread or another event loop); it is safe to
call more than once and after the waiter gave up.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from typing import Any, Protocol

__all__ = ["Waiter", "current_waiter", "sleep"]


class Waiter(Protocol):
    def wake(self) -> None: ...

    async def wait(self, timeout: float | None) -> bool:
        """Suspends until woken (True) or until ``timeout`` seconds pass (False)."""
        ...


class _AsyncioWaiter:
    __slots__ = ("_future", "_loop", "_thread")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._future: asyncio.Future[bool] = loop.create_future()
        self._thread = threading.get_ident()

    def _settle(self, value: bool) -> None:
        if not self._future.done():
            self._future.set_result(value)

    def wake(self) -> None:
        if threading.get_ident() == self._thread:
            self._settle(True)
            return
        # A closed loop raises RuntimeError: its tasks are gone, nobody is left to wake.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._settle, True)

    async def wait(self, timeout: float | None) -> bool:
        if timeout is None:
            return await self._future
        # A timer resolving the same future: no extra Task, unlike asyncio.wait_for.
        timer = self._loop.call_later(timeout, self._settle, False)
        try:
            return await self._future
        finally:
            timer.cancel()


class _TrioWaiter:
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


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def current_waiter() -> Waiter:
    """A waiter for the running task, on the running framework."""
    loop = _running_loop()
    if loop is not None:
        return _AsyncioWaiter(loop)
    if "trio" in sys.modules:
        return _TrioWaiter()
    raise RuntimeError("admission: no running event loop (asyncio or trio) in this thread")


async def sleep(seconds: float) -> None:
    """Sleeps on the running framework."""
    if _running_loop() is not None:
        await asyncio.sleep(seconds)
        return
    import trio

    await trio.sleep(seconds)
