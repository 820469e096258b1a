"""Typed snapshots of a primitive's counters, returned by ``stats()``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import final

from admission._native import WAIT_BOUNDS

__all__ = ["LimiterStats", "SemaphoreStats", "WaitHistogram"]


@dataclass(frozen=True, slots=True)
class WaitHistogram:
    """How long admitted requests waited, in fixed log-spaced buckets.

    Kept natively, lock-free, and written only by requests that waited: an immediate
    admission touches nothing. A snapshot counts every admission that was never observed
    waiting as a zero wait, so ``count`` equals the primitive's ``admitted`` counter.

    ``bounds`` are the buckets' inclusive upper bounds in seconds: ``0``, then the 1-2-5
    series from 1 µs to 100 s (``1e-06, 2e-06, 5e-06, 1e-05, ..., 50.0, 100.0``).
    ``counts[i]`` is the number of waits in bucket ``i`` (``bounds[i-1] < wait <= bounds[i]``);
    the last entry of ``counts`` (one more than ``bounds``) holds the waits over 100 s.

    >>> import admission as adm
    >>> clock = adm.testing.ManualClock()
    >>> b = adm.TokenBucket(rate=1, per=1.0, burst=1, clock=clock)
    >>> with b:
    ...     pass              # admitted at once
    >>> with b:
    ...     pass              # waits one (virtual) second for the next token
    >>> h = b.stats().wait
    >>> h.count, h.waited, h.sum
    (2, 1, 1.0)
    >>> h.quantile(0.5), h.quantile(1.0)
    (0.0, 1.0)
    """

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    sum: float
    """Sum of all waits, in seconds."""

    @classmethod
    def empty(cls) -> WaitHistogram:
        """A histogram with no observation."""
        return cls(WAIT_BOUNDS, (0,) * (len(WAIT_BOUNDS) + 1), 0.0)

    @classmethod
    def _from_native(cls, raw: tuple[list[float], list[int], float]) -> WaitHistogram:
        bounds, counts, total = raw
        return cls(tuple(bounds), tuple(counts), total)

    @property
    def count(self) -> int:
        """Number of admissions observed (waited or not)."""
        return sum(self.counts)

    @property
    def waited(self) -> int:
        """Admissions that waited at all (the ones not in the ``0`` bucket)."""
        return self.count - self.counts[0]

    @property
    def mean(self) -> float:
        """Mean wait in seconds (0.0 when empty)."""
        n = self.count
        return self.sum / n if n else 0.0

    def cumulative(self) -> tuple[int, ...]:
        """Running totals: entry ``i`` counts the waits ``<= bounds[i]``; the last is ``count``."""
        out: list[int] = []
        running = 0
        for c in self.counts:
            running += c
            out.append(running)
        return tuple(out)

    def count_over(self, seconds: float) -> int:
        """Waits certainly longer than ``seconds``: those in buckets whose lower bound is at
        least ``seconds`` (a bucket straddling ``seconds`` is not counted)."""
        # Bucket i holds waits in (bounds[i-1], bounds[i]]; all of them exceed `seconds` iff
        # bounds[i-1] >= seconds.
        return sum(c for i, c in enumerate(self.counts) if i > 0 and self.bounds[i - 1] >= seconds)

    def quantile(self, q: float) -> float:
        """An upper bound of the ``q``-quantile wait: the smallest bucket bound that at least
        a fraction ``q`` of the waits do not exceed (``inf`` if that is the overflow bucket,
        0.0 when empty)."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"q must be between 0 and 1, got {q}")
        n = self.count
        if n == 0:
            return 0.0
        rank = q * n
        for bound, running in zip((*self.bounds, math.inf), self.cumulative(), strict=True):
            if running >= rank and running > 0:
                return bound
        return math.inf  # pragma: no cover - the last running total is n >= rank

    def __add__(self, other: WaitHistogram) -> WaitHistogram:
        if not isinstance(other, WaitHistogram):
            return NotImplemented
        if other.bounds != self.bounds:
            raise ValueError("cannot add histograms with different bounds")
        counts = tuple(a + b for a, b in zip(self.counts, other.counts, strict=True))
        return WaitHistogram(self.bounds, counts, self.sum + other.sum)


@dataclass(frozen=True, slots=True)
class LimiterStats:
    """Counters of a rate limiter at one instant.

    Every request is counted exactly once, in exactly one outcome, so
    ``attempts == admitted + rejected + timed_out + cancelled`` always holds.
    """

    name: str | None
    admitted: int
    """Requests admitted (immediately, or after waiting)."""
    admitted_cost: int
    """Sum of the admitted requests' costs (tokens)."""
    rejected: int
    """Requests refused at once: ``try_acquire`` found no room (or someone waiting), or the
    call was refused by an error (a cost over the capacity, a blocking wait in a running
    loop's thread)."""
    timed_out: int
    """Waiting requests that gave up at their timeout (or knew at once they could not make it)."""
    cancelled: int
    """Waiting requests withdrawn by cancellation; nothing of theirs is kept."""
    waiting: int = 0
    """Requests waiting in the limiter's queue right now."""
    wait: WaitHistogram = field(default_factory=WaitHistogram.empty, compare=False)
    """How long the admitted requests waited (``wait.count == admitted``). Not compared by
    ``==``, which compares the counters."""

    @property
    def attempts(self) -> int:
        """All requests: the sum of the four outcomes."""
        return self.admitted + self.rejected + self.timed_out + self.cancelled


@dataclass(frozen=True, slots=True)
class SemaphoreStats:
    """Gauges and counters of a semaphore at one instant (outcomes as in `LimiterStats`)."""

    name: str | None
    limit: int
    in_use: int
    available: int
    waiting: int
    high_water: int
    """The most permits ever held at once."""
    admitted: int
    admitted_cost: int
    rejected: int
    timed_out: int
    cancelled: int
    oldest_wait: float = field(default=0.0, compare=False)
    """Seconds the longest waiter has been waiting so far (0.0 when nobody waits)."""
    wait: WaitHistogram = field(default_factory=WaitHistogram.empty, compare=False)
    """How long the admitted requests waited, from queueing to being granted their permits."""

    @property
    def attempts(self) -> int:
        """All requests: the sum of the four outcomes."""
        return self.admitted + self.rejected + self.timed_out + self.cancelled


@final
@dataclass(frozen=True)
class KeyedStats:
    """Totals over every key of a keyed limiter (never one figure per key).

    ``admitted + rejected + timed_out + cancelled`` counts every attempt. ``expired`` keys were
    removed after ``idle_ttl`` at rest, ``evicted`` ones to make room beyond ``max_keys``;
    ``refused_full`` attempts found no room (counted in ``rejected`` too, or raised
    `TooManyKeys`).
    """

    name: str | None
    keys: int
    max_keys: int
    admitted: int
    admitted_cost: int
    rejected: int
    timed_out: int
    cancelled: int
    waiting: int
    expired: int
    evicted: int
    refused_full: int
