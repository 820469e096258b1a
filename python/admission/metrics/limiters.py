"""The primitives' figures, aggregated into one series per ``(kind, limiter)``.

`limiters` reads every live primitive (and the counts of the dropped ones); `collect` turns the
series into families and adds those of every source (see `admission.metrics.add_source`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from admission import _native, _registry
from admission._native import WAIT_BOUNDS
from admission.metrics import retired
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
from admission.stats import WaitHistogram

__all__ = ["FAMILIES", "Kind", "LimiterSeries", "collect", "limiters"]

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


# Primitives (or series) read per native call: each holds the GIL for well under a
# millisecond, so a thread waiting for it waits one switch interval, not more.
_READ_SLICE = 250

_KINDS: dict[str, Kind] = {
    "semaphore": "semaphore",
    "token_bucket": "token_bucket",
    "sliding_window": "sliding_window",
}


def _scrape() -> _native.Scrape:
    """One scrape's series: every live primitive read natively, plus the retired totals."""
    objs = _registry.live()
    scrape = _native.Scrape(UNNAMED, len(objs) + retired.kept())
    for i in range(0, len(objs), _READ_SLICE):
        scrape.read(objs[i : i + _READ_SLICE])
    # While objs holds every primitive read: none of them can retire meanwhile.
    retired.add_to(scrape)
    del objs
    scrape.sort()
    return scrape


def _series(row: _native._ScrapeRow) -> LimiterSeries:
    kind, label, primitives, waiters, oldest, semaphore, rate, counters, counts, total = row
    in_use, limit, high_water = semaphore or (None, None, None)
    available, capacity = rate or (None, None)
    admitted, admitted_cost, rejected, timed_out, cancelled = counters
    return LimiterSeries(
        kind=_KINDS[kind],
        limiter=label,
        primitives=primitives,
        waiters=waiters,
        admitted=admitted,
        admitted_cost=admitted_cost,
        rejected=rejected,
        timed_out=timed_out,
        cancelled=cancelled,
        wait=WaitHistogram(WAIT_BOUNDS, tuple(counts), total),
        oldest_wait=oldest,
        in_use=in_use,
        limit=limit,
        high_water=high_water,
        tokens_available=available,
        tokens_capacity=capacity,
    )


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
    scrape = _scrape()
    out: list[LimiterSeries] = []
    for i in range(0, len(scrape), _READ_SLICE):  # no native call holds the GIL for long
        out += map(_series, scrape.rows(i, i + _READ_SLICE))
    return out


# ---------------------------------------------------------------------------------------------
# The families of the primitives' series
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Spec:
    """A family of the primitives' series: the figure it shows, and for which series."""

    name: str
    type: Literal["gauge", "counter", "histogram"]
    help: str
    field: str
    """A `LimiterSeries` attribute; ``acquisitions``: the outcome counters (label
    ``outcome``); ``wait``: the wait histogram."""
    live_only: bool = False
    """Only the series with a live primitive (a gauge that does not apply has no sample)."""
    unit: str = ""


FAMILIES = (
    _Spec(PREFIX + "limiters", "gauge", "Live primitives in the series.", "primitives"),
    _Spec(PREFIX + "permits_in_use", "gauge", "Semaphore permits held now.", "in_use", True),
    _Spec(PREFIX + "permits_limit", "gauge", "Semaphore permit limits.", "limit", True),
    _Spec(
        PREFIX + "high_water",
        "gauge",
        "Most semaphore permits ever held at once (summed over the series' semaphores).",
        "high_water",
        True,
    ),
    _Spec(PREFIX + "waiters", "gauge", "Requests waiting to be admitted now.", "waiters", True),
    _Spec(
        PREFIX + "oldest_wait_seconds",
        "gauge",
        "How long the longest current semaphore waiter has waited so far.",
        "oldest_wait",
        True,
    ),
    _Spec(
        PREFIX + "tokens_available",
        "gauge",
        "Largest cost a rate limiter's try_acquire would admit now "
        "(peek(1).remaining + 1, or 0 when nothing fits or waiters are ahead).",
        "tokens_available",
        True,
    ),
    _Spec(
        PREFIX + "tokens_capacity",
        "gauge",
        "Rate limiter capacity: a token bucket's burst, a sliding window's limit.",
        "tokens_capacity",
        True,
    ),
    _Spec(
        PREFIX + "acquisitions",
        "counter",
        "Requests by outcome: admitted, rejected (refused at once), timeout, cancelled.",
        "acquisitions",
    ),
    _Spec(
        PREFIX + "admitted_cost",
        "counter",
        "Sum of the costs (tokens, permits) of the admitted requests.",
        "admitted_cost",
    ),
    _Spec(
        PREFIX + "wait_seconds",
        "histogram",
        "How long admitted requests waited for admission (0 for immediate admissions).",
        "wait",
        unit="seconds",
    ),
)
"""The primitives' families, in exposition order: `collect` builds them from `limiters`, the
HTTP exporter renders the same natively (`admission.metrics.exposition`)."""


def _gauge(s: LimiterSeries, field: str) -> float | None:
    if field == "oldest_wait" and s.kind != "semaphore":
        return None  # 0.0 in a rate limiter's LimiterSeries: a semaphore gauge only
    value: int | float | None = getattr(s, field)
    return None if value is None else float(value)


def _family(spec: _Spec, series: list[LimiterSeries]) -> Family:
    rows = [s for s in series if s.primitives > 0] if spec.live_only else series
    samples: tuple[Sample, ...] | tuple[HistogramSample, ...]
    if spec.field == "acquisitions":
        samples = tuple(
            Sample({"kind": s.kind, "limiter": s.limiter, "outcome": outcome}, float(v))
            for s in rows
            for outcome, v in zip(
                _OUTCOMES, (s.admitted, s.rejected, s.timed_out, s.cancelled), strict=True
            )
        )
    elif spec.field == "wait":
        samples = tuple(
            HistogramSample.of({"kind": s.kind, "limiter": s.limiter}, s.wait) for s in rows
        )
    else:
        samples = tuple(
            Sample({"kind": s.kind, "limiter": s.limiter}, v)
            for s in rows
            if (v := _gauge(s, spec.field)) is not None
        )
    return Family(spec.name, spec.type, spec.help, samples, spec.unit)


def _source_families() -> list[Family]:
    """The families of every source added with `add_source` (a failing one is skipped)."""
    with _sources_lock:
        sources = list(_sources)
    families: list[Family] = []
    for source in sources:
        try:
            families.extend(source())
        except Exception:
            _log.exception("metrics source %r failed; skipped in this scrape", source)
    return families


def _merge(families: Iterable[Family]) -> list[Family]:
    """Families with one name merged into one, in the order of their first appearance (one
    reported with two types: the first kept, the others logged and left out)."""
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


def collect() -> list[Family]:
    """Every family now: the primitives', then each source's, merged by name."""
    series = limiters()
    return _merge([*(_family(spec, series) for spec in FAMILIES), *_source_families()])
