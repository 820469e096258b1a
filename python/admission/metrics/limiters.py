"""The primitives' figures, aggregated into one series per ``(kind, limiter)``.

`limiters` reads every live primitive (and the counts of the dropped ones); `collect` turns the
series into families and adds those of every source (see `admission.metrics.add_source`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from admission import _registry
from admission._native import WAIT_BOUNDS
from admission.concurrency import Semaphore
from admission.metrics.families import (
    _OUTCOMES,
    PREFIX,
    UNNAMED,
    Family,
    HistogramSample,
    Sample,
    _sources,
    _sources_lock,
)
from admission.rate import SlidingWindow, TokenBucket
from admission.stats import WaitHistogram

__all__ = ["Kind", "LimiterSeries", "collect", "limiters"]

_log = logging.getLogger("admission.metrics")

Kind = Literal["semaphore", "token_bucket", "sliding_window"]


# ---------------------------------------------------------------------------------------------
# The primitives, aggregated per (kind, name)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LimiterSeries:
    """The figures of one ``(kind, limiter)`` series at one instant: the sum over the live
    primitives of that kind and name (and, for the counters and the histogram, over the
    dropped ones). Gauges that do not apply to the kind are None."""

    kind: Kind
    limiter: str
    primitives: int
    """Live primitives in the series."""
    waiters: int
    admitted: int
    admitted_cost: int
    rejected: int
    timed_out: int
    cancelled: int
    wait: WaitHistogram
    oldest_wait: float = 0.0
    in_use: int | None = None
    limit: int | None = None
    high_water: int | None = None
    tokens_available: int | None = None
    tokens_capacity: int | None = None

    @property
    def utilization(self) -> float | None:
        """How full the series is, 0.0 to 1.0 (more if a semaphore's limit was lowered below
        its holders): ``in_use / limit`` for semaphores, ``1 - tokens_available /
        tokens_capacity`` for rate limiters. None when no live primitive is in the series."""
        if self.primitives == 0:
            return None
        if self.in_use is not None and self.limit:
            return self.in_use / self.limit
        if self.tokens_available is not None and self.tokens_capacity:
            return 1.0 - self.tokens_available / self.tokens_capacity
        return None


def _kind_of(obj: object) -> Kind | None:
    if isinstance(obj, Semaphore):
        return "semaphore"
    if isinstance(obj, TokenBucket):
        return "token_bucket"
    if isinstance(obj, SlidingWindow):
        return "sliding_window"
    return None


def _tokens_available(limiter: TokenBucket | SlidingWindow) -> int | None:
    """The largest cost ``try_acquire`` would admit right now: ``peek(1).remaining + 1`` when a
    cost of 1 would be admitted, else 0 (nothing fits, or waiters are ahead)."""
    try:
        d = limiter.peek(1)
    except Exception:
        # A LoopClock limiter outside its loop (the exporter's thread): no reading.
        return None
    return d.remaining + 1 if d.allowed else 0


class _Acc:
    """Accumulates one series."""

    __slots__ = (
        "available",
        "capacity",
        "counters",
        "counts",
        "high_water",
        "in_use",
        "limit",
        "oldest",
        "primitives",
        "sum",
        "waiters",
    )

    def __init__(self) -> None:
        self.primitives = 0
        self.waiters = 0
        self.oldest = 0.0
        self.counters = [0, 0, 0, 0, 0]
        self.counts: list[int] | None = None
        self.sum = 0.0
        self.in_use = 0
        self.limit = 0
        self.high_water = 0
        self.available: int | None = None
        self.capacity = 0

    def add_counts(self, counters: Iterable[int], counts: list[int], total: float) -> None:
        self.counters = [a + b for a, b in zip(self.counters, counters, strict=True)]
        self.counts = (
            counts
            if self.counts is None
            else [a + b for a, b in zip(self.counts, counts, strict=True)]
        )
        self.sum += total


def limiters() -> list[LimiterSeries]:
    """Every ``(kind, limiter)`` series now, sorted by kind and name.

    >>> import admission as adm
    >>> a, b = adm.TokenBucket(10, name="doc-api"), adm.TokenBucket(10, name="doc-api")
    >>> a.try_acquire(3), b.try_acquire()
    (True, True)
    >>> api = next(s for s in adm.metrics.limiters() if s.limiter == "doc-api")
    >>> api.primitives, api.admitted, api.admitted_cost, api.tokens_available
    (2, 2, 4, 16)
    """
    objs, retired = _registry.snapshot()
    accs: dict[tuple[Kind, str], _Acc] = {}

    def acc(kind: Kind, name: str | None) -> _Acc:
        key = (kind, UNNAMED if name is None else name)
        a = accs.get(key)
        if a is None:
            a = accs[key] = _Acc()
        return a

    for obj in objs:
        kind = _kind_of(obj)
        if kind is None:
            continue
        a = acc(kind, obj.name)
        a.primitives += 1
        _bounds, counts, total = obj._wait_histogram()
        a.add_counts(obj._counters(), counts, total)
        a.waiters += obj.waiting
        if isinstance(obj, Semaphore):
            a.in_use += obj.in_use
            a.limit += obj.limit
            a.high_water += obj.high_water
            a.oldest = max(a.oldest, obj._oldest_wait())
        else:
            tokens = _tokens_available(obj)
            if tokens is not None:
                a.available = tokens + (a.available or 0)
            a.capacity += obj.burst if isinstance(obj, TokenBucket) else obj.limit
    for (kind_s, name), r in retired.items():
        kind = _kind_of_name(kind_s)
        if kind is not None:
            acc(kind, name).add_counts(r.counters, r.counts, r.sum)

    out = []
    for (kind, label), a in sorted(accs.items()):
        hist = (
            WaitHistogram.empty()
            if a.counts is None
            else WaitHistogram(WAIT_BOUNDS, tuple(a.counts), a.sum)
        )
        admitted, admitted_cost, rejected, timed_out, cancelled = a.counters
        live = a.primitives > 0
        sem = kind == "semaphore"
        out.append(
            LimiterSeries(
                kind=kind,
                limiter=label,
                primitives=a.primitives,
                waiters=a.waiters,
                admitted=admitted,
                admitted_cost=admitted_cost,
                rejected=rejected,
                timed_out=timed_out,
                cancelled=cancelled,
                wait=hist,
                oldest_wait=a.oldest,
                in_use=a.in_use if sem and live else None,
                limit=a.limit if sem and live else None,
                high_water=a.high_water if sem and live else None,
                tokens_available=a.available if not sem and live else None,
                # (None too when no limiter of the series could be read: see _tokens_available)
                tokens_capacity=a.capacity if not sem and live else None,
            )
        )
    return out


def _kind_of_name(kind: str) -> Kind | None:
    if kind == "semaphore":
        return "semaphore"
    if kind == "token_bucket":
        return "token_bucket"
    if kind == "sliding_window":
        return "sliding_window"
    return None


def _gauge(
    name: str, help: str, series: list[LimiterSeries], value: Callable[[LimiterSeries], Any]
) -> Family:
    samples = tuple(
        Sample({"kind": s.kind, "limiter": s.limiter}, float(v))
        for s in series
        if (v := value(s)) is not None
    )
    return Family(PREFIX + name, "gauge", help, samples)


def _primitive_families() -> list[Family]:
    series = limiters()
    live = [s for s in series if s.primitives > 0]
    acquisitions = tuple(
        Sample({"kind": s.kind, "limiter": s.limiter, "outcome": outcome}, float(v))
        for s in series
        for outcome, v in zip(
            _OUTCOMES, (s.admitted, s.rejected, s.timed_out, s.cancelled), strict=True
        )
    )
    histograms = tuple(
        HistogramSample.of({"kind": s.kind, "limiter": s.limiter}, s.wait) for s in series
    )
    return [
        _gauge("limiters", "Live primitives in the series.", series, lambda s: s.primitives),
        _gauge("permits_in_use", "Semaphore permits held now.", live, lambda s: s.in_use),
        _gauge("permits_limit", "Semaphore permit limits.", live, lambda s: s.limit),
        _gauge(
            "high_water",
            "Most semaphore permits ever held at once (summed over the series' semaphores).",
            live,
            lambda s: s.high_water,
        ),
        _gauge("waiters", "Requests waiting to be admitted now.", live, lambda s: s.waiters),
        _gauge(
            "oldest_wait_seconds",
            "How long the longest current semaphore waiter has waited so far.",
            [s for s in live if s.kind == "semaphore"],
            lambda s: s.oldest_wait,
        ),
        _gauge(
            "tokens_available",
            "Largest cost a rate limiter's try_acquire would admit now "
            "(peek(1).remaining + 1, or 0 when nothing fits or waiters are ahead).",
            live,
            lambda s: s.tokens_available,
        ),
        _gauge(
            "tokens_capacity",
            "Rate limiter capacity: a token bucket's burst, a sliding window's limit.",
            live,
            lambda s: s.tokens_capacity,
        ),
        Family(
            PREFIX + "acquisitions",
            "counter",
            "Requests by outcome: admitted, rejected (refused at once), timeout, cancelled.",
            acquisitions,
        ),
        Family(
            PREFIX + "admitted_cost",
            "counter",
            "Sum of the costs (tokens, permits) of the admitted requests.",
            tuple(
                Sample({"kind": s.kind, "limiter": s.limiter}, float(s.admitted_cost))
                for s in series
            ),
        ),
        Family(
            PREFIX + "wait_seconds",
            "histogram",
            "How long admitted requests waited for admission (0 for immediate admissions).",
            histograms,
            unit="seconds",
        ),
    ]


def collect() -> list[Family]:
    """Every family now: the primitives', then each source's, merged by name."""
    families = _primitive_families()
    with _sources_lock:
        sources = list(_sources)
    for source in sources:
        try:
            families.extend(source())
        except Exception:
            _log.exception("metrics source %r failed; skipped in this scrape", source)
    merged: dict[str, Family] = {}
    for f in families:
        prev = merged.get(f.name)
        if prev is None:
            merged[f.name] = f
        elif prev.type != f.type:
            _log.error(
                "metric family %s reported as %s and %s; kept the first", f.name, prev.type, f.type
            )
        else:
            samples: Any = prev.samples + f.samples
            merged[f.name] = Family(prev.name, prev.type, prev.help, samples, prev.unit)
    return list(merged.values())
