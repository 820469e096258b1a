"""`TaskPool`: a task group that runs at most ``limit`` tasks at once."""

from __future__ import annotations

from collections import deque
from collections.abc import Coroutine
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, final

from admission import _backend
from admission._aws import Acquirable, discard, rate_limiter
from admission._validate import positive_int, timeout_seconds
from admission.errors import Closed

__all__ = ["TaskPool"]


@final
class TaskPool:
    """A structured, bounded task group.

    Semantics of ``asyncio.TaskGroup`` (on trio: a nursery): an error in one task cancels the
    others and the ``async with`` body, exit waits for every task, and errors are raised
    together as an ``ExceptionGroup``. On top of that:

    - at most ``limit`` tasks run at once; spawned coroutines wait in a FIFO queue, as
      coroutines (no Task is created until a slot is free, so a million spawns cost a million
      small objects, not a million Tasks);
    - with ``rate`` (a `TokenBucket`, a `SlidingWindow` or an `AllOf`; anything else is a
      ``TypeError`` here, at construction), each task first acquires one unit from it;
    - with ``timeout``, each task is cancelled after that many seconds and fails the pool
      with ``TimeoutError``.

    >>> import asyncio, admission as adm
    >>> async def main():
    ...     done = []
    ...     async def work(i):
    ...         await asyncio.sleep(0)
    ...         done.append(i)
    ...     async with adm.TaskPool(limit=2) as pool:
    ...         for i in range(5):
    ...             pool.spawn(work(i))
    ...     return sorted(done)
    >>> asyncio.run(main())
    [0, 1, 2, 3, 4]

    On asyncio it is built on ``asyncio.TaskGroup`` (on Python 3.10, which has none, on a
    backport with the same semantics).
    """

    __slots__ = (
        "_backend",
        "_closed",
        "_group",
        "_limit",
        "_nursery",
        "_queue",
        "_rate",
        "_running",
        "_spawned",
        "_timeout",
        "_workers",
    )

    def __init__(
        self,
        limit: int,
        *,
        rate: Acquirable | None = None,
        timeout: float | None = None,
    ) -> None:
        self._limit = positive_int(limit, "limit")
        self._rate = rate_limiter(rate)
        self._timeout = timeout_seconds(timeout)
        self._queue: deque[Coroutine[Any, Any, Any]] = deque()
        self._workers = 0
        self._running = 0
        self._spawned = 0
        self._backend: _backend.Backend | None = None  # while open: the framework it runs on
        self._nursery: AbstractAsyncContextManager[_backend.TaskGroup] | None = None
        self._group: _backend.TaskGroup | None = None
        self._closed = True

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def running(self) -> int:
        """Tasks running right now (at most ``limit``)."""
        return self._running

    @property
    def queued(self) -> int:
        """Spawned coroutines waiting for a free slot."""
        return len(self._queue)

    @property
    def spawned(self) -> int:
        """Coroutines spawned so far."""
        return self._spawned

    async def __aenter__(self) -> TaskPool:
        if not self._closed:
            raise RuntimeError("this TaskPool is already open")
        self._backend = _backend.current()
        self._nursery = self._backend.task_group()
        self._group = await self._nursery.__aenter__()
        self._closed = False
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._nursery is not None
        try:
            return bool(await self._nursery.__aexit__(exc_type, exc, tb))
        finally:
            self._closed = True
            # Cancelled or failed before their turn: close them so nothing warns.
            discard(self._queue)
            self._queue.clear()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Queues ``coro``; it starts as soon as fewer than ``limit`` tasks are running."""
        if self._closed:
            discard([coro])
            raise Closed("spawn() on a TaskPool that is not open (use `async with`)")
        self._spawned += 1
        self._queue.append(coro)
        if self._workers < self._limit:
            assert self._group is not None
            self._workers += 1
            self._group.start_soon(self._worker)

    async def _worker(self) -> None:
        try:
            while self._queue:
                coro = self._queue.popleft()
                self._running += 1
                try:
                    await self._run(coro)
                finally:
                    self._running -= 1
        finally:
            self._workers -= 1

    async def _run(self, coro: Coroutine[Any, Any, Any]) -> None:
        try:
            if self._rate is not None:
                await self._rate.acquire()
        except BaseException:
            coro.close()
            raise
        if self._timeout is None:
            await coro
        else:
            assert self._backend is not None
            await self._backend.within(self._timeout, coro, self._too_slow)

    def _too_slow(self) -> TimeoutError:
        """The same exception on every framework, as documented."""
        return TimeoutError(f"task exceeded the pool's timeout of {self._timeout} s")
