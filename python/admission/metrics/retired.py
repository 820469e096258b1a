"""The counts of dropped primitives, kept in their series for a bounded time and number of names.

Series are per ``(kind, name)``, so a dropped primitive must not take its counts with it (a
counter that goes down reads as a reset). Once `track` is called (by the exporters), each
primitive dropped afterwards hands its final counters and wait histogram to a native buffer
as it is deallocated; every scrape drains the buffer into the running totals here and adds
them to its series (`add_to`).

With dynamic names (one per user, per tenant, ...) those totals would grow forever, and so
would ``/metrics``. They are bounded (`set_retention`):

- a name whose primitives are all dropped keeps its series (counters at their final values,
  ``admission_limiters`` 0) for ``ttl`` seconds after a scrape last saw it live or received
  its counts; then it leaves the exposition;
- at most ``max_series`` such names are kept: beyond that the ones seen longest ago leave at
  once, and one WARNING line on the ``admission.metrics`` logger says how many;
- between two scrapes the native buffer holds the counts of at most 65,536 names; the counts
  of primitives dropped under further names are discarded, with one WARNING line.

A name that still has a live primitive keeps its totals as long as it does. A name that comes
back after it left starts again from the counts of its new primitives (a counter reset).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from admission import _native
from admission._validate import nonnegative_int, timeout_seconds
from admission.metrics.families import UNNAMED

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["MAX_PENDING", "add_to", "kept", "set_retention", "track"]

_log = logging.getLogger("admission.metrics")

MAX_PENDING = 65_536
"""Names whose dropped primitives' counts the native buffer holds between two scrapes."""


_Counters = tuple[int, int, int, int, int]


def _add(a: _Counters, b: _Counters) -> _Counters:
    return (a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3], a[4] + b[4])


@dataclass(slots=True)
class _Totals:
    """Running totals of the dropped primitives of one ``(kind, label)``."""

    counters: _Counters
    """``(admitted, admitted_cost, rejected, timed_out, cancelled)``."""
    counts: list[int]
    sum_ns: int
    seen: float
    """Clock time of the last scrape that saw the series live or received its counts."""


_lock = threading.Lock()
_totals: dict[tuple[str, str], _Totals] = {}
_tracking = False
_ttl = 600.0
_max_series = 1_000
_now: Callable[[], float] = time.monotonic


def set_retention(
    ttl: float | str | None = 600.0,
    max_series: int = 1_000,
    *,
    clock: _native.ManualClock | None = None,
) -> None:
    """Bounds how long, and for how many names, dropped primitives keep their series.

    ``ttl``: seconds (or a duration string, ``"10m"``) a name whose primitives are all
    dropped stays on the exporters after a scrape last saw it live or received its counts;
    None (or infinity) keeps names as long as ``max_series`` allows, 0 forgets them at the
    first scrape. ``max_series``: how many such names are kept at most; when more are
    dropped, the ones seen longest ago leave at once (one WARNING line on the
    ``admission.metrics`` logger per scrape that drops some). ``clock``: the time source (an
    `admission.testing.ManualClock` in tests; default ``time.monotonic``). Process-wide;
    applies from the next scrape on. The defaults are what applies until it is called.

    Raises:
        TypeError: ``ttl`` is not a number, duration string or None; ``max_series`` not an int.
        ValueError: ``ttl`` is negative or NaN, ``max_series`` negative.
    """
    global _ttl, _max_series, _now
    seconds = timeout_seconds(ttl, "ttl")
    limit = nonnegative_int(max_series, "max_series")
    now = time.monotonic if clock is None else clock.now
    with _lock:
        _ttl, _max_series = math.inf if seconds is None else seconds, limit
        if now != _now:
            # Times of another clock mean nothing on this one: the ages start again.
            _now = now
            start = now()
            for t in _totals.values():
                t.seen = start


def track() -> None:
    """Starts keeping the final figures of primitives dropped from now on. Idempotent."""
    global _tracking
    with _lock:
        if not _tracking:
            _native._track_retired(True, MAX_PENDING)
            _tracking = True


def kept() -> int:
    """How many names have totals kept now."""
    return len(_totals)


def add_to(scrape: _native.Scrape) -> None:
    """Adds the totals of every kept name to ``scrape``, which has read the live primitives.

    Drains the native buffer first, so the caller must still hold the primitives it read: a
    primitive it holds cannot be dropped, so none is counted both live and retired.
    """
    with _lock:
        # Drained under the lock: a concurrent scrape must not add its totals before these.
        entries, discarded = _native._drain_retired()
        now = _now()
        for kind, name, counters, counts, sum_ns in entries:
            key = (kind, UNNAMED if name is None else name)
            t = _totals.get(key)
            if t is None:
                _totals[key] = _Totals(counters, counts, sum_ns, now)
            else:
                t.counters = _add(t.counters, counters)
                t.counts = [a + b for a, b in zip(t.counts, counts, strict=True)]
                t.sum_ns += sum_ns
                t.seen = now
        gone: list[tuple[float, tuple[str, str]]] = []
        expired = 0
        for key, t in list(_totals.items()):
            if scrape.is_live(*key):
                t.seen = now
            elif now - t.seen >= _ttl:
                del _totals[key]
                expired += 1
            else:
                gone.append((t.seen, key))
        over = len(gone) - _max_series
        if over > 0:
            gone.sort()
            for _, key in gone[:over]:
                del _totals[key]
        for (kind, label), t in _totals.items():
            scrape.add_retired(kind, label, t.counters, t.counts, t.sum_ns)
        ttl, max_series = _ttl, _max_series
    if expired:
        _log.debug("%d dropped names left the metrics after ttl=%gs", expired, ttl)
    if over > 0:
        _log.warning(
            "metrics: %d names whose primitives are all dropped left the exporters at once, "
            "the ones dropped longest ago (max_series=%d kept; raise it with "
            "adm.metrics.set_retention(max_series=...), or use fewer distinct names)",
            over,
            max_series,
        )
    if discarded:
        _log.warning(
            "metrics: the final counts of %d dropped primitives were discarded: more than "
            "%d names were dropped between two scrapes",
            discarded,
            MAX_PENDING,
        )
