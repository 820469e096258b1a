"""Waiting in rate limiters' queues: one plan for asyncio, trio and threads, over one limiter
or several taken together (`all_of`).

A waiting request holds a place in each limiter's queue (a native ticket), not a slot of
time. Only the head of a queue is ever due: its waiter sleeps until then and polls the
limiter, which grants every head that fits and wakes them, and wakes the new head so that it
starts timing its turn. A waiter that gives up withdraws its tickets, wherever they stand:
the waiters behind move up, and a grant it had not used yet goes back.

`_steps` is that plan as a generator of "wait this long" instructions, so the task and
thread drivers below share it and differ only in how they sleep and are woken: by the
wakers of `admission._backend` (one contract for asyncio, trio and threads).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Sequence
from typing import TypeAlias

from admission import _native
from admission._backend import AsyncWaker, Backend, ThreadWaker, Waker, in_event_loop_thread
from admission.errors import AcquireTimeout

__all__ = [
    "RateLimiter",
    "Taken",
    "Waits",
    "consume",
    "enqueue_all",
    "give_up",
    "refuse_blocking_in_a_loop",
    "wait_async",
    "wait_blocking",
]

# A timeout this long (about 31 years) or longer is no limit: timers refuse such values.
_FOREVER = 1e9
# One nanosecond, the clocks' tick: float seconds closer than this are the same instant.
_NS = 1e-9


RateLimiter: TypeAlias = "_native.TokenBucket | _native.SlidingWindow"
"""A rate limiter as its native half: the private reservation protocol the waiting paths use
(``_enqueue``, ``_status``, ``_poll``, ``_withdraw``, ``_consume``, ``_take``, ``_untake``,
``_count``, ...) is defined once natively (one macro of pymethods, ``rust/py/src/rate.rs``) and
typed by ``_native.pyi``, which stubtest checks against it (each class in full, since stubtest
checks only what a stub class defines itself)."""

# (limiter, ticket) for each queue the request waits in.
Waits: TypeAlias = "Sequence[tuple[RateLimiter, _native.RateTicket]]"
# (limiter, cost, (record, time)) for each immediate admission held meanwhile (`all_of`).
Taken: TypeAlias = "Sequence[tuple[RateLimiter, int, tuple[int, int]]]"


class _TimedOut(Exception):
    """The deadline passed before every ticket was granted."""


def _manual_clocks(waits: Waits) -> list[_native.ManualClock] | None:
    """The distinct manual clocks, if every limiter runs on one (virtual time)."""
    clocks: list[_native.ManualClock] = []
    for limiter, _ in waits:
        clock = limiter.clock
        if clock is None:
            return None
        if not any(clock is c for c in clocks):
            clocks.append(clock)
    return clocks


def _steps(
    waits: Waits, timeout: float | None, wake: Waker, now: Callable[[], float]
) -> Generator[float | None, None, None]:
    """Yields how long to wait (None: until woken; 0: a checkpoint) until every ticket is
    granted; raises `_TimedOut` at the deadline. ``now()`` is the clock the waits sleep on
    (the loop's); the deadline is kept on the limiters' own clock when they all read the
    process's monotonic clock (a real-clock limiter under a virtual loop is timed in real
    time, like its decisions)."""
    manual = _manual_clocks(waits)
    if manual:
        clock_now = manual[0].now
    elif all(limiter._clock_kind == "monotonic" for limiter, _ in waits):
        clock_now = time.monotonic
    else:
        clock_now = now
    deadline = None if timeout is None or timeout >= _FOREVER else clock_now() + timeout
    while True:
        wake.arm()  # before reading the stands: a wake from now on is not lost
        head_due: float | None = None
        pending = False
        for limiter, ticket in waits:
            stand, due_in = limiter._status(ticket)
            if stand == "granted":
                continue
            if stand != "head" and stand != "queued":  # pragma: no cover - a bug if reached
                raise RuntimeError(f"admission: a waiting ticket reads {stand!r}")
            pending = True
            if stand == "head":
                head_due = due_in if head_due is None else min(head_due, due_in)
        left = None if deadline is None else deadline - clock_now()
        if not pending:
            # On virtual time another waiter may have moved the clock past this one's
            # deadline before granting it: a real wait would have given up by then.
            if manual and left is not None and left < -_NS:
                raise _TimedOut
            return
        if left is not None and left <= 0:
            raise _TimedOut
        if head_due is not None and manual:
            # Virtual time: the turn comes at once, so tests never hang or sleep; but not
            # past the deadline (then the next look times out, as a real wait would).
            # (float seconds: within a tick of the deadline is on time)
            due = left is None or head_due <= left + _NS
            step = head_due if left is None or due else left
            if step > 0:
                for clock in manual:
                    clock.advance(step)
            if due:
                _poll(waits)
            yield 0
            continue
        if head_due is not None and (left is None or head_due <= left):
            yield head_due
            _poll(waits)
        else:
            yield None if manual else left


def _poll(waits: Waits) -> None:
    for limiter, ticket in waits:
        if limiter._status(ticket)[0] != "granted":
            limiter._poll()


def enqueue_all(
    limiters: Sequence[RateLimiter], costs: Sequence[int], timeout: float | None, wake: Waker
) -> tuple[
    list[tuple[RateLimiter, _native.RateTicket]], list[tuple[RateLimiter, int, tuple[int, int]]]
]:
    """Takes what is free now and queues in the other limiters (FIFO in each): the tickets
    to wait for and the admissions held meanwhile. Raises `AcquireTimeout` at once, holding
    nothing, if one of them cannot make the deadline."""
    for limiter, cost in zip(limiters, costs, strict=True):
        limiter.peek(cost)  # CapacityError before anything is taken
    waits: list[tuple[RateLimiter, _native.RateTicket]] = []
    taken: list[tuple[RateLimiter, int, tuple[int, int]]] = []
    try:
        for limiter, cost in zip(limiters, costs, strict=True):
            got = limiter._take(cost)
            if got is not None:
                taken.append((limiter, cost, got))
                continue
            # Always queued (never admitted here): an admission is only counted once every
            # limiter has admitted, and a queued ticket can be given back.
            ticket = limiter._enqueue(cost, timeout, wake, False)
            assert ticket is not None
            waits.append((limiter, ticket))
    except AcquireTimeout:
        # That limiter counted it; the others are given back and counted the same.
        give_up(waits, taken, timed_out=True)
        raise
    except BaseException:
        give_up(waits, taken, timed_out=False)
        raise
    return waits, taken


def consume(waits: Waits) -> None:
    """Takes every granted ticket (each counted admitted with its wait)."""
    for limiter, ticket in waits:
        limiter._consume(ticket)


def give_up(waits: Waits, taken: Taken, timed_out: bool, counted: bool = True) -> None:
    """Withdraws every ticket and undoes every immediate admission held, each counted once
    in its limiter as timed out or cancelled (the admissions only if ``counted``). Grants
    not used yet go back."""
    # Each one is given up even if another raises (a LoopClock read outside its loop): the
    # first error is raised at the end, after nothing is held any more.
    errors: list[BaseException] = []
    for limiter, ticket in waits:
        try:
            limiter._withdraw(ticket, timed_out)
        except Exception as exc:
            errors.append(exc)
    for limiter, cost, (record, at) in taken:
        try:
            limiter._untake(cost, record, at)
        except Exception as exc:
            errors.append(exc)
        if counted:
            limiter._count("timed_out" if timed_out else "cancelled")
    if errors:
        raise errors[0]


async def wait_async(
    waits: Waits, taken: Taken, timeout: float | None, backend: Backend, wake: AsyncWaker
) -> None:
    """Waits in this task until every ticket is granted. On any way out but that, gives
    everything up (`give_up`): `AcquireTimeout` at the deadline, or the exception."""
    try:
        await _wait_async(waits, timeout, backend, wake)
    except _TimedOut:
        give_up(waits, taken, timed_out=True)
        raise AcquireTimeout(timeout if timeout is not None else 0.0) from None
    except BaseException:
        # Cancelled, however the caller gave up: nothing is kept, a grant goes back.
        give_up(waits, taken, timed_out=False)
        raise


async def _wait_async(
    waits: Waits, timeout: float | None, backend: Backend, wake: AsyncWaker
) -> None:
    for seconds in _steps(waits, timeout, wake, backend.time):
        if seconds == 0:
            await backend.checkpoint()
        else:
            await wake.wait(seconds)


def refuse_blocking_in_a_loop(limiters: Sequence[RateLimiter]) -> None:
    """Raises `RuntimeError` (counted as rejected in each limiter) in the thread of a running
    event loop (asyncio or trio), which a blocking wait would stall with every task on it;
    unless every limiter runs on virtual time (a manual clock: the wait passes at once).
    Called when the request would have to wait."""
    if not in_event_loop_thread():
        return
    if all(limiter.clock is not None for limiter in limiters):
        return
    for limiter in limiters:
        limiter._count("rejected")
    raise RuntimeError(
        "admission: a blocking acquire (`with limiter:` or `acquire_blocking`) would block "
        "the running event loop: use `async with limiter:` or `await limiter.acquire()`"
    )


def wait_blocking(waits: Waits, taken: Taken, timeout: float | None, wake: ThreadWaker) -> None:
    """Waits in this thread until every ticket is granted, like `wait_async`."""
    try:
        for seconds in _steps(waits, timeout, wake, time.monotonic):
            if seconds != 0:
                wake.wait(seconds)
    except _TimedOut:
        give_up(waits, taken, timed_out=True)
        raise AcquireTimeout(timeout if timeout is not None else 0.0) from None
    except BaseException:
        # Interrupted (KeyboardInterrupt, a signal handler's exception): nothing is kept.
        give_up(waits, taken, timed_out=False)
        raise
