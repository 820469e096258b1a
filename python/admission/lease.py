"""`Lease`, the admission ``ConcurrencyManager.limit(name)`` returns, and `_Entry`, the objects
of one limit that it admits against."""

from __future__ import annotations

import time
from collections.abc import Awaitable
from dataclasses import dataclass
from types import TracebackType

from admission._native import Ready
from admission.combine import AllOf
from admission.concurrency import Semaphore
from admission.policies import Policy
from admission.rate import TokenBucket
from admission.reserve import Reservation, Reserve, take_now

__all__ = ["Lease"]


@dataclass(frozen=True, slots=True)
class _Entry:
    """One limit's objects. Replaced whole on reload; a request keeps the one it started with."""

    policy: Policy
    semaphore: Semaphore
    rate: TokenBucket | None
    tokens: TokenBucket | None
    both: AllOf | None


class Lease:
    """The admission ``manager.limit(name)`` returns: ``async with`` it, or ``with`` in threads.

    Entering takes a permit, then the rate limits (all or nothing), within the timeout, and
    raises `AcquireTimeout` past it; leaving gives the permit back. A lease holds no state of
    its own: it can be entered any number of times, by any number of tasks and threads.

    With ``tokens=`` on a limit that has a tokens limit, the tokens are a reservation: the
    block gets the `Reservation`, whose ``settle(actual)`` charges the real count afterwards
    (the unused part goes back, an overage is a debt; unsettled, the estimate stands).
    Otherwise ``as`` binds None.

    >>> from admission import ConcurrencyManager
    >>> m = ConcurrencyManager.from_dict({"limits": {"db": {"concurrency": 1}}})
    >>> lease = m.limit("db", timeout="50ms")
    >>> with lease:
    ...     with m.limit("db", timeout=0.01):
    ...         pass
    Traceback (most recent call last):
    admission.errors.AcquireTimeout: not admitted within the timeout of 0.010 s
    >>> m.semaphore("db").in_use
    0
    """

    __slots__ = ("_cost", "_entry", "_timeout", "_tokens")

    def __init__(self, entry: _Entry, cost: int, tokens: int, timeout: float | None) -> None:
        self._entry = entry
        self._cost = cost
        self._tokens = tokens
        self._timeout = timeout

    def __aenter__(self) -> Awaitable[Reservation | None]:
        # Not a coroutine: when everything admits at once this returns the native `Ready`
        # (no coroutine, no Task), which makes ``async with manager.limit(...)`` about as
        # cheap as ``async with semaphore``. ``as`` therefore binds None.
        entry = self._entry
        # Decided now, not at the first step like ``acquire()``: ``async with`` awaits at once.
        waiting = entry.semaphore._acquire_now(1, self._timeout)
        if entry.rate is None and not (entry.tokens is not None and self._tokens):
            return waiting  # a semaphore only: its awaitable is the whole admission
        if entry.tokens is not None and self._tokens:
            return self._enter_reserved(waiting)
        if type(waiting) is not Ready:
            return self._enter_slow(waiting)
        # The permit is held; now the rate limit, giving the permit back if that fails.
        try:
            rated = self._rate(self._timeout)
        except BaseException:
            entry.semaphore.release(1)
            raise
        if rated is None or type(rated) is Ready:
            return waiting  # the (stateless) Ready of the semaphore: nothing left to wait for
        return self._await_rate(rated)

    async def _enter_slow(self, waiting: Awaitable[None]) -> None:
        timeout = self._timeout
        if timeout is not None and type(waiting) is not Ready:
            # It had to queue: whatever the wait took comes off the rate limits' share.
            start = time.monotonic()
            await waiting
            timeout = max(0.0, timeout - (time.monotonic() - start))
        else:
            await waiting
        try:
            rated = self._rate(timeout)
            if rated is not None:
                await rated
        except BaseException:
            self._entry.semaphore.release(1)
            raise

    def _reserve_now(self) -> Reservation | None:
        """The reservation if the rate limits admit it at once (nobody waits, it fits), else
        None: `_reserve`'s immediate path without its checks, for plain costs that fit (any
        other goes to `_reserve`, which raises what it must)."""
        entry = self._entry
        tokens = entry.tokens
        assert tokens is not None
        cost, count = self._cost, self._tokens
        if type(count) is not int or not 0 <= count <= tokens.burst:
            return None
        if entry.both is None:
            return take_now((tokens,), (count,), 0)
        rate = entry.rate
        assert rate is not None
        if type(cost) is not int or not 0 <= cost <= rate.burst:
            return None
        return take_now(entry.both.limiters, (cost, count), 1)

    def _reserve(self, timeout: float | None) -> Reserve:
        """The rate limits' reservation: the tokens, with the request cost if it has one."""
        entry = self._entry
        assert entry.tokens is not None
        if entry.both is not None:
            limits, costs = entry.both.limiters, (self._cost, self._tokens)
            return Reserve(limits, costs, timeout, "keep", primary=1)
        return entry.tokens.reserve(self._tokens, timeout=timeout)

    async def _enter_reserved(self, waiting: Awaitable[None]) -> Reservation:
        start = time.monotonic()
        await waiting
        timeout = self._timeout
        if timeout is not None:
            timeout = max(0.0, timeout - (time.monotonic() - start))
        try:
            reservation = self._reserve_now()
            if reservation is not None:
                return reservation
            return await self._reserve(timeout).acquire()
        except BaseException:
            self._entry.semaphore.release(1)
            raise

    async def _await_rate(self, rated: Awaitable[None]) -> None:
        try:
            await rated
        except BaseException:
            self._entry.semaphore.release(1)
            raise

    def _rate(self, timeout: float | None) -> Awaitable[None] | None:
        """The rate limits' admission (None: nothing to take)."""
        # (Tokens are a reservation: `_enter_reserved`.)
        entry = self._entry
        if entry.rate is not None:
            return entry.rate.acquire(self._cost, timeout)
        return None

    def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Awaitable[None]:
        return self._entry.semaphore.__aexit__(exc_type, exc, tb)  # releases; returns Ready

    def __enter__(self) -> Reservation | None:
        entry = self._entry
        timeout = self._timeout
        if entry.rate is None and not (entry.tokens is not None and self._tokens):
            entry.semaphore.acquire_blocking(1, timeout)  # a semaphore only: nothing to time
            return None
        start = time.monotonic()
        entry.semaphore.acquire_blocking(1, timeout)
        try:
            if timeout is not None:
                timeout = max(0.0, timeout - (time.monotonic() - start))
            if entry.tokens is not None and self._tokens:
                reservation = self._reserve_now()
                if reservation is not None:
                    return reservation
                return self._reserve(timeout).acquire_blocking()
            if entry.rate is not None:
                entry.rate.acquire_blocking(self._cost, timeout)
        except BaseException:
            entry.semaphore.release(1)
            raise
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._entry.semaphore.release(1)

    def __repr__(self) -> str:
        return f"<Lease {self._entry.policy.name!r} timeout={self._timeout!r}>"
