"""Waiting for a pool's permit with one timer per pool instead of one per waiter.

Under contention every acquisition waits, so the waiting path is the pool's hot path. The
generic `Semaphore.acquire(timeout=...)` arms a loop timer per waiter (a heap push, a
cancel, heap churn) and works on asyncio and trio alike; measured against a raw asyncpg pool
at concurrency 50 that was most of the manager's overhead. A pool's waiters all have the
same ``acquire_timeout`` and are granted in FIFO order, so their deadlines are in queue
order: one timer, armed for the oldest live waiter, expires them all. The grant itself is
still the native semaphore's decision (``_enqueue``/``_cancel``, as in `Semaphore`), with
the same cancellation guarantees: a permit granted to a waiter that is cancelled or timed
out in the same instant is passed on or kept, never lost. asyncio only (so is asyncpg).
"""

from __future__ import annotations

import asyncio
from collections import deque

from admission.concurrency import Semaphore

__all__ = ["PermitWaiters"]

_WOKEN = True
_TIMED_OUT = False


class PermitWaiters:
    """FIFO waiting for one permit of ``semaphore``, timed by one shared timer."""

    __slots__ = ("_deadlines", "_loop", "_semaphore", "_timer", "wait_max", "wait_total", "waited")

    def __init__(self, semaphore: Semaphore) -> None:
        self._semaphore = semaphore
        self.waited = 0
        """Waits that ended with the permit."""
        self.wait_total = 0.0
        """Their summed duration, seconds."""
        self.wait_max = 0.0
        """The longest of them, seconds."""
        # (deadline, future) in queue order, so deadlines never decrease along it.
        self._deadlines: deque[tuple[float, asyncio.Future[bool]]] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def wait(self, timeout: float | None) -> str:
        """Queues for one permit. Returns ``"granted"`` (the permit is held), ``"timed_out"``
        or ``"closed"`` (not held). Cancellation propagates with nothing held."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()

        def wake() -> None:  # called by the semaphore's release/close, on this loop
            if not future.done():
                future.set_result(_WOKEN)

        sem = self._semaphore
        ticket = sem._enqueue(1, wake)
        if ticket is None:
            return "granted"
        start = loop.time()
        if timeout is not None:
            self._add_deadline(loop, start + timeout, future)
        try:
            woken = await future
        except BaseException:
            # Cancelled. A permit handed over in the same instant is passed on.
            if sem._cancel(ticket) == "granted":
                sem.release()
            raise
        if woken is _TIMED_OUT:
            # Granted just as the deadline passed: it is ours, keep it.
            if sem._cancel(ticket, timed_out=True) != "granted":
                return "timed_out"
        elif ticket.outcome != "granted":
            return "closed"
        waited = loop.time() - start
        self.waited += 1
        self.wait_total += waited
        if waited > self.wait_max:
            self.wait_max = waited
        return "granted"

    def _add_deadline(
        self, loop: asyncio.AbstractEventLoop, deadline: float, future: asyncio.Future[bool]
    ) -> None:
        queue = self._deadlines
        # Waiters leave in FIFO order, so those already served sit at the head: dropping
        # them here keeps the queue as long as the number of live waiters.
        while queue and queue[0][1].done():
            queue.popleft()
        queue.append((deadline, future))
        if self._timer is None:
            self._loop = loop
            self._timer = loop.call_at(queue[0][0], self._expire)

    def _expire(self) -> None:
        """Times out every waiter whose deadline has passed; re-arms for the oldest live one."""
        self._timer = None
        loop = self._loop
        if loop is None:  # pragma: no cover - armed only with a loop
            return
        now = loop.time()
        queue = self._deadlines
        while queue and (queue[0][1].done() or queue[0][0] <= now):
            _, future = queue.popleft()
            if not future.done():
                future.set_result(_TIMED_OUT)
        if queue:
            self._timer = loop.call_at(queue[0][0], self._expire)

    def close(self) -> None:
        """Stops the timer (the semaphore's close wakes the waiters themselves)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._deadlines.clear()
