"""``admission_pool_*`` metrics: every open pool of every `PoolManager`, read at scrape time.

A pool joins the exporters (`admission.metrics.add_source`) when it opens and leaves them when
it closes; nothing is counted for the exporter, a scrape reads `PoolStats`. One series per
pool name, label ``pool`` (the name in the manager's configuration: never a DSN, a host or a
user); pools of the same name in two managers are added up (``up`` is 1 only if all are up).
Never one series per connection.

>>> import admission as adm
>>> from admission.pools.metrics import families
>>> pools = adm.PoolManager({"rag": adm.PoolConfig("postgresql://app:pw@db/rag", max_size=20)})
>>> found = {f.name: f.samples[0] for f in families([pools.stats("rag")])}
>>> found["admission_pool_max_size"]
Sample(labels={'pool': 'rag'}, value=20.0)
>>> found["admission_pool_up"].value  # not opened yet
0.0

=============================================  =========  ========================================
``admission_pool_up``                          gauge      1 serving, 0 down (reconnecting)/closing
``admission_pool_capacity_limited``            gauge      1 while the server's limit caps the pool
``admission_pool_capacity``                    gauge      connections the pool opens at most now
``admission_pool_size``                        gauge      open connections (idle or in use)
``admission_pool_idle``                        gauge      open connections nobody holds
``admission_pool_in_use``                      gauge      connections handed out now
``admission_pool_waiting``                     gauge      callers queued for a connection
``admission_pool_min_size``                    gauge      configured ``min_size``
``admission_pool_max_size``                    gauge      configured ``max_size``
``admission_pool_acquisitions_total``          counter    callers by ``outcome``
``admission_pool_connections_lost_total``      counter    connections that broke in use
``admission_pool_reconnects_total``            counter    times the pool came back up by itself
``admission_pool_capacity_refusals_total``     counter    connections the full server refused
``admission_pool_acquire_wait_seconds``        histogram  queueing time for a connection's permit
=============================================  =========  ========================================

``outcome``: ``acquired`` (a connection was handed out), ``timeout`` (gave up after
``acquire_timeout``), ``cancelled`` (while queued), ``overloaded`` (refused at once: ``max_waiters``
already queued), ``unavailable`` (refused at once: the database is down, or full with no
connection open).
"""

from __future__ import annotations

import math
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Protocol

from admission import metrics as _metrics
from admission.metrics import PREFIX, Family, HistogramSample, Sample
from admission.pools.stats import PoolStats

__all__ = ["OUTCOMES", "families", "track", "untrack"]

OUTCOMES = ("acquired", "timeout", "cancelled", "overloaded", "unavailable")
"""The ``outcome`` label values of ``admission_pool_acquisitions_total``."""


class _Pool(Protocol):
    """What is tracked: one pool of a manager (`admission.pools._managed.ManagedPool`)."""

    def stats(self) -> PoolStats: ...


_lock = threading.Lock()
_open: weakref.WeakSet[_Pool] = weakref.WeakSet()  # never keeps a pool alive
_remove: Callable[[], None] | None = None


def track(pool: _Pool) -> None:
    """Exports ``pool`` from now on (called when it opens). The first adds the source."""
    global _remove
    with _lock:
        _open.add(pool)
        if _remove is None:
            _remove = _metrics.add_source(_source)


def untrack(pool: _Pool) -> None:
    """Stops exporting ``pool`` (called when it is closed). The last removes the source."""
    global _remove
    with _lock:
        _open.discard(pool)
        if not _open and _remove is not None:
            _remove()
            _remove = None


def _source() -> list[Family]:
    with _lock:
        pools = list(_open)
    return families(p.stats() for p in pools)


