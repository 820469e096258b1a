"""`all_of`: several rate limits taken together, all or nothing (e.g. requests/min + tokens/min)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from types import TracebackType
from typing import final

from admission._native import Decision
from admission._validate import timeout_seconds
from admission._waiting import sleep
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

    Waiting (``await both.acquire(costs=...)``) reserves a slot in every limiter at once, FIFO
    in each, and proceeds when the latest is due; a cancelled or timed-out wait refunds all.
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

    def _reserve_all(
        self, costs: tuple[int, ...], max_wait: float | None, refusal: str
    ) -> tuple[float, list[tuple[_Limiter, int, int]]] | float:
        """Reserves in every limiter; on a miss refunds the others and returns the need."""
        # A cost that can never fit is refused before anything is reserved, so no limiter
        # is charged or counted for it.
        for lim, cost in zip(self._limiters, costs, strict=True):
            lim.peek(cost)  # raises CapacityError (and checks the cost's type) only
        taken: list[tuple[_Limiter, int, int]] = []
        wait = 0.0
        try:
            for lim, cost in zip(self._limiters, costs, strict=True):
                ok, seconds, token = lim._reserve(cost, max_wait)
                if not ok:
                    for other, c, t in taken:
                        other._refund(c, t, refusal)  # type: ignore[arg-type]
                    lim._count(refusal)  # type: ignore[arg-type]
                    return max(wait, seconds)
                taken.append((lim, cost, token))
                wait = max(wait, seconds)
        except BaseException:
            for other, c, t in taken:
                other._refund(c, t, "cancelled")
            raise
        return wait, taken

    def _advance_manual_clocks(self, wait: float) -> bool:
        """Virtual time, as for a single limiter: when every limiter runs on a
        `ManualClock`, the wait advances those clocks (each once) instead of sleeping."""
        clocks = [lim.clock for lim in self._limiters]
        if any(c is None for c in clocks):
            return False
        seen: list[object] = []
        for clock in clocks:
            if clock is not None and not any(clock is s for s in seen):
                seen.append(clock)
                clock.advance(wait)
        return True

    def try_acquire(self, costs: Sequence[int] | None = None) -> bool:
        """Admits now in every limiter, or in none; never waits."""
        result = self._reserve_all(self._costs(costs), 0.0, "rejected")
        if isinstance(result, float):
            return False
        for lim, cost, _ in result[1]:
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

    def _begin(
        self, costs: Sequence[int] | None, timeout: float | None
    ) -> tuple[float, float, list[tuple[_Limiter, int, int]]]:
        """Reserves in every limiter; returns the wait, the part of it to sleep (none on
        manual clocks, which it advances instead) and the reservations. Raises
        `AcquireTimeout` at once if the wait cannot be met."""
        timeout = timeout_seconds(timeout)
        result = self._reserve_all(self._costs(costs), timeout, "timed_out")
        if isinstance(result, float):
            raise AcquireTimeout(timeout if timeout is not None else 0.0, needed=result)
        wait, taken = result
        if wait > 0 and self._advance_manual_clocks(wait):
            return wait, 0.0, taken
        return wait, wait, taken

    @staticmethod
    def _end(taken: list[tuple[_Limiter, int, int]], waited: float, used: bool) -> None:
        for lim, cost, token in taken:
            if used:
                lim._commit(cost, waited if waited > 0 else None)  # records the wait in each
            else:
                lim._refund(cost, token, "cancelled")

    async def acquire(
        self, costs: Sequence[int] | None = None, timeout: float | None = None
    ) -> None:
        """Waits until every limiter admits its cost (FIFO in each); all or nothing."""
        wait, sleep_for, taken = self._begin(costs, timeout)
        try:
            if sleep_for > 0:
                await sleep(sleep_for)
        except BaseException:
            self._end(taken, wait, used=False)
            raise
        self._end(taken, wait, used=True)

    def acquire_blocking(
        self, costs: Sequence[int] | None = None, timeout: float | None = None
    ) -> None:
        """Like `acquire`, waiting in this thread."""
        wait, sleep_for, taken = self._begin(costs, timeout)
        try:
            if sleep_for > 0:
                time.sleep(sleep_for)
        except BaseException:
            self._end(taken, wait, used=False)
            raise
        self._end(taken, wait, used=True)

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
