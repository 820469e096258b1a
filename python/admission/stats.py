"""Typed snapshots of a primitive's counters, returned by ``stats()``."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LimiterStats", "SemaphoreStats"]


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
    """``try_acquire`` calls refused because the limit was reached."""
    timed_out: int
    """Waiting requests that gave up at their timeout (or knew at once they could not make it)."""
    cancelled: int
    """Waiting requests withdrawn by cancellation; their reservations were refunded."""

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

    @property
    def attempts(self) -> int:
        """All requests: the sum of the four outcomes."""
        return self.admitted + self.rejected + self.timed_out + self.cancelled
