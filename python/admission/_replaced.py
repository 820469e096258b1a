"""The token buckets of a `ConcurrencyManager`'s limits across reloads (`Buckets`): kept while
their settings hold, replaced when they change, the use carried over from each one to its
replacement, and the replaced ones' counters kept for `ConcurrencyManager.stats` without
keeping the buckets alive (see the `admission.manager` documentation)."""

from __future__ import annotations

import dataclasses
import math
import threading
import weakref
from typing import Protocol

from admission._native import LoopClock, ManualClock
from admission.durations import Rate
from admission.rate import TokenBucket
from admission.stats import LimiterStats

__all__ = ["Buckets", "Counted"]


class Counted(Protocol):
    """A rate limiter as `Buckets` counts it: an in-process `TokenBucket`, or one in a store
    (a limit in a store has the same names and counters)."""

    @property
    def name(self) -> str | None: ...
    def stats(self) -> LimiterStats: ...


class Buckets:
    """A manager's token buckets across reloads, and the counters of those it replaced."""

    __slots__ = ("_clock", "_retired")

    def __init__(self, clock: ManualClock | LoopClock | None) -> None:
        self._clock = clock
        self._retired: dict[str, _Retired] = {}  # replaced buckets, by name

    def bucket(
        self,
        name: str,
        rate: Rate | None,
        burst: int | None,
        previous: TokenBucket | None,
        previous_rate: Rate | None,
        previous_burst: int | None,
    ) -> TokenBucket | None:
        """The bucket ``name`` for ``rate`` and ``burst`` (None: no rate limit): ``previous``
        if it had these settings, else a new one that starts as used as ``previous`` was.
        Creates a bucket, changes none that is in use. Raises `ValueError` for settings no
        bucket takes."""
        if rate is None:
            return None
        if previous is not None and (previous_rate, previous_burst) == (rate, burst):
            return previous
        bucket = TokenBucket(rate.count, rate.per, burst, clock=self._clock, name=name)
        if previous is not None:
            _carry_over(previous, bucket)
        return bucket

    def retire(self, old: Counted | None, new: Counted | None) -> None:
        """Notes that ``new`` took the place of ``old`` (None: the limit is gone)."""
        if old is not None and old is not new:
            # Its counters (and those of waiters it admits later) stay in stats().
            self._retired.setdefault(old.name or "", _Retired()).add(old)

    def stats(self, bucket: Counted | None) -> LimiterStats | None:
        """``bucket``'s stats plus those of every bucket it replaced (so they never drop)."""
        if bucket is None:
            return None
        retired = self._retired.get(bucket.name or "")
        return bucket.stats() if retired is None else retired.add_to(bucket.stats())


def _add_stats(total: LimiterStats, past: LimiterStats) -> LimiterStats:
    """``total`` with the counters, waiters and waits of ``past`` added (its name kept)."""
    # Every field but the name is a count (or a histogram, which adds up too).
    return dataclasses.replace(
        total,
        **{
            f.name: getattr(total, f.name) + getattr(past, f.name)
            for f in dataclasses.fields(total)
            if f.name != "name"
        },
    )


class _Replaced:
    """A bucket a reload replaced: held strongly only while requests wait on it (they are
    still to be counted), else weakly, with the stats it last showed."""

    __slots__ = ("held", "last", "ref")

    def __init__(self, bucket: Counted) -> None:
        self.ref = weakref.ref(bucket)
        self.last = bucket.stats()
        self.held: Counted | None = bucket if self.last.waiting else None

    def read(self) -> LimiterStats | None:
        """Its stats now, or None once it is gone (then `last` are its final ones: it was
        not held, so nobody waited on it at the last read)."""
        bucket = self.held if self.held is not None else self.ref()
        if bucket is None:
            return None
        self.last = bucket.stats()
        self.held = bucket if self.last.waiting else None
        return self.last


class _Retired:
    """The buckets reloads replaced under one limiter name, for `ConcurrencyManager.stats`.

    Keeps the replaced buckets' counters, not the buckets: those that are gone are one frozen
    `LimiterStats`; the others are tracked by `_Replaced` until they go.
    """

    __slots__ = ("_frozen", "_lock", "_replaced")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._frozen: LimiterStats | None = None
        self._replaced: list[_Replaced] = []

    def add(self, bucket: Counted) -> None:
        with self._lock:
            self._replaced.append(_Replaced(bucket))
            self._read()  # folds the ones that are gone: memory stays bounded

    def _read(self) -> list[LimiterStats]:
        live = []
        kept = []
        for replaced in self._replaced:
            stats = replaced.read()
            if stats is None:
                last = replaced.last
                self._frozen = last if self._frozen is None else _add_stats(self._frozen, last)
            else:
                live.append(stats)
                kept.append(replaced)
        self._replaced = kept
        return live

    def add_to(self, stats: LimiterStats) -> LimiterStats:
        """``stats`` (the current bucket's) plus every replaced bucket's."""
        with self._lock:
            parts = self._read()
            if self._frozen is not None:
                parts.append(self._frozen)
        for past in parts:
            stats = _add_stats(stats, past)
        return stats


def _carry_over(old: TokenBucket, new: TokenBucket) -> None:
    """Makes ``new`` start as used as ``old`` is, its queue included: a reload is never a
    free burst. The old bucket still admits the requests queued on it, at its own rate; the
    new one counts them as spent already, so together they never admit more than either
    configuration would alone."""
    try:
        # reset_after: how long until the old bucket is full again, counting its waiters.
        used = old.peek(0).reset_after / old.emission_interval
    except RuntimeError:
        return  # a LoopClock read outside its loop: nothing to carry, the new one starts full
    debt = math.ceil(used - 1e-9)
    if debt > 0:
        # Charged, not admitted: it moves the bucket's clock without counting anything.
        new._charge(debt)