_GAUGES: tuple[tuple[str, str, Callable[[PoolStats], float]], ...] = (
    (
        "up",
        "1 when the pool serves connections; 0 when the database is unreachable or refuses "
        "every connection (the pool fails fast and reconnects) or the pool is closing.",
        lambda s: 1.0 if s.state == "up" else 0.0,
    ),
    (
        "capacity_limited",
        "1 while the server refuses the pool more connections (too many connections: a "
        "CONNECTION LIMIT or max_connections) and the pool serves with those it has, below "
        "max_size, growing back with a backoff.",
        lambda s: 1.0 if s.capacity_limited else 0.0,
    ),
    (
        "capacity",
        "Connections the pool opens at most now: max_size, or while capacity_limited its "
        "lowered cap (lifted by one per backoff step; 0 while the server allows none).",
        lambda s: s.capacity,
    ),
    ("size", "Open connections of the pool (idle or in use).", lambda s: s.size),
    ("idle", "Open connections nobody holds.", lambda s: s.idle),
    ("in_use", "Connections handed out now.", lambda s: s.in_use),
    ("waiting", "Callers queued for a connection (FIFO).", lambda s: s.waiting),
    ("min_size", "Connections the pool keeps open at least.", lambda s: s.min_size),
    ("max_size", "Connections the pool opens at most.", lambda s: s.max_size),
)

# Pools of equal names: up only if all are, limited if any is; other figures are added up.
_COMBINE: dict[str, Callable[[Iterable[float]], float]] = {"up": min, "capacity_limited": max}


def families(stats: Iterable[PoolStats]) -> list[Family]:
    """The ``admission_pool_*`` families of these pools (figures of equal names added up).

    Every family is returned, with no samples when there is no pool, so exporters that
    create instruments up front (OpenTelemetry) see them all.
    """
    by_name: dict[str, list[PoolStats]] = {}
    for s in stats:
        by_name.setdefault(s.name, []).append(s)
    names = sorted(by_name)
    out: list[Family] = []
    for metric, help_text, read in _GAUGES:
        combine = _COMBINE.get(metric, math.fsum)
        gauge = tuple(
            Sample({"pool": n}, float(combine(read(s) for s in by_name[n]))) for n in names
        )
        out.append(Family(f"{PREFIX}pool_{metric}", "gauge", help_text, gauge))

    def total(name: str, read: Callable[[PoolStats], int]) -> float:
        return float(sum(read(s) for s in by_name[name]))

    outcomes: tuple[tuple[str, Callable[[PoolStats], int]], ...] = (
        ("acquired", lambda s: s.acquired),
        ("timeout", lambda s: s.timed_out),
        ("cancelled", lambda s: s.cancelled),
        ("overloaded", lambda s: s.overloaded),
        ("unavailable", lambda s: s.unavailable),
    )
    out.append(
        Family(
            f"{PREFIX}pool_acquisitions",
            "counter",
            "Callers asking for a connection, by outcome: acquired, timeout, cancelled (while "
            "queued), overloaded (max_waiters reached), unavailable (the database is down, or "
            "full with no connection open).",
            tuple(
                Sample({"pool": n, "outcome": outcome}, total(n, read))
                for n in names
                for outcome, read in outcomes
            ),
        )
    )
    out.append(
        Family(
            f"{PREFIX}pool_connections_lost",
            "counter",
            "Connections that broke while in use and were discarded.",
            tuple(Sample({"pool": n}, total(n, lambda s: s.connections_lost)) for n in names),
        )
    )
    out.append(
        Family(
            f"{PREFIX}pool_reconnects",
            "counter",
            "Times the pool came back up by itself after the database was unreachable.",
            tuple(Sample({"pool": n}, total(n, lambda s: s.reconnects)) for n in names),
        )
    )
    out.append(
        Family(
            f"{PREFIX}pool_capacity_refusals",
            "counter",
            "Connection attempts the server refused for capacity (too many connections).",
            tuple(Sample({"pool": n}, total(n, lambda s: s.capacity_refusals)) for n in names),
        )
    )
    histograms = []
    for n in names:
        wait = by_name[n][0].wait
        for s in by_name[n][1:]:
            wait = wait + s.wait
        histograms.append(HistogramSample.of({"pool": n}, wait))
    out.append(
        Family(
            f"{PREFIX}pool_acquire_wait_seconds",
            "histogram",
            "How long permits for a connection waited in the pool's FIFO queue (0 for "
            "immediate grants; reconnect probes and health checks included).",
            tuple(histograms),
            unit="seconds",
        )
    )
    return out
