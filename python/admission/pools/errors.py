"""The errors a `PoolManager` raises on purpose, all under `PoolError` (an `AdmissionError`).

Each says which pool, what happened and what to do; none carries a password.
"""

from __future__ import annotations

from admission.errors import AcquireTimeout, AdmissionError, Closed

__all__ = [
    "PoolClosed",
    "PoolConnectError",
    "PoolConnectionLost",
    "PoolError",
    "PoolOverloaded",
    "PoolServerFull",
    "PoolTimeout",
    "PoolUnavailable",
    "UnknownPool",
]


class PoolError(AdmissionError):
    """Base class of the pool errors; ``pool`` names the pool concerned.

    >>> import admission as adm
    >>> issubclass(adm.PoolUnavailable, adm.PoolError)
    True
    >>> issubclass(adm.PoolError, adm.AdmissionError)
    True
    """

    def __init__(self, pool: str, message: str) -> None:
        super().__init__(message)
        self.pool = pool

    def __reduce__(self) -> tuple[type[PoolError], tuple[str, str]]:
        return (type(self), (self.pool, str(self)))


class UnknownPool(PoolError, LookupError):
    """A pool name the manager was not configured with.

    >>> import admission as adm
    >>> pools = adm.PoolManager({"rag": adm.PoolConfig("postgresql://app@db/rag")})
    >>> pools.stats("reports")
    Traceback (most recent call last):
    admission.pools.errors.UnknownPool: no pool named 'reports' (configured: 'rag')
    """


class PoolUnavailable(PoolError):
    """The database cannot be reached now (an outage, a restart): the call failed at once.

    Raised instead of waiting while the pool is reconnecting in the background (exponential
    backoff, full jitter); the pool comes back by itself. Nothing was run on the database.
    Answer with a 503 or retry later; ``retry_after`` is a hint in seconds (the next probe).
    """

    def __init__(self, pool: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(pool, message)
        self.retry_after = retry_after

    def __reduce__(self) -> tuple[type[PoolError], tuple[str, str, float | None]]:  # type: ignore[override]
        return (type(self), (self.pool, str(self), self.retry_after))


class PoolConnectionLost(PoolUnavailable):
    """The connection broke while the ``connection()``/``transaction()`` block was using it.

    The broken connection was discarded, not put back. The pool never re-runs anything: if
    the block was committing, the commit may or may not have happened (check before retrying
    work that is not idempotent). The original driver error is chained as ``__cause__``.
    """


class PoolServerFull(PoolUnavailable):
    """The server refuses every new connection for capacity, and the pool has none open.

    "Too many connections" (a role's or a database's ``CONNECTION LIMIT``,
    ``max_connections``): the server is up but full, not unreachable. The call failed at
    once; the pool retries in the background (``retry_after`` is a hint) and serves as soon
    as the server lets it open a connection. A `PoolUnavailable`, so handlers of outages
    catch it too; the fix is on the server's side (raise the limit, or lower ``max_size``
    across the clients sharing it). While the pool has at least one connection open, a
    full server is no error: callers wait for the connections it has.

    >>> import admission as adm
    >>> issubclass(adm.PoolServerFull, adm.PoolUnavailable)
    True
    """


class PoolOverloaded(PoolError):
    """More callers are already waiting for a connection than ``max_waiters`` allows.

    Failing at once keeps a queue from growing without bound during a spike: shed the load
    (a 503), or raise ``max_waiters``/``max_size`` if the database has room.
    """


class PoolTimeout(PoolError, AcquireTimeout):
    """No connection became free within ``acquire_timeout`` seconds (a `TimeoutError` too).

    >>> import admission as adm
    >>> isinstance(adm.PoolTimeout("rag", 10.0), TimeoutError)
    True
    """

    def __init__(self, pool: str, timeout: float) -> None:
        AcquireTimeout.__init__(self, timeout)
        self.args = (
            f"pool {pool!r}: no connection became free within {timeout:g} s "
            "(all are in use: raise max_size, shorten the work done while holding one, "
            "or raise acquire_timeout)",
        )
        self.pool = pool

    def __reduce__(self) -> tuple[type[PoolTimeout], tuple[str, float]]:  # type: ignore[override]
        return (type(self), (self.pool, self.timeout))


class PoolClosed(PoolError, Closed):
    """The manager is not open (yet, or any more): it hands out no connections."""


class PoolConnectError(PoolError):
    """Connecting failed for a reason that waiting will not fix.

    Wrong password, unknown user or database, a server certificate that does not verify:
    fix the configuration. The driver's error is chained as ``__cause__`` (it never contains
    the password: the DSN's is redacted everywhere admission formats it).
    """
