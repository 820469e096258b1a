"""`PoolManager`: every asyncpg pool of a service, bounded, fair, self-healing, observable."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Mapping
from types import TracebackType
from typing import Any, final

from admission.pools._driver import discard, is_closed
from admission.pools._managed import ManagedPool
from admission.pools.config import PoolConfig
from admission.pools.errors import PoolClosed, UnknownPool
from admission.pools.stats import PoolStats, Readiness

__all__ = ["LIVE_SETTINGS", "PoolManager"]

LIVE_SETTINGS = ("acquire_timeout", "max_waiters")
"""The `PoolConfig` settings `PoolManager.reconfigure` can change while pools are open."""

Connection = Any
"""An asyncpg connection (asyncpg ships no type hints); valid only inside its block."""


@final
class _ConnectionBlock:
    """``async with pools.connection(name) as conn``: one connection, given back on exit."""

    __slots__ = ("_conn", "_pool")

    def __init__(self, pool: ManagedPool) -> None:
        self._pool = pool
        self._conn: Connection = None

    # Plain methods returning the pool's coroutines: one coroutine frame less per call.
    def __aenter__(self) -> Awaitable[Connection]:
        return self._pool.acquire(self)

    def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Awaitable[None]:
        return self._pool.release(self._conn, exc)


@final
class _TransactionBlock:
    """``async with pools.transaction(name) as conn``: committed on success, else rolled back."""

    __slots__ = ("_conn", "_options", "_pool", "_tx")

    def __init__(self, pool: ManagedPool, options: dict[str, Any]) -> None:
        self._pool = pool
        self._options = options
        self._conn: Connection = None
        self._tx: Any = None

    async def __aenter__(self) -> Connection:
        conn = await self._pool.acquire()
        try:
            tx = conn.transaction(**self._options)
            await tx.start()
        except BaseException as exc:
            await self._pool.release(conn, exc)  # raises PoolConnectionLost if it broke
            raise
        self._conn, self._tx = conn, tx
        return conn

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn, tx = self._conn, self._tx
        self._conn = self._tx = None
        if exc is None:
            try:
                await tx.commit()
            except BaseException as commit_error:
                await self._pool.release(conn, commit_error, committing=True)
                raise
        elif not is_closed(conn):
            try:
                await tx.rollback()
            except BaseException:
                # Its state is unknown: never hand it to anyone else.
                discard(conn)
                await self._pool.release(conn, exc)
                raise
        await self._pool.release(conn, exc)


@final
class PoolManager:
    """Owns named asyncpg pools: bounded, fair, timed acquisition; outages healed; stats.

    Each pool is an ``asyncpg.create_pool`` fronted by an admission `Semaphore`: callers
    queue FIFO for a connection, give up after ``acquire_timeout`` (`PoolTimeout`), are
    refused at once beyond ``max_waiters`` (`PoolOverloaded`), and a cancelled caller
    leaves nothing behind. If the database goes away, calls fail at once with
    `PoolUnavailable` instead of hanging while the pool reconnects by itself (exponential
    backoff, full jitter); a connection that breaks in use is discarded and reported as
    `PoolConnectionLost`. Nothing is ever retried for you, so nothing runs twice.

    >>> import admission as adm
    >>> pools = adm.PoolManager({
    ...     "rag": adm.PoolConfig("postgresql://app:s3cret@db.internal/rag", min_size=5,
    ...                           max_size=20, acquire_timeout=10.0, max_waiters=1000),
    ... })
    >>> pools
    PoolManager({'rag': PoolConfig('postgresql://app:***@db.internal/rag', min_size=5, ...)})
    >>> pools.names
    ('rag',)

    In a service (asyncio; the pools belong to the loop that opened them)::

        async with pools:  # opens every pool; on exit closes them gracefully
            async with pools.connection("rag") as conn:
                rows = await conn.fetch("select id, body from docs where id = $1", doc_id)
            async with pools.transaction("rag") as conn:  # committed unless it raises
                await conn.execute("insert into seen(id) values ($1)", doc_id)
            pools.stats("rag")  # size, idle, in_use, waiting, waits, outages, ...
            ready = await pools.check()  # readiness probe: SELECT 1 on every pool

    Raises:
        TypeError, ValueError: ``pools`` is not a non-empty mapping of names to `PoolConfig`.
    """

    __slots__ = ("_closing", "_open_lock", "_pools")

    def __init__(self, pools: Mapping[str, PoolConfig]) -> None:
        if not isinstance(pools, Mapping):
            raise TypeError(f"pools must be a mapping of names to PoolConfig, got {pools!r}")
        if not pools:
            raise ValueError("pools must name at least one pool")
        for name, config in pools.items():
            if not isinstance(name, str) or not name:
                raise TypeError(f"pool names must be non-empty strings, got {name!r}")
            if not isinstance(config, PoolConfig):
                raise TypeError(
                    f"pool {name!r}: expected a PoolConfig, got {type(config).__name__}"
                )
        self._pools = {name: ManagedPool(name, config) for name, config in pools.items()}
        self._open_lock: asyncio.Lock | None = None
        # Set by the first close(): a closed manager is never reopened (see `open`).
        self._closing: asyncio.Future[None] | None = None

    def _get(self, name: str) -> ManagedPool:
        try:
            return self._pools[name]
        except KeyError:
            known = ", ".join(repr(n) for n in self._pools)
            raise UnknownPool(name, f"no pool named {name!r} (configured: {known})") from None

    @property
    def names(self) -> tuple[str, ...]:
        """The configured pool names."""
        return tuple(self._pools)

    async def open(self) -> None:
        """Opens every pool (concurrently). Idempotent while open.

        A pool whose database is unreachable opens ``down`` and comes up by itself; its
        calls fail fast meanwhile (use `check` to gate readiness).

        A manager is opened once: after `close` (or an `open` that failed) it is closed
        for good, and ``open()`` (``async with pools:`` again) raises `PoolClosed`. Create
        a new `PoolManager` from the same configurations instead.

        Raises:
            PoolClosed: the manager was closed (or is closing).
            PoolConnectError: a pool cannot connect for a reason waiting will not fix
                (wrong password, unknown database, certificate); the pools already
                opened are closed again, and so is the manager.
        """
        self._refuse_if_closed()
        if self._open_lock is None:
            self._open_lock = asyncio.Lock()
        async with self._open_lock:
            self._refuse_if_closed()  # closed while this call waited for the lock
            pools = list(self._pools.values())
            results = await asyncio.gather(*(p.open() for p in pools), return_exceptions=True)
            errors = [r for r in results if isinstance(r, BaseException)]
            if errors:
                await self.close()
                raise errors[0]

    def _refuse_if_closed(self) -> None:
        if self._closing is not None:
            raise PoolClosed(
                ", ".join(self._pools),
                "this PoolManager was closed and cannot be reopened (its connections and "
                "background tasks are gone): create a new PoolManager with the same "
                "configurations to connect again",
            )

    async def close(self) -> None:
        """Closes every pool gracefully (concurrently). Idempotent.

        New calls are refused with `PoolClosed` at once, queued callers too; connections
        in use are waited for up to each pool's ``close_timeout``, then terminated. A
        second ``close()``, also one made while the first is still running, returns when
        every pool is closed. The manager cannot be opened again.
        """
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close_pools())
        elif self._closing.done():
            return  # closed already (perhaps on another event loop)
        # Shielded: a caller that gives up does not leave the pools half closed.
        await asyncio.shield(self._closing)

    async def _close_pools(self) -> None:
        await asyncio.gather(*(p.close() for p in self._pools.values()))

    async def __aenter__(self) -> PoolManager:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def connection(self, name: str) -> _ConnectionBlock:
        """``async with pools.connection(name) as conn``: a connection for the block.

        On exit it goes back to the pool, also after an exception or a cancellation;
        a connection that broke is discarded and the block's error becomes
        `PoolConnectionLost`.

        Raises (on entry):
            UnknownPool, PoolUnavailable, PoolOverloaded, PoolTimeout, PoolClosed.
        """
        return _ConnectionBlock(self._get(name))

    def transaction(
        self,
        name: str,
        *,
        isolation: str | None = None,
        readonly: bool = False,
        deferrable: bool = False,
    ) -> _TransactionBlock:
        """``async with pools.transaction(name) as conn``: a connection inside a transaction.

        Committed when the block succeeds, rolled back when it raises or is cancelled.
        If the connection breaks during COMMIT, `PoolConnectionLost` says the outcome is
        unknown. ``isolation``: ``"read_committed"``, ``"repeatable_read"``,
        ``"serializable"`` (asyncpg's names).
        """
        options: dict[str, Any] = {"readonly": readonly, "deferrable": deferrable}
        if isolation is not None:
            options["isolation"] = isolation
        return _TransactionBlock(self._get(name), options)

    def stats(self, name: str) -> PoolStats:
        """A typed snapshot of one pool: gauges, counters and waiting times."""
        return self._get(name).stats()

    async def check(self, *names: str, timeout: float = 5.0) -> Readiness:
        """Readiness: ``SELECT 1`` through each pool (all, or those named), concurrently.

        Never raises for a pool that is down: the result says which pool failed and why.
        A pool that is down answers at once.
        """
        pools = [self._get(n) for n in names] if names else list(self._pools.values())
        checks = await asyncio.gather(*(p.check(timeout) for p in pools))
        return Readiness(ok=all(c.ok for c in checks), pools={c.name: c for c in checks})

    def reconfigure(self, pools: Mapping[str, PoolConfig], *, check_only: bool = False) -> None:
        """Puts new settings in force for the same pools, while they are in use.

        Only `LIVE_SETTINGS` (``acquire_timeout``, ``max_waiters``) can change: they apply
        to the next callers. Everything else shapes the open connections and needs a new
        manager. Either every pool changes or none does; ``check_only=True`` only checks.

        >>> import admission as adm
        >>> pools = adm.PoolManager({"rag": adm.PoolConfig("postgresql://db/rag")})
        >>> pools.reconfigure({"rag": adm.PoolConfig("postgresql://db/rag", acquire_timeout=5)})
        >>> pools.reconfigure({"rag": adm.PoolConfig("postgresql://db/rag", max_size=50)})
        Traceback (most recent call last):
        ValueError: pool 'rag': max_size cannot change while the pools exist ...

        Raises:
            ValueError: a pool is added or removed, or a setting other than those changes
                (the message names the settings, never their values).
        """
        if set(pools) != set(self._pools):
            added = ", ".join(repr(n) for n in pools if n not in self._pools)
            removed = ", ".join(repr(n) for n in self._pools if n not in pools)
            change = "; ".join(
                part
                for part in (added and f"added {added}", removed and f"removed {removed}")
                if part
            )
            raise ValueError(f"pools cannot be added or removed while they exist ({change})")
        for name, config in pools.items():
            if not isinstance(config, PoolConfig):
                raise TypeError(
                    f"pool {name!r}: expected a PoolConfig, got {type(config).__name__}"
                )
            old = self._pools[name].config
            fixed = [
                f.name
                for f in dataclasses.fields(PoolConfig)
                if f.name not in LIVE_SETTINGS and getattr(old, f.name) != getattr(config, f.name)
            ]
            if fixed:
                raise ValueError(
                    f"pool {name!r}: {', '.join(fixed)} cannot change while the pools exist "
                    f"(only {', '.join(LIVE_SETTINGS)} can): restart to apply"
                )
        if not check_only:
            for name, config in pools.items():
                self._pools[name].config = config  # read by each acquisition

    def __repr__(self) -> str:
        configs = {name: p.config for name, p in self._pools.items()}
        return f"PoolManager({configs!r})"
