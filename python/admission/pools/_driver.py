"""The asyncpg boundary: importing it, typing the part used, and reading its errors.

asyncpg is optional (the ``postgres`` extra) and ships no type hints, so it is imported on
first use and seen through a small Protocol. Its errors are sorted here into the kinds the
pool acts on: *transient* connection failures (the server is down or restarting: go
``down``, fail fast, reconnect), refusals *at capacity* (the server is up but allows no more
connections: serve with those open, grow later), *fatal* ones (the configuration is wrong:
say so), and *broken* connections (the connection died under a caller: discard it, report
it).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable
from typing import Any, Protocol

__all__ = [
    "TIMEOUTS",
    "AsyncpgPool",
    "at_capacity",
    "broken",
    "discard",
    "driver",
    "fatal",
    "is_closed",
    "prefer_connected",
    "transient",
]

# asyncio.TimeoutError is a distinct class before Python 3.11.
TIMEOUTS = (TimeoutError, asyncio.TimeoutError)


def driver() -> Any:
    """The asyncpg module (imported on first use: it is an optional dependency)."""
    try:
        import asyncpg  # type: ignore[import-untyped]
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "admission's PoolManager needs asyncpg: pip install 'admission[postgres]'"
        ) from exc
    return asyncpg


def is_closed(conn: Any) -> bool:
    """Whether a pool connection is dead.

    When a connection dies, asyncpg detaches it from its proxy at once, and the proxy then
    raises InterfaceError for every call, ``is_closed()`` included: that means closed.
    """
    try:
        return bool(conn.is_closed())
    except Exception:
        return True


def discard(conn: Any) -> None:
    """Terminates a pool connection whose state cannot be trusted (it is then replaced)."""
    with contextlib.suppress(Exception):  # already dead and detached: nothing to do
        conn.terminate()


class AsyncpgPool(Protocol):
    """The part of ``asyncpg.Pool`` used here (asyncpg ships no type hints)."""

    def acquire(self, *, timeout: float | None = None) -> Awaitable[Any]: ...
    async def release(self, connection: Any) -> None: ...
    async def close(self) -> None: ...
    def terminate(self) -> None: ...
    async def expire_connections(self) -> None: ...
    def get_size(self) -> int: ...
    def get_idle_size(self) -> int: ...


def at_capacity(pg: Any, exc: BaseException) -> bool:
    """The server refused a new connection for capacity, not because it is down.

    SQLSTATE 53300 ``too_many_connections``: a role's or a database's ``CONNECTION LIMIT``,
    ``max_connections`` ("sorry, too many clients already"), and the slots reserved for
    superusers or replication ("remaining connection slots are reserved ..."); and 53400
    ``configuration_limit_exceeded``. The connections already open keep working.
    """
    return isinstance(exc, (pg.TooManyConnectionsError, pg.ConfigurationLimitExceededError))


def transient(pg: Any, exc: BaseException) -> bool:
    """A connection failure that may pass by itself (the server is down or restarting).

    A refusal `at_capacity` is not one: the server is up (see there).
    """
    if fatal(pg, exc) or at_capacity(pg, exc):
        return False
    return isinstance(
        exc,
        (
            OSError,
            *TIMEOUTS,
            pg.PostgresConnectionError,
            pg.CannotConnectNowError,
            pg.AdminShutdownError,
            pg.CrashShutdownError,
        ),
    )


def fatal(pg: Any, exc: BaseException) -> bool:
    """A connection failure that retrying cannot fix: the configuration is wrong."""
    if isinstance(exc, ConnectionError) and "rejected SSL" in str(exc):
        return True  # ssl=require against a server without TLS: a ConnectionError
    return isinstance(
        exc,
        (
            pg.InvalidAuthorizationSpecificationError,  # wrong password, unknown role
            pg.InvalidCatalogNameError,  # unknown database
            pg.InsufficientPrivilegeError,
            pg.exceptions.ClientConfigurationError,
            ssl.SSLError,
            ValueError,
            TypeError,
        ),
    )


def prefer_connected(pool: AsyncpgPool) -> None:
    """Makes the pool hand out its open connections before it opens a new one.

    asyncpg before 0.32 keeps its connection slots in a plain LIFO queue, so a slot whose
    connection the server just refused goes back on top and the next ``acquire()`` tries to
    connect it again, while open connections sit idle below it. This sorts the open ones on
    top (keeping the LIFO order within each group), which asyncpg 0.32's queue does itself
    (a subclass: left alone).
    """
    queue = getattr(pool, "_queue", None)
    if type(queue) is asyncio.LifoQueue:
        slots: list[Any] = queue._queue  # type: ignore[attr-defined]  # the top is the end
        slots.sort(key=lambda slot: bool(slot.is_connected()))


def broken(pg: Any, exc: BaseException, conn: Any) -> bool:
    """Did ``exc`` come from the connection breaking (as opposed to the caller's work)?"""
    if isinstance(
        exc,
        (
            pg.PostgresConnectionError,  # includes "closed in the middle of operation"
            pg.AdminShutdownError,
            pg.CrashShutdownError,
            pg.CannotConnectNowError,
            pg.IdleSessionTimeoutError,
            # The driver's protocol state is corrupt (seen when the server shuts down
            # between two statements): the connection cannot be trusted any more.
            pg.exceptions.InternalClientError,
            ConnectionError,
        ),
    ):
        return True
    return isinstance(exc, (pg.InterfaceError, OSError)) and is_closed(conn)
