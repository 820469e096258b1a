"""`RetryBudget`: retries allowed only while they stay a fraction of the calls (Finagle, Envoy).

Retries that each caller makes on its own multiply the load on a failing dependency by the
number of attempts, exactly when it can least take it. A budget shared by every `Retry` that
calls one dependency caps that: over the last ``window`` seconds, retries may be at most
``ratio`` of the calls, plus a floor of ``min_per_second`` (so that a quiet service still
retries a lone failure). Past that, a retry is refused and the call fails at once with its
last error: the budget fails fast, it never waits.

The window is kept in ten buckets: each call and retry adds to the current bucket, and
buckets older than the window are dropped as time moves on, so every operation costs O(1)
(at most ten buckets cleared) and memory is fixed. One lock makes it safe to share between
threads, tasks and event loops.

>>> import admission as adm
>>> clock = adm.testing.ManualClock()
>>> budget = adm.RetryBudget(ratio=0.5, min_per_second=0, window="10s", clock=clock)
>>> for _ in range(4):
...     budget.deposit()          # four calls
>>> [budget.try_withdraw() for _ in range(3)]   # half of them may be retried
[True, True, False]
>>> clock.advance(10.0)           # a window later, those calls no longer count
10.0
>>> budget.try_withdraw(), budget.stats().refused
(False, 2)
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import final

from admission._native import LoopClock, ManualClock
from admission._validate import duration_seconds

__all__ = ["RetryBudget", "RetryBudgetStats"]

_BUCKETS = 10
# Float products (0.29 * 100 = 28.999999999999996) must not refuse a retry the ratio allows.
_SLACK = 1e-9


@final
@dataclass(frozen=True, slots=True)
class RetryBudgetStats:
    """A snapshot of a `RetryBudget`: totals since it was made, and the window now."""

    calls: int
    """Calls deposited (first attempts), in total."""
    retries: int
    """Retries the budget allowed, in total."""
    refused: int
    """Retries the budget refused (each failed its call at once), in total."""
    window_calls: int
    """Calls in the current window."""
    window_retries: int
    """Retries in the current window."""
    available: int
    """Retries the budget would allow now."""


@final
class RetryBudget:
    """At most ``ratio`` retries per call over the last ``window``, plus ``min_per_second``.

    Share one budget between every `admission.Retry` that calls the same dependency
    (``Retry(..., budget=budget)``): each call deposits one, each retry withdraws one, and
    a retry the budget refuses ends its call at once with the attempt's error (counted as
    ``gave_up["budget"]`` in the retry's stats and ``refused`` here).

    ``ratio=0.2`` (the default, as in Finagle) lets an outage raise the load on the
    dependency by at most 20 % (plus the floor), whatever the attempts of each retry.
    ``min_per_second * window`` retries are always allowed in a window. ``clock``: a
    `admission.testing.ManualClock` (tests) or `admission.LoopClock`; the process's
    monotonic clock by default.
    """

    __slots__ = (
        "_bucket_end",
        "_buckets_calls",
        "_buckets_retries",
        "_calls",
        "_epoch",
        "_floor",
        "_index",
        "_lock",
        "_now",
        "_ratio",
        "_refused",
        "_retries",
        "_width",
        "_window",
        "_window_calls",
        "_window_retries",
        "clock",
    )

    def __init__(
        self,
        ratio: float = 0.2,
        min_per_second: float = 10.0,
        window: float | str = "10s",
        *,
        clock: ManualClock | LoopClock | None = None,
    ) -> None:
        self._ratio = _nonnegative(ratio, "ratio")
        min_per_second = _nonnegative(min_per_second, "min_per_second")
        self._window = duration_seconds(window, "window", positive=True)
        if clock is not None and not isinstance(clock, (ManualClock, LoopClock)):
            raise TypeError(
                f"clock must be an admission.testing.ManualClock, an admission.LoopClock or "
                f"None, got {clock!r}"
            )
        self.clock = clock
        self._now: Callable[[], float] = time.monotonic if clock is None else clock.now
        self._floor = min_per_second * self._window
        self._width = self._window / _BUCKETS
        self._lock = threading.Lock()
        self._buckets_calls = [0] * _BUCKETS
        self._buckets_retries = [0] * _BUCKETS
        self._window_calls = 0
        self._window_retries = 0
        self._epoch: int | None = None
        self._index = 0  # the current bucket
        self._bucket_end = -math.inf  # when the current bucket ends: roll from then on
        self._calls = 0
        self._retries = 0
        self._refused = 0

    @property
    def ratio(self) -> float:
        """Retries allowed per call in the window."""
        return self._ratio

    @property
    def min_per_second(self) -> float:
        """Retries per second always allowed, whatever the calls."""
        return self._floor / self._window

    @property
    def window(self) -> float:
        """The window, in seconds."""
        return self._window

    def deposit(self) -> None:
        """Counts one call (a first attempt). `admission.Retry` calls it for you."""
        now = self._now()
        with self._lock:
            if now >= self._bucket_end:
                self._roll(now)
            self._buckets_calls[self._index] += 1
            self._window_calls += 1
            self._calls += 1

    def try_withdraw(self) -> bool:
        """Takes one retry from the budget if it allows one now; never waits.

        False (counted as ``refused``): the caller should give up instead of retrying.
        """
        now = self._now()
        with self._lock:
            if now >= self._bucket_end:
                self._roll(now)
            if self._window_retries + 1 > self._allowed() + _SLACK:
                self._refused += 1
                return False
            self._buckets_retries[self._index] += 1
            self._window_retries += 1
            self._retries += 1
            return True

    def stats(self) -> RetryBudgetStats:
        """The totals and the current window."""
        now = self._now()
        with self._lock:
            if now >= self._bucket_end:
                self._roll(now)
            available = max(0, math.floor(self._allowed() + _SLACK) - self._window_retries)
            return RetryBudgetStats(
                calls=self._calls,
                retries=self._retries,
                refused=self._refused,
                window_calls=self._window_calls,
                window_retries=self._window_retries,
                available=available,
            )

    def _allowed(self) -> float:
        return self._ratio * self._window_calls + self._floor

    def _roll(self, now: float) -> None:
        """Moves to the bucket of ``now``, dropping the buckets that left the window.
        Called with the lock held, once ``now`` is past the current bucket's end."""
        epoch = math.floor(now / self._width)
        last = self._epoch
        if last is not None and epoch <= last:
            # Float rounding at a bucket's edge, or a clock that went back (a LoopClock read
            # on another loop): counted in the newest bucket, not in one already dropped.
            return
        if last is not None:
            # At most one full turn: older buckets are all gone anyway.
            for step in range(1, min(epoch - last, _BUCKETS) + 1):
                index = (last + step) % _BUCKETS
                self._window_calls -= self._buckets_calls[index]
                self._window_retries -= self._buckets_retries[index]
                self._buckets_calls[index] = 0
                self._buckets_retries[index] = 0
        self._epoch = epoch
        self._index = epoch % _BUCKETS
        self._bucket_end = (epoch + 1) * self._width

    def __repr__(self) -> str:
        return (
            f"RetryBudget(ratio={self._ratio}, min_per_second={self.min_per_second}, "
            f"window={self._window})"
        )


def _nonnegative(value: float, arg: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{arg} must be a number >= 0, got {value!r}")
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{arg} must be a finite number >= 0, got {value!r}")
    return number
