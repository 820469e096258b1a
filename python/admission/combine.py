"""`all_of`: several rate limits taken together, all or nothing (e.g. requests/min + tokens/min)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from types import TracebackType
from typing import final

from admission import _backend, _native, _rate_wait
from admission._native import Decision
from admission._rate_wait import RateLimiter
from admission._validate import timeout_seconds
from admission.reserve import OnError, Reserve

__all__ = ["AllOf", "all_of"]

# An immediate admission held while the other limiters are waited for: (limiter, cost,
# (record, time)) for `_untake`.
_Held = tuple[RateLimiter, int, tuple[int, int]]


@final
class AllOf(_native.AllOf):
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

    ``try_acquire``, and ``await both.acquire(costs=...)`` when every limiter admits at once,
    are one native call. Waiting takes what is free and queues in the other limiters, FIFO in
    each, and proceeds once every one has admitted its cost; a cancelled or timed-out wait
    gives back everything it held (queued places, grants, admissions).
    """

    __slots__ = ()

    # The native half checks the limiters and holds them (`limiters`), and runs
    # `try_acquire` and the immediate path of `acquire`.

    def _costs(self, costs: Sequence[int] | None) -> tuple[int, ...]:
        n = len(self.limiters)
        if costs is None:
            return (1,) * n
        costs = tuple(costs)
        if len(costs) != n:
            raise ValueError(f"costs must have one entry per limiter ({n}), got {costs!r}")
        return costs

    def peek(self, costs: Sequence[int] | None = None) -> Decision:
        """The combined decision: allowed if all allow; the longest retry and reset."""
        ds = [lim.peek(c) for lim, c in zip(self.limiters, self._costs(costs), strict=True)]
        return Decision(
            all(d.allowed for d in ds),
            min(d.remaining for d in ds),
            max(d.retry_after for d in ds),
            max(d.reset_after for d in ds),
        )

    def reserve(
        self,
        costs: Sequence[int] | None = None,
        *,
        timeout: float | str | None = None,
        on_error: OnError = "keep",
    ) -> Reserve:
        """Admits ``costs`` (one estimate per limiter) like `acquire`, to be settled at the
        real costs: ``async with both.reserve(costs=(1, est)) as r: ...;
        r.settle(costs=(1, actual))``. See `admission.reserve`."""
        return Reserve(self.limiters, self._costs(costs), timeout, on_error, primary=None)

    @staticmethod
    def _admitted(waits: _rate_wait.Waits, taken: list[_Held], start: float) -> None:
        """Counts the admission in every limiter, with the wait of the whole request."""
        _rate_wait.consume(waits)
        waited = time.monotonic() - start
        for lim, cost, _ in taken:
            lim._commit(cost, waited)

    async def _acquire_slow(self, costs: tuple[int, ...], timeout: float | None) -> None:
        """The waiting path of ``await acquire()``: on asyncio when a limiter was full; on
        trio always, since every call must be a checkpoint (as for a single limiter)."""
        start = time.monotonic()
        backend = _backend.current()
        if await backend.first_step(lambda: self._try_take(costs)):
            return
        wake = backend.waker()
        waits, taken = _rate_wait.enqueue_all(self.limiters, costs, timeout, wake)
        await _rate_wait.wait_async(waits, taken, timeout, backend, wake)
        self._admitted(waits, taken, start)

    def acquire_blocking(
        self, costs: Sequence[int] | None = None, timeout: float | None = None
    ) -> None:
        """Like `acquire`, waiting in this thread."""
        costs_ = self._costs(costs)
        timeout = timeout_seconds(timeout)
        if self._try_take(costs_):
            return
        _rate_wait.refuse_blocking_in_a_loop(self.limiters)
        start = time.monotonic()
        wake = _backend.ThreadWaker()
        waits, taken = _rate_wait.enqueue_all(self.limiters, costs_, timeout, wake)
        _rate_wait.wait_blocking(waits, taken, timeout, wake)
        self._admitted(waits, taken, start)

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
        return f"all_of({', '.join(map(repr, self.limiters))})"


def all_of(*limiters: RateLimiter) -> AllOf:
    """Combines rate limiters so that they are acquired together, all or nothing."""
    return AllOf(*limiters)
