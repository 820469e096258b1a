"""`all_of`: several rate limits taken together, all or nothing (e.g. requests/min + tokens/min)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import final

from admission import _native, _rate_wait
from admission._native import Decision
from admission._validate import timeout_seconds
from admission.errors import AcquireTimeout
from admission.rate import SlidingWindow, TokenBucket

__all__ = ["AllOf", "all_of"]

_Limiter = TokenBucket | SlidingWindow


@final
class AllOf:
    """Rate limiters acquired together: either every one admits its cost, or none is charged.

    Typical use is a provider's request *and* token quotas:

    >>> import admission as adm
    >>> rpm = adm.TokenBucket(rate=60, per=60.0)
    >>> tpm = adm.TokenBucket(rate=90_000, per=60.0)
    >>> both = adm.all_of(rpm, tpm)
    >>> both.try_acquire(costs=(1, 850))
    True
    >>> both.try_acquire(costs=(1, 100_000))   # over the token burst: refused, rpm not charged
    Traceback (most recent call last):
    admission.errors.CapacityError: cost 100000 exceeds the capacity 90000: ...

    Waiting (``await both.acquire(costs=...)``) takes what is free and queues in the other
    limiters, FIFO in each, and proceeds once every one has admitted its cost; a cancelled or
    timed-out wait gives back everything it held (queued places, grants, admissions).
    """

    __slots__ = ("_limiters",)

    def __init__(self, *limiters: _Limiter) -> None:
        if not limiters:
            raise ValueError("all_of() needs at least one rate limiter")
        for lim in limiters:
            if not isinstance(lim, (TokenBucket, SlidingWindow)):
                raise TypeError(f"all_of() takes TokenBucket or SlidingWindow objects, got {lim!r}")
        self._limiters: tuple[_Limiter, ...] = limiters

    @property
    def limiters(self) -> tuple[_Limiter, ...]:
        return self._limiters

    def _costs(self, costs: Sequence[int] | None) -> tuple[int, ...]:
        if costs is None:
            return (1,) * len(self._limiters)
        costs = tuple(costs)
        if len(costs) != len(self._limiters):
            raise ValueError(
                f"costs must have one entry per limiter ({len(self._limiters)}), got {costs!r}"
            )
        return costs

    def _take_all(
        self, costs: tuple[int, ...], refusal: _native._Refusal
    ) -> list[tuple[_Limiter, int, tuple[int, int]]] | None:
        """Admits in every limiter now, counting nothing yet; on a refusal undoes the ones
        taken, counts ``refusal`` in each limiter asked, and returns None."""
        # A cost that can never fit is refused before anything is taken, so no limiter is
        # charged or counted for it.
        for lim, cost in zip(self._limiters, costs, strict=True):
            lim.peek(cost)  # raises CapacityError (and checks the cost's type) only
        taken: list[tuple[_Limiter, int, tuple[int, int]]] = []
        for lim, cost in zip(self._limiters, costs, strict=True):
            got = lim._take(cost)
            if got is None:
                _rate_wait.give_up((), taken, timed_out=False, counted=False)
                for other, _, _ in taken:
                    other._count(refusal)
                lim._count(refusal)
                return None
            taken.append((lim, cost, got))
        return taken

    def try_acquire(self, costs: Sequence[int] | None = None) -> bool:
        """Admits now in every limiter, or in none (a refusal charges none); never waits."""
        taken = self._take_all(self._costs(costs), "rejected")
        if taken is None:
            return False
        for lim, cost, _ in taken:
            lim._commit(cost)
        return True

    def peek(self, costs: Sequence[int] | None = None) -> Decision:
        """The combined decision: allowed if all allow; the longest retry and reset."""
        ds = [lim.peek(c) for lim, c in zip(self._limiters, self._costs(costs), strict=True)]
        return Decision(
            all(d.allowed for d in ds),
            min(d.remaining for d in ds),
            max(d.retry_after for d in ds),
            max(d.reset_after for d in ds),
        )

    def _enqueue_all(
        self, costs: tuple[int, ...], timeout: float | None, wake: Callable[[], None]
    ) -> tuple[
        list[tuple[_Limiter, _native.RateTicket]], list[tuple[_Limiter, int, tuple[int, int]]]
    ]:
        """Takes what is free now and queues in the other limiters (FIFO in each). Raises
        `AcquireTimeout` at once, holding nothing, if one of them cannot make the deadline."""
        for lim, cost in zip(self._limiters, costs, strict=True):
            lim.peek(cost)  # CapacityError before anything is taken
        waits: list[tuple[_Limiter, _native.RateTicket]] = []
        taken: list[tuple[_Limiter, int, tuple[int, int]]] = []
        try:
            for lim, cost in zip(self._limiters, costs, strict=True):
                got = lim._take(cost)
                if got is not None:
                    taken.append((lim, cost, got))
                    continue
                # Always queued (never admitted here): an admission is only counted once
                # every limiter has admitted, and a queued ticket can be given back.
                ticket = lim._enqueue(cost, timeout, wake, False)
                assert ticket is not None
                waits.append((lim, ticket))
        except AcquireTimeout:
            # That limiter counted it; the others are given back and counted the same.
            _rate_wait.give_up(waits, taken, timed_out=True)
            raise
        except BaseException:
            _rate_wait.give_up(waits, taken, timed_out=False)
            raise
        return waits, taken

    @staticmethod
    def _admitted(
        waits: _rate_wait.Waits, taken: list[tuple[_Limiter, int, tuple[int, int]]], start: float
    ) -> None:
        """Counts the admission in every limiter, with the wait of the whole request."""
        _rate_wait.consume(waits)
        waited = time.monotonic() - start if waits else None
        for lim, cost, _ in taken:
            lim._commit(cost, waited)

    async def acquire(
        self, costs: Sequence[int] | None = None, timeout: float | None = None
    ) -> None:
        """Waits until every limiter admits its cost (FIFO in each); all or nothing: a
        cancelled or timed-out wait gives back what it held."""
        start = time.monotonic()
        timeout = timeout_seconds(timeout)
        costs_ = self._costs(costs)
        wake = _rate_wait.async_waker()
        waits, taken = self._enqueue_all(costs_, timeout, wake)
        try:
            await _rate_wait.wait_async(waits, timeout, wake)
        except _rate_wait.TimedOut:
            _rate_wait.give_up(waits, taken, timed_out=True)
            raise AcquireTimeout(timeout if timeout is not None else 0.0) from None
        except BaseException:
            _rate_wait.give_up(waits, taken, timed_out=False)
            raise
        self._admitted(waits, taken, start)

    def acquire_blocking(
        self, costs: Sequence[int] | None = None, timeout: float | None = None
    ) -> None:
        """Like `acquire`, waiting in this thread."""
        start = time.monotonic()
        timeout = timeout_seconds(timeout)
        costs_ = self._costs(costs)
        wake = _rate_wait.ThreadWake()
        waits, taken = self._enqueue_all(costs_, timeout, wake)
        try:
            if waits:
                _rate_wait.check_blocking_allowed(waits)
            _rate_wait.wait_blocking(waits, timeout, wake)
        except _rate_wait.TimedOut:
            _rate_wait.give_up(waits, taken, timed_out=True)
            raise AcquireTimeout(timeout if timeout is not None else 0.0) from None
        except BaseException:
            _rate_wait.give_up(waits, taken, timed_out=False)
            raise
        self._admitted(waits, taken, start)

    async def __aenter__(self) -> AllOf:
        await self.acquire()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def __enter__(self) -> AllOf:
        self.acquire_blocking()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def __repr__(self) -> str:
        return f"all_of({', '.join(map(repr, self._limiters))})"


def all_of(*limiters: _Limiter) -> AllOf:
    """Combines rate limiters so that they are acquired together, all or nothing."""
    return AllOf(*limiters)
