"""Reserve, then settle: rate limits charged at an estimate, settled at the real cost.

An LLM call's tokens are known only after the response. ``limiter.reserve(estimate)`` admits
the estimate like ``acquire`` does (FIFO, waiting if need be, all or nothing over an
`all_of`), and the `Reservation` it yields settles it afterwards:

- **Less was used**: the unused part goes back by the rule a cancelled grant follows
  (``untake``): to the waiters first, never to a newcomer past them; all of it when nothing
  was admitted since, else never more than no later admission could have been refused for.
- **More was used**: the overage is charged as a debt, never refused (the tokens were spent),
  beyond the burst if need be; later callers wait for it, in their order.
- **Never settled** by the end of the block: the estimate stands. An exception out of the
  block: ``on_error="keep"`` (default) keeps the estimate, ``"refund"`` gives it all back.

``admitted_cost`` in `stats()` counts what was settled; the admission count and the wait
histogram are those of the reservation (one admission, its wait).

>>> import admission as adm
>>> tpm = adm.TokenBucket(rate=1000, per=60.0)
>>> with tpm.reserve(800) as r:
...     r.settle(300)                  # 500 go back
>>> tpm.stats().admitted_cost, tpm.peek(700).allowed, r.reserved, r.settled
(300, True, (800,), (300,))

This module owns the reservation's life; the waiting is `admission._rate_wait`'s. Taking a
reservation at once (`take_now`) and settling it (`Reservation`) are native: one call each,
the client's hot path.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Sequence
from types import TracebackType
from typing import Literal, final

from admission import _backend, _rate_wait
from admission._native import Reservation, take_now
from admission._rate_wait import RateLimiter
from admission._validate import timeout_seconds

__all__ = ["OnError", "Reservation", "Reserve", "take_now"]

OnError = Literal["keep", "refund"]

# (limiter, reserved cost, (record, time)) of each limit held: what `_untake` needs.
_Part = tuple[RateLimiter, int, tuple[int, int]]

_MAX_COST = (1 << 64) - 1


def _count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    if value > _MAX_COST:  # (beyond any capacity, and beyond what a limiter counts)
        raise ValueError(f"{name} must be at most 2**64 - 1, got {value}")
    return value


def _granted(
    limiters: Sequence[RateLimiter], waits: _rate_wait.Waits, taken: list[_Part], start: float
) -> list[_Part]:
    """Counts the admission in every limiter (with the whole request's wait); its parts, in
    the limiters' order (each was either taken at once or waited, in that order)."""
    _rate_wait.consume(waits)
    waited = time.monotonic() - start
    for limiter, cost, _ in taken:
        limiter._commit(cost, waited)
    held, queued = iter(taken), iter(waits)
    parts: list[_Part] = []
    next_held = next(held, None)
    for limiter in limiters:
        if next_held is not None and next_held[0] is limiter:
            parts.append(next_held)
            next_held = next(held, None)
            continue
        waiter, ticket = next(queued)
        grant = ticket._grant
        assert grant is not None  # consumed: granted
        parts.append((waiter, ticket.cost, grant))
    return parts


@final
class Reserve:
    """What ``limiter.reserve(estimate)`` returns: ``async with`` it (or ``with`` in threads)
    to be admitted at the estimate; it yields the `Reservation` to settle. ``await
    reserve.acquire()`` (and ``reserve.acquire_blocking()``) give the reservation without a
    block: then nothing is done about exceptions.
    """

    __slots__ = ("_costs", "_held", "_limiters", "_on_error", "_primary", "_timeout")

    def __init__(
        self,
        limiters: Sequence[RateLimiter],
        costs: Sequence[int],
        timeout: float | str | None,
        on_error: OnError,
        primary: int | None = 0,
    ) -> None:
        if on_error not in ("keep", "refund"):
            raise ValueError(f"on_error must be 'keep' or 'refund', got {on_error!r}")
        self._limiters = tuple(limiters)
        # Named as the caller named them: `limiter.reserve(estimate)`, `all_of(...).reserve(
        # costs=(...))`.
        name = "estimate" if len(costs) == 1 else "costs"
        self._costs = tuple(_count(name, c) for c in costs)
        for limiter, cost in zip(self._limiters, self._costs, strict=True):
            limiter.peek(cost)  # CapacityError now, before anything is taken
        self._timeout = timeout_seconds(timeout)
        self._on_error = on_error
        self._primary = primary
        self._held: list[Reservation] = []

    async def acquire(self) -> Reservation:
        """Waits in this task until every estimate is admitted (FIFO); the reservation."""
        limiters, costs, timeout = self._limiters, self._costs, self._timeout
        start = time.monotonic()
        backend = _backend.current()
        reservation: Reservation | None = None
        tried = False

        def take() -> bool:
            nonlocal reservation, tried
            tried = True
            reservation = take_now(limiters, costs, self._primary)
            return reservation is not None

        # trio's first step is a checkpoint that tries; asyncio's tries nothing (it stays
        # suspension-free): then the try is here.
        admitted = await backend.first_step(take)
        if not admitted and not tried:
            admitted = take()
        if not admitted:
            wake = backend.waker()
            waits, taken = _rate_wait.enqueue_all(limiters, costs, timeout, wake)
            await _rate_wait.wait_async(waits, taken, timeout, backend, wake)
            reservation = Reservation(_granted(limiters, waits, taken, start), self._primary)
        assert reservation is not None
        return reservation

    def acquire_blocking(self) -> Reservation:
        """Like `acquire`, waiting in this thread."""
        limiters, costs, timeout = self._limiters, self._costs, self._timeout
        reservation = take_now(limiters, costs, self._primary)
        if reservation is None:
            _rate_wait.refuse_blocking_in_a_loop(limiters)
            start = time.monotonic()
            wake = _backend.ThreadWaker()
            waits, taken = _rate_wait.enqueue_all(limiters, costs, timeout, wake)
            _rate_wait.wait_blocking(waits, taken, timeout, wake)
            reservation = Reservation(_granted(limiters, waits, taken, start), self._primary)
        return reservation

    # A Reserve may be entered by several tasks at once: each block's reservation is the
    # last one pushed that its exit pops (blocks nest and end in order within a task, and
    # a shared Reserve across tasks is undefined: make one per call, as `reserve()` does).

    async def __aenter__(self) -> Reservation:
        reservation = await self.acquire()
        self._held.append(reservation)
        return reservation

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._exit(exc is not None)

    def __enter__(self) -> Reservation:
        reservation = self.acquire_blocking()
        self._held.append(reservation)
        return reservation

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._exit(exc is not None)

    def _exit(self, failed: bool) -> None:
        reservation = self._held.pop()
        if failed and self._on_error == "refund" and reservation.settled is None:
            reservation.refund()

    def __await__(self) -> Generator[object, None, Reservation]:
        return self.acquire().__await__()

    def __repr__(self) -> str:
        return f"<Reserve costs={self._costs} on_error={self._on_error!r}>"
