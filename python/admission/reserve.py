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

This module owns the reservation's life; the waiting is `admission._rate_wait`'s.
"""

from __future__ import annotations

import operator
import time
from collections.abc import Generator, Sequence
from types import TracebackType
from typing import Literal, final

from admission import _backend, _rate_wait
from admission._rate_wait import RateLimiter
from admission._validate import timeout_seconds

__all__ = ["OnError", "Reservation", "Reserve", "take_now"]

OnError = Literal["keep", "refund"]

# (limiter, reserved cost, (record, time)) of each limit held: what `_untake` needs.
_Part = tuple[RateLimiter, int, tuple[int, int]]
_COST = operator.itemgetter(1)


_MAX_COST = (1 << 64) - 1


def _count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    if value > _MAX_COST:  # (beyond any capacity, and beyond what a limiter counts)
        raise ValueError(f"{name} must be at most 2**64 - 1, got {value}")
    return value


@final
class Reservation:
    """Costs admitted at an estimate; `settle` them at what was really used.

    >>> import admission as adm
    >>> tpm = adm.TokenBucket(rate=1000, per=60.0)
    >>> with tpm.reserve(800) as r:
    ...     r.settle(300)                  # 500 go back
    >>> tpm.stats().admitted_cost, tpm.peek(700).allowed
    (300, True)
    """

    __slots__ = ("_parts", "_primary", "_reserved", "_settled")

    def __init__(self, parts: Sequence[_Part], primary: int | None) -> None:
        self._parts = tuple(parts)
        self._reserved = tuple(map(_COST, self._parts))
        # The part `settle(actual)` settles (the others keep their cost); None: an all_of,
        # settled with costs=(...).
        self._primary = primary
        self._settled: tuple[int, ...] | None = None

    @property
    def reserved(self) -> tuple[int, ...]:
        """The costs admitted, one per limiter."""
        return self._reserved

    @property
    def settled(self) -> tuple[int, ...] | None:
        """The costs it was settled at, or None if it has not been."""
        return self._settled

    def settle(self, actual: int | None = None, *, costs: Sequence[int] | None = None) -> None:
        """Settles at the real cost: ``settle(actual)`` for one limiter (and for
        ``manager.limit(name, tokens=n)``: its tokens), ``settle(costs=(...))`` with one cost
        per limiter for an `all_of`. The unused part goes back (waiters first);
        an overage is charged as a debt. Once only: a second call raises `RuntimeError`.

        Raises:
            TypeError / ValueError: a cost that is not an int >= 0, or the wrong number of
                costs.
            RuntimeError: settled already.
        """
        new = self._costs(actual, costs)
        if self._settled is not None:
            raise RuntimeError(
                f"admission: this reservation was settled already at {self._settled}"
            )
        self._settled = new
        # Every part is settled even if one raises (a LoopClock read outside its loop).
        error: BaseException | None = None
        for (limiter, reserved, grant), cost in zip(self._parts, new, strict=True):
            if cost == reserved:
                continue  # (the usual part of an all_of: a request is one request)
            try:
                if cost < reserved:
                    limiter._untake(reserved - cost, *grant)
                else:
                    limiter._charge(cost - reserved)
                limiter._resettle(reserved, cost)
            except Exception as exc:
                if error is None:
                    error = exc
        if error is not None:
            raise error

    def refund(self) -> None:
        """Settles at zero: everything goes back (the call never used the limits)."""
        self.settle(costs=(0,) * len(self._parts))

    def _costs(self, actual: int | None, costs: Sequence[int] | None) -> tuple[int, ...]:
        n = len(self._parts)
        if (actual is None) == (costs is None):
            raise TypeError(
                "settle() takes the actual cost, or costs=(...) for all_of: one of them"
            )
        if actual is not None:
            primary = self._primary
            if primary is None:
                raise TypeError(
                    f"this reservation holds {n} limits: settle(costs=(...)) with one cost each"
                )
            if type(actual) is not int or actual < 0:  # (plain ints: checked here, at once)
                actual = _count("actual", actual)
            reserved = self._reserved
            return (*reserved[:primary], actual, *reserved[primary + 1 :])
        assert costs is not None
        if isinstance(costs, (str, bytes)) or len(costs) != n:
            raise ValueError(f"costs must have one entry per limiter ({n}), got {costs!r}")
        checked = tuple(costs)
        for cost in checked:
            if type(cost) is not int or cost < 0:  # (plain ints: checked here, at once)
                return tuple([_count("costs", c) for c in checked])
        return checked

    def __repr__(self) -> str:
        return f"<Reservation reserved={self.reserved} settled={self._settled}>"


def _take_all(limiters: Sequence[RateLimiter], costs: Sequence[int]) -> list[_Part] | None:
    """Admits every cost now, or none (a refusal is not counted); the parts, or None."""
    parts: list[_Part] = []
    for limiter, cost in zip(limiters, costs, strict=True):
        got = limiter._take(cost)
        if got is None:
            _rate_wait.give_up((), parts, timed_out=False, counted=False)
            return None
        parts.append((limiter, cost, got))
    for limiter, cost, _ in parts:
        limiter._commit(cost)
    return parts


def take_now(
    limiters: Sequence[RateLimiter], costs: Sequence[int], primary: int | None = None
) -> Reservation | None:
    """The reservation of ``costs`` if every limiter admits it now (nobody waits, it fits),
    else None with nothing taken: the immediate path of `Reserve`, without its checks (the
    caller knows each cost fits the capacity), for callers on a hot path. ``primary``: the
    limiter ``settle(actual)`` settles, as in `Reserve`; None (default): an all_of's
    reservation, settled with ``costs=``."""
    parts = _take_all(limiters, costs)
    return None if parts is None else Reservation(parts, primary)


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
        parts: list[_Part] | None = None
        tried = False

        def take() -> bool:
            nonlocal parts, tried
            tried = True
            parts = _take_all(limiters, costs)
            return parts is not None

        # trio's first step is a checkpoint that tries; asyncio's tries nothing (it stays
        # suspension-free): then the try is here.
        admitted = await backend.first_step(take)
        if not admitted and not tried:
            admitted = take()
        if not admitted:
            wake = backend.waker()
            waits, taken = _rate_wait.enqueue_all(limiters, costs, timeout, wake)
            await _rate_wait.wait_async(waits, taken, timeout, backend, wake)
            parts = _granted(limiters, waits, taken, start)
        assert parts is not None
        return Reservation(parts, self._primary)

    def acquire_blocking(self) -> Reservation:
        """Like `acquire`, waiting in this thread."""
        limiters, costs, timeout = self._limiters, self._costs, self._timeout
        parts = _take_all(limiters, costs)
        if parts is None:
            _rate_wait.refuse_blocking_in_a_loop(limiters)
            start = time.monotonic()
            wake = _backend.ThreadWaker()
            waits, taken = _rate_wait.enqueue_all(limiters, costs, timeout, wake)
            _rate_wait.wait_blocking(waits, taken, timeout, wake)
            parts = _granted(limiters, waits, taken, start)
        return Reservation(parts, self._primary)

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
