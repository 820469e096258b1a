"""Which async framework runs this task (asyncio, uvloop or trio), and the few operations the
library needs from it: the one place that asks, and the only framework-specific code of the
slow paths.

`current()` returns the running framework's `Backend`, in anyio's manner: one object per
framework whose methods are what callers need (the loop's clock, a checkpoint, a task group,
a timeout, a worker thread, a waker, trio's checkpoints around an acquisition); callers never
branch on the framework themselves. `in_event_loop_thread` tells the blocking paths whether a
wait would stall a loop.

Only slow paths come here: on asyncio an immediate admission is native and never suspends
(``Ready``). The native first step of ``acquire()`` tells trio from asyncio natively for speed
(``rust/py/src/acquire.rs``, which asks `on_trio` here when trio keeps its run context where it
cannot look); ``LoopClock`` reads the loop's clock natively per decision
(``rust/py/src/clock.rs``).

Waiting, on every framework and in threads, is one contract (`Waker`): ``arm()`` before
looking at what is waited for, so that a wake from then on is not lost; calling the waker
wakes the waiter, from any thread, any number of times, also after the waiter gave up;
``wait(seconds)`` returns True once woken, False when the time ran out (raises if the waiter
is cancelled). Its adapters: asyncio (a future), trio (a parked task), threads
(`ThreadWaker`); an asyncio semaphore waiter is native (``_native.Waiter``) and keeps the
same contract.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import sys
import threading
from asyncio.events import _get_running_loop
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Protocol, TypeVar, final

__all__ = [
    "AsyncWaker",
    "Backend",
    "TaskGroup",
    "ThreadWaker",
    "Waker",
    "current",
    "in_event_loop_thread",
    "on_trio",
    "running_asyncio_loop",
]

T = TypeVar("T")

#: The asyncio task group: asyncio's own from 3.11, a backport with its semantics on 3.10.
TASK_GROUP: Callable[[], Any]
if sys.version_info >= (3, 11):
    TASK_GROUP = asyncio.TaskGroup
else:  # pragma: no cover - 3.10 only
    from admission._taskgroup import TaskGroup as TASK_GROUP


def on_trio() -> bool:
    """Whether this thread is running a trio task (trio is never imported here for it)."""
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


def running_asyncio_loop() -> asyncio.AbstractEventLoop | None:
    """The asyncio loop running in this thread, or None (never raises, unlike asyncio's)."""
    return _get_running_loop()


def in_event_loop_thread() -> bool:
    """Whether an event loop (asyncio or trio) runs in this thread: a blocking wait here would
    stall it, with every task on it."""
    return _get_running_loop() is not None or on_trio()


class Waker(Protocol):
    """Wakes one waiter (see the module documentation for the contract): what a queue holds."""

    def arm(self) -> None: ...
    def __call__(self) -> None: ...


class AsyncWaker(Waker, Protocol):
    """A `Waker` of a task: ``await wait(seconds)``."""

    async def wait(self, seconds: float | None) -> bool: ...


class TaskGroup(Protocol):
    """What `Backend.task_group` yields: ``start_soon(fn)`` runs ``fn()`` as a task of it."""

    def start_soon(self, fn: Callable[[], Awaitable[object]]) -> None: ...


class Backend(Protocol):
    """The operations of one framework (see the module documentation)."""

    @property
    def name(self) -> str:
        """``"asyncio"`` (uvloop included) or ``"trio"``."""

    def time(self) -> float:
        """The running loop's clock, in seconds (what its timeouts follow)."""

    def checkpoint(self) -> Awaitable[None]:
        """Lets the other tasks run; raises if this one is cancelled. (The framework's own
        awaitable, not a coroutine of ours: one frame less on the waiting paths.)"""

    def sleep(self, seconds: float) -> Awaitable[None]:
        """Sleeps ``seconds`` on the loop's clock (cancellable at once)."""

    def waker(self) -> AsyncWaker:
        """A waker for the running task."""

    async def first_step(self, take: Callable[[], bool]) -> bool:
        """The first step of an acquisition that came to Python: True if ``take()`` admitted
        it, False if it must queue. On trio, where every call is a checkpoint, it raises
        ``Cancelled`` in a cancelled scope (nothing taken), else tries, and lets the others
        run if it admitted."""

    def admitted(self) -> Awaitable[None]:
        """After an admission that did not have to wait: trio lets the others run (so a task
        that re-acquires in a loop does not starve the queue)."""

    def task_group(self) -> contextlib.AbstractAsyncContextManager[TaskGroup]:
        """A task group: the first task to fail cancels the others; leaving it waits for all
        and raises the failures as an ``ExceptionGroup`` (trio: a nursery)."""

    async def within(
        self, seconds: float, aw: Awaitable[T], too_slow: Callable[[], BaseException]
    ) -> T:
        """``await aw``, cancelled after ``seconds``: then raises ``too_slow()`` (from the
        framework's own timeout error; a timeout error of ``aw``'s own passes as it is)."""

    async def to_thread(self, call: Callable[[], T]) -> T:
        """``call()`` in a worker thread, awaited without blocking the loop."""


@final
class _Asyncio:
    __slots__ = ()

    name = "asyncio"

    def time(self) -> float:
        return asyncio.get_running_loop().time()

    def checkpoint(self) -> Awaitable[None]:
        return asyncio.sleep(0)

    def sleep(self, seconds: float) -> Awaitable[None]:
        return asyncio.sleep(seconds)

    def waker(self) -> AsyncWaker:
        return _AsyncioWaker(asyncio.get_running_loop())

    async def first_step(self, take: Callable[[], bool]) -> bool:
        return False  # the native first step has just tried: asyncio's is suspension-free

    async def admitted(self) -> None:
        pass  # asyncio's immediate path stays suspension-free

    def task_group(self) -> contextlib.AbstractAsyncContextManager[TaskGroup]:
        return _AsyncioTaskGroup()

    async def within(
        self, seconds: float, aw: Awaitable[T], too_slow: Callable[[], BaseException]
    ) -> T:
        if sys.version_info >= (3, 11):
            timeout = asyncio.timeout(seconds)
            try:
                async with timeout:
                    return await aw
            except TimeoutError as exc:
                if timeout.expired():  # not a TimeoutError of aw's own
                    raise too_slow() from exc
                raise
        else:  # pragma: no cover - 3.10 only
            try:
                return await asyncio.wait_for(aw, seconds)
            except asyncio.TimeoutError as exc:
                raise too_slow() from exc

    async def to_thread(self, call: Callable[[], T]) -> T:
        return await asyncio.to_thread(call)


@final
class _Trio:
    __slots__ = ()

    name = "trio"

    def time(self) -> float:
        import trio

        return trio.current_time()

    def checkpoint(self) -> Awaitable[None]:
        import trio

        return trio.lowlevel.checkpoint()  # noqa: ASYNC105 - awaited by the caller at once

    def sleep(self, seconds: float) -> Awaitable[None]:
        import trio

        return trio.sleep(seconds)  # noqa: ASYNC105 - awaited by the caller at once

    def waker(self) -> AsyncWaker:
        return _TrioWaker()

    async def first_step(self, take: Callable[[], bool]) -> bool:
        import trio

        await trio.lowlevel.checkpoint_if_cancelled()
        if not take():
            return False
        await trio.lowlevel.cancel_shielded_checkpoint()
        return True

    def admitted(self) -> Awaitable[None]:
        import trio

        return trio.lowlevel.cancel_shielded_checkpoint()  # noqa: ASYNC105 - awaited at once

    def task_group(self) -> contextlib.AbstractAsyncContextManager[TaskGroup]:
        import trio

        return trio.open_nursery()

    async def within(
        self, seconds: float, aw: Awaitable[T], too_slow: Callable[[], BaseException]
    ) -> T:
        import trio

        try:
            with trio.fail_after(seconds):
                return await aw
        except trio.TooSlowError as exc:
            raise too_slow() from exc

    async def to_thread(self, call: Callable[[], T]) -> T:
        import trio

        return await trio.to_thread.run_sync(call)


ASYNCIO: Backend = _Asyncio()
TRIO: Backend = _Trio()


def current() -> Backend:
    """The framework running this task; `RuntimeError` outside any (asyncio or trio)."""
    if _get_running_loop() is not None:
        return ASYNCIO
    if on_trio():
        return TRIO
    raise RuntimeError("admission: no running event loop (asyncio or trio) in this thread")


@final
class _AsyncioTaskGroup:
    """An asyncio task group with trio's ``start_soon``."""

    __slots__ = ("_group",)

    def __init__(self) -> None:
        self._group = TASK_GROUP()

    async def __aenter__(self) -> _AsyncioTaskGroup:
        await self._group.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        return bool(await self._group.__aexit__(exc_type, exc, tb))

    def start_soon(self, fn: Callable[[], Awaitable[object]]) -> None:
        self._group.create_task(fn())


@final
class _AsyncioWaker:
    """Wakes a task on an asyncio loop: resolves the future it waits on (True: woken)."""

    __slots__ = ("_future", "_loop", "_thread")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread = threading.get_ident()
        self._future: asyncio.Future[bool] | None = None

    def arm(self) -> None:
        self._future = self._loop.create_future()

    def _settle(self, woken: bool) -> None:
        future = self._future
        if future is not None and not future.done():
            future.set_result(woken)

    def __call__(self) -> None:
        # Never raises into the request that happens to wake this one: a closed loop has
        # nobody left to wake.
        with contextlib.suppress(RuntimeError):
            if threading.get_ident() == self._thread:
                self._settle(True)
            else:
                self._loop.call_soon_threadsafe(self._settle, True)

    async def wait(self, seconds: float | None) -> bool:
        future = self._future
        assert future is not None, "arm() first"
        if seconds is None:
            return await future
        timer = self._loop.call_later(seconds, self._settle, False)
        try:
            return await future
        finally:
            timer.cancel()


@final
class _TrioWaker:
    """Wakes a task parked on trio (from any thread)."""

    __slots__ = ("_parked", "_signalled", "_task", "_thread", "_token")

    def __init__(self) -> None:
        import trio

        self._task = trio.lowlevel.current_task()
        self._token = trio.lowlevel.current_trio_token()
        self._thread = threading.get_ident()
        self._parked = False
        self._signalled = False

    def arm(self) -> None:
        self._signalled = False

    def _signal(self) -> None:
        import trio

        # On the trio thread. Only a parked task may be rescheduled; otherwise note it.
        if self._parked:
            self._parked = False
            trio.lowlevel.reschedule(self._task)
        else:
            self._signalled = True

    def __call__(self) -> None:
        if threading.get_ident() == self._thread:
            self._signal()
            return
        with contextlib.suppress(RuntimeError):  # the trio run finished: nobody to wake
            self._token.run_sync_soon(self._signal)

    async def wait(self, seconds: float | None) -> bool:
        import trio

        if self._signalled:
            await trio.lowlevel.checkpoint()
            return True

        def abort(_raise_cancel: Any) -> Any:
            self._parked = False
            return trio.lowlevel.Abort.SUCCEEDED

        with trio.move_on_after(math.inf if seconds is None else seconds):
            self._parked = True
            await trio.lowlevel.wait_task_rescheduled(abort)
            return True
        return False


@final
class ThreadWaker(threading.Event):
    """Wakes a thread blocked in its ``wait`` (the blocking paths: no framework). An `Event`
    whose ``set`` is the waker itself: calling it costs no frame of ours."""

    arm = threading.Event.clear
    __call__ = threading.Event.set
