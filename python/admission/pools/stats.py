"""Typed snapshots of a pool's state: `PoolStats`, and readiness results: `Readiness`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from admission.stats import WaitHistogram

__all__ = ["PoolCheck", "PoolState", "PoolStats", "Readiness"]

PoolState = Literal["new", "up", "down", "closing", "closed"]
"""``new``: not opened yet; ``up``: serving (with fewer connections than ``max_size`` while
`PoolStats.capacity_limited`); ``down``: the database is unreachable, or refuses every
connection for capacity, and the pool is reconnecting in the background (calls fail at
once); ``closing``, ``closed``."""


@dataclass(frozen=True, slots=True)
class PoolStats:
    """One pool at one instant: gauges, exact counters and how long callers waited.

    Counters are cumulative since the manager was built; gauges are read at the call. A
    caller that asked for a connection ends in one of ``acquired``, ``timed_out``,
    ``cancelled`` (while queued), ``overloaded``, ``unavailable``, or an error raised at
    once for a closed pool or a configuration that cannot connect.

    >>> import admission as adm
    >>> pools = adm.PoolManager({"rag": adm.PoolConfig("postgresql://app@db/rag", max_size=20)})
    >>> s = pools.stats("rag")
    >>> (s.state, s.max_size, s.in_use, s.waiting, s.acquired)
    ('new', 20, 0, 0, 0)
    """

    name: str
    state: PoolState
    min_size: int
    max_size: int
    size: int
    """Open connections (idle or in use)."""
    idle: int
    """Open connections nobody holds."""
    in_use: int
    """Connections handed out to callers right now."""
    waiting: int
    """Callers queued for a connection (FIFO)."""
    high_water: int
    """The most connections ever handed out at once."""
    acquired: int
    """Connections handed out so far."""
    waited: int
    """Of those, how many had to queue first."""
    wait_seconds_total: float
    """Summed queueing time of the ``waited`` acquisitions."""
    wait_seconds_max: float
    """The longest queueing time so far."""
    timed_out: int
    """Callers that gave up after ``acquire_timeout`` (`PoolTimeout`)."""
    cancelled: int
    """Callers cancelled while queued."""
    overloaded: int
    """Callers refused at once because ``max_waiters`` were already queued."""
    unavailable: int
    """Callers refused at once because the database was unreachable or refused every
    connection (`PoolUnavailable`, `PoolServerFull`)."""
    connections_lost: int
    """Connections that broke while in use and were discarded (`PoolConnectionLost`)."""
    outages: int
    """Times the pool went down (could not connect) since it was opened."""
    last_error: str | None
    """The last connection error, passwords redacted; ``None`` if there was none."""
    reconnects: int = 0
    """Times the pool came back up by itself after going down."""
    wait: WaitHistogram = field(default_factory=WaitHistogram.empty, compare=False)
    """How long permits of the pool's semaphore waited, from queueing to being granted
    (log-spaced buckets; immediate grants count as 0). It counts every permit: callers',
    and those of the reconnect probes and health checks."""
    capacity: int = 0
    """The most connections the pool opens now: ``max_size``, or while ``capacity_limited``
    its lowered cap (the connections open at the server's last refusal, lifted by one per
    backoff step; 0 while the server allows none)."""
    capacity_limited: bool = False
    """The server refused a connection for capacity ("too many connections": a role's or a
    database's ``CONNECTION LIMIT``, ``max_connections``) and the pool has not grown back to
    ``max_size`` since. It serves with the connections it has meanwhile."""
    capacity_refusals: int = 0
    """Connection attempts the server refused for capacity (callers', probes' and growth
    attempts', which are spaced out with a backoff)."""

    @property
    def wait_seconds_mean(self) -> float:
        """Mean queueing time of the acquisitions that queued (0.0 if none did)."""
        return self.wait_seconds_total / self.waited if self.waited else 0.0


@dataclass(frozen=True, slots=True)
class PoolCheck:
    """The readiness of one pool: ``ok``, or why not (passwords redacted)."""

    name: str
    ok: bool
    error: str | None


@dataclass(frozen=True, slots=True)
class Readiness:
    """What ``await pools.check()`` found; true when every pool answered ``SELECT 1``.

    >>> r = Readiness(ok=False, pools={"rag": PoolCheck("rag", False, "pool 'rag' is down")})
    >>> bool(r), r.pools["rag"].error
    (False, "pool 'rag' is down")
    """

    ok: bool
    pools: Mapping[str, PoolCheck]

    def __bool__(self) -> bool:
        return self.ok
