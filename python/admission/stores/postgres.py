"""The PostgreSQL store: limiters shared by every host that reaches one PostgreSQL database.

`Postgres` implements `admission.stores.NetworkStore` on asyncpg (the ``postgres`` extra): each
decision is one prepared statement, one round trip, decided on the server's clock. The SQL and
the schema are `admission.stores._postgres_sql`'s; this module owns the connections, the
schema's creation (`Postgres.migrate`), the sweeping of expired rows (`Postgres.sweep`) and
the mapping of every driver failure to `admission.errors.StoreUnavailable`. It never decides
anything itself, and never waits: the limiters of `admission.stores.remote` do that.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, final

from admission._extras import require
from admission._validate import duration_seconds
from admission.errors import ConfigError, StoreUnavailable
from admission.pools.dsn import parse_dsn, redact_dsn, scrub
from admission.pools.errors import PoolError
from admission.stores import _postgres_sql
from admission.stores._connections import Connections
from admission.stores.network import (
    BatchContended,
    NetworkStore,
    RateReply,
    SemaphoreReply,
    by_bucket,
    caller_bounds,
    check_batch,
    check_bucket,
    check_lease,
    check_rate,
    check_requests,
)

__all__ = ["Postgres"]

OWN_POOL_SIZE = 10
"""Connections a `Postgres` store opens for a ``dsn`` (at most; each when first needed)."""

SETUP_TIMEOUT = 10.0
"""Seconds that connecting and checking (or creating) the schema may take, and each batch of
`Postgres.sweep`: longer than a decision's ``timeout``, which still bounds every call that
waits for them (the work goes on in the background and the next call finds it done)."""

_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_MIGRATE_ATTEMPTS = 20
_LOCK_NOT_AVAILABLE = "55P03"  # a lock_timeout passed (the schema's rate_batch)


def _rate_reply(
    admitted: bool, tat: int, now: int, interval_us: int, burst: int, cost: int
) -> RateReply:
    """The reply to one decision of the ``rate`` (or ``rate_each``) statement, from the row
    it wrote: its TAT and the server's now."""
    if admitted:
        due = tat - burst * interval_us - now
        return RateReply(True, due if due > 0 else 0, tat, now)
    return RateReply(False, max(tat, now) + (cost - burst) * interval_us - now, tat, now)


def _each_bucket(
    requests: Sequence[tuple[bytes | None, int, int]],
    buckets: list[bytes | None],
    interval_us: int,
    burst: int,
) -> dict[bytes | None, tuple[int, int]] | None:
    """Bucket -> (its requests' cost, how many), in the order of ``buckets`` (the
    requests' buckets in `by_bucket`'s order), where the plain
    ``rate_each`` statement decides ``requests``: they share one max wait, each bucket's
    are of one cost, and a full bucket (a new row) admits all of a bucket's requests within
    that wait (the statement writes the proposed row as the outcome). Else None: the
    ``rate_batch`` function decides them."""
    max_wait = requests[0][2]
    each: dict[bytes | None, tuple[int, int]] = {}
    for key, cost, wait in requests:
        if wait != max_wait:
            return None
        known, count = each.get(key, (cost, 0))
        if known != cost:
            return None
        each[key] = (cost, count + 1)
    if max_wait >= 0:
        room = burst * interval_us + max_wait
        if any(count > 1 and count * cost * interval_us > room for cost, count in each.values()):
            return None
    return {key: each[key] for key in buckets}


def _contended(name: str, error: StoreUnavailable) -> BatchContended | None:
    """`BatchContended` when a batch failed because its rows stayed locked past its
    ``lock_timeout`` (nothing written), else None (the failure is ``error`` itself)."""
    if getattr(error.__cause__, "sqlstate", None) != _LOCK_NOT_AVAILABLE:
        return None
    return BatchContended(f"a row of {name!r} stayed locked: {error.__cause__}")


def _retrieved(setup: asyncio.Future[None]) -> None:
    if not setup.cancelled():
        setup.exception()


async def _close_or_drop(connection: Any) -> None:
    try:
        await asyncio.wait_for(connection.close(), SETUP_TIMEOUT)
    except Exception:
        connection.terminate()  # the server does not answer: drop the connection


@final
class Postgres(NetworkStore):
    """A store in a PostgreSQL database: pass it as ``store=`` to the limiters.

    ``dsn`` makes the store open its own connections (up to `OWN_POOL_SIZE`, each when
    first needed), used directly rather than through an asyncpg pool; ``pool`` takes an
    ``asyncpg`` pool, or ``(pool_manager, "name")`` for a pool of a `admission.PoolManager`:
    a pool given is used as it is and never closed by `aclose`.
    ``schema`` holds the store's tables and function (created by `migrate`, or by the first
    use if ``create``); ``timeout`` (seconds or a duration string, default 100 ms) bounds every
    call, which otherwise raises `admission.errors.StoreUnavailable`: a timer around a call
    made directly; for a limiter's call, the limiter's own deadline, after which the
    statement runs on and what a late reply granted is given back (no timer of the store's
    then: `admission.stores.network.caller_bounds`).

    >>> import admission as adm
    >>> store = adm.stores.Postgres("postgresql://app:s3cret@db.internal/rag", timeout="50ms")
    >>> store
    Postgres('postgresql://app:***@db.internal/rag', schema='admission', timeout=0.05)
    >>> store.label
    'postgresql://app:***@db.internal/rag'

    In a service (asyncio; the store belongs to the loop that first uses it)::

        await store.migrate()                  # at deployment, or let the first use do it
        reply = await store.rate("openai", None, interval_us=120_000, burst=10, cost=1,
                                 max_wait_us=0)
        await store.aclose()

    Expired rows (full buckets, expired leases and queue entries) are removed by `sweep`,
    which each store also runs every ``sweep_interval`` seconds (default 60, jittered; None:
    never) once it is in use; sweeps never wait for a decision in flight.

    Raises:
        ImportError: asyncpg is not installed (``pip install 'admission[postgres]'``).
        TypeError, ValueError: not exactly one of ``dsn`` and ``pool``, a DSN asyncpg cannot
            use, a schema that is not an identifier (or is pg_...), a bad ``timeout`` or
            ``sweep_interval``.
    """

    __slots__ = (
        "_acquire",
        "_clean_failures",
        "_closed",
        "_create",
        "_dsn",
        "_label",
        "_own",
        "_owns_pool",
        "_pool",
        "_ready",
        "_schema",
        "_secrets",
        "_setup",
        "_sql",
        "_sweep_interval",
        "_sweeper",
        "timeout",
    )

    def __init__(
        self,
        dsn: str | None = None,
        *,
        pool: Any = None,
        schema: str = "admission",
        timeout: float | str = 0.1,
        create: bool = True,
        sweep_interval: float | str | None = 60.0,
    ) -> None:
        require("asyncpg", "postgres", "admission.stores.Postgres")
        import asyncpg.exceptions._base as driver  # type: ignore[import-untyped]

        # Errors after which a connection is still usable: the server's reply to the
        # statement, an argument the driver refused to encode.
        self._clean_failures = (driver.PostgresError, driver.DataError)
        if (dsn is None) == (pool is None):
            raise TypeError("Postgres needs exactly one of dsn= and pool=")
        if not isinstance(schema, str) or not _SCHEMA_NAME.fullmatch(schema):
            raise ValueError(
                f"schema must be an identifier (letters, digits, _; at most 63), got {schema!r}"
            )
        if schema.startswith("pg_"):  # the server refuses to create it: every call would fail
            raise ValueError(f"schema {schema!r}: the prefix pg_ is reserved by PostgreSQL")
        if not isinstance(create, bool):
            raise TypeError(f"create must be a bool, got {create!r}")
        self.timeout = duration_seconds(timeout, "timeout", positive=True)
        self._sweep_interval = (
            None
            if sweep_interval is None
            else duration_seconds(sweep_interval, "sweep_interval", positive=True)
        )
        self._schema = schema
        self._create = create
        self._sql = _postgres_sql.statements(schema)
        self._secrets: tuple[str, ...] = ()
        self._dsn = dsn
        self._pool: Any = None
        self._own: Connections[Any] | None = None
        """The store's own connections (made from ``dsn``), used directly: a statement
        costs the client a third less CPU than through an asyncpg pool (whose release
        shields a task of its own), and a loop turn less."""
        self._owns_pool = dsn is not None
        if dsn is not None:
            if not isinstance(dsn, str):
                raise TypeError(f"dsn must be a str, got {type(dsn).__name__}")
            self._secrets = parse_dsn(dsn).secrets  # ValueError, redacted, if unusable
            self._label = redact_dsn(dsn)
        else:
            self._acquire, self._label, self._secrets = self._given_pool(pool)
            self._pool = pool
        self._setup: asyncio.Future[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._ready = False
        self._closed = False

    @staticmethod
    def _given_pool(pool: Any) -> tuple[Any, str, tuple[str, ...]]:
        """How to take a connection from ``pool``, the store's label for it, and the secrets
        of its DSN (scrubbed from every message)."""
        import asyncpg

        # A PoolManager, known by its public surface (importing the class would close an
        # import cycle: the pools are built on the limiters, which import the stores).
        if isinstance(pool, tuple) and len(pool) == 2 and type(pool[0]).__name__ == "PoolManager":
            manager, name = pool
            if name not in manager.names:
                known = ", ".join(repr(n) for n in manager.names)
                raise ValueError(f"the PoolManager has no pool {name!r} (it has {known})")
            return (lambda: manager.connection(name)), f"PoolManager pool {name!r}", ()
        if isinstance(pool, asyncpg.Pool):
            args = getattr(pool, "_connect_args", ())
            dsn = args[0] if args and isinstance(args[0], str) else None
            if dsn is None:
                return pool.acquire, "postgresql (an asyncpg pool)", ()
            try:
                secrets = parse_dsn(dsn).secrets
            except ValueError:
                secrets = ()  # asyncpg took it: shown redacted all the same
            return pool.acquire, redact_dsn(dsn), secrets
        raise TypeError(
            f"pool must be an asyncpg pool or (PoolManager, pool name), got {type(pool).__name__}"
        )

    @property
    def label(self) -> str:
        """The DSN without its password (or which pool), for metrics and errors."""
        return self._label

    @property
    def schema(self) -> str:
        """The schema holding the store's tables."""
        return self._schema

    def __repr__(self) -> str:
        return f"Postgres({self._label!r}, schema={self._schema!r}, timeout={self.timeout!r})"

    # ------------------------------------------------------------------ failures

    def _failure(self, exc: BaseException, timeout: float) -> StoreUnavailable | ConfigError:
        """What a failure to connect or to set up means to the caller: `StoreUnavailable`,
        or `ConfigError` for a connection option the driver refuses (``?sslmode=bogus``),
        which no retry mends (not an outage for the breaker, nor for on_store_error)."""
        import asyncpg.exceptions._base as driver

        if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
            reason = f"no answer within {timeout:g} s"
        else:
            reason = f"{type(exc).__name__}: {scrub(str(exc), self._secrets)}"
        if isinstance(exc, driver.ClientConfigurationError):
            return ConfigError(f"{self._label} cannot be connected to: {reason}")
        return StoreUnavailable(self._label, reason)

    @staticmethod
    def _is_store_failure(exc: BaseException) -> bool:
        """Whether ``exc`` is the store's fault: connection, timeout, server or driver error
        (not arguments the driver cannot encode, nor values the server refuses as data, a
        NUL in a text: those are the caller's, and must not count against the breaker that
        every limiter of the store shares)."""
        import asyncpg.exceptions
        import asyncpg.exceptions._base as driver

        # asyncpg raises an argument it cannot encode as `asyncpg.exceptions.DataError`, the
        # server's class 22 ("data exception"), as the server's own refusals of a value.
        if isinstance(exc, (driver.DataError, asyncpg.exceptions.DataError)):
            return False
        if isinstance(exc, driver.ClientConfigurationError):
            return True  # raised as a ConfigError by `_failure`
        return isinstance(
            exc,
            (
                TimeoutError,
                asyncio.TimeoutError,
                OSError,
                driver.PostgresMessage,
                driver.InterfaceMessage,
                driver.InternalClientError,
                PoolError,
            ),
        )

    # ------------------------------------------------------------------ connections

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        async with self._acquire() as conn:
            yield conn

    async def _own_connection(self) -> AsyncIterator[Any]:
        assert self._own is not None
        conn = await self._own.take()
        healthy = False
        try:
            yield conn
            healthy = True
        except self._clean_failures:
            healthy = True
            raise
        finally:
            self._own.give(conn, healthy)

    async def _query(self, method: str, sql: str, args: tuple[Any, ...]) -> Any:
        own = self._own
        if own is not None:
            # Broken or cut short: closed (terminate(), never a cancel that would wait for
            # the server, which may be the one not answering) and replaced.
            return await own.call(
                lambda conn: getattr(conn, method)(sql, *args), self._clean_failures
            )
        async with self._acquire() as conn:
            try:
                return await getattr(conn, method)(sql, *args)
            except self._clean_failures:
                raise  # the server refused the statement: the connection is as it was
            except BaseException:
                # Cut short (a timeout, a caller giving up) or broken: the connection is
                # dropped, not cancelled. Cancelling would wait for the server, which may be
                # the one not answering; the pool opens a new connection instead.
                conn.terminate()
                raise

    async def _call(self, method: str, statement: str, *args: Any) -> Any:
        """One statement: ``conn.<method>(sql, *args)`` within ``timeout`` (bounded by the
        limiter calling it, if one is: see `admission.stores.network.caller_bounds`)."""
        bounded = caller_bounds.get()  # before the first await: set for that step only
        if not self._ready:
            await self._wait_ready(bounded)
        timeout = self.timeout
        try:
            if bounded:
                return await self._query(method, self._sql[statement], args)
            if sys.version_info >= (3, 11):
                async with asyncio.timeout(timeout):
                    return await self._query(method, self._sql[statement], args)
            return await asyncio.wait_for(self._query(method, self._sql[statement], args), timeout)
        except Exception as exc:
            if self._is_store_failure(exc):
                raise self._failure(exc, timeout) from exc
            raise

    async def _wait_ready(self, bounded: bool = False) -> None:
        if self._closed:
            raise StoreUnavailable(self._label, "the store was closed (aclose)")
        setup = self._setup
        if setup is None or (setup.done() and setup.exception() is not None):
            setup = self._setup = asyncio.ensure_future(self._set_up())
            # Its failure may come when no caller waits any more (each gave up at its
            # timeout): the next call reads it, asyncio must not log it as never retrieved.
            setup.add_done_callback(_retrieved)
        try:
            # Shielded: a caller that gives up leaves the connecting to the next one. Under
            # a limiter's bound, no timer of its own (asyncio's would cancel the task that
            # set it, which is the caller's only until the limiter's deadline).
            if bounded:
                await asyncio.shield(setup)
            else:
                await asyncio.wait_for(asyncio.shield(setup), self.timeout)
        except (TimeoutError, asyncio.TimeoutError) as exc:
            raise StoreUnavailable(
                self._label, f"not connected within {self.timeout:g} s (still trying)"
            ) from exc

    async def _set_up(self) -> None:
        try:
            await asyncio.wait_for(self._connect_and_check(), SETUP_TIMEOUT)
        except (ConfigError, StoreUnavailable):
            raise
        except Exception as exc:
            if self._is_store_failure(exc):
                raise self._failure(exc, SETUP_TIMEOUT) from exc
            raise
        if self._closed:  # closed while connecting: no sweeper left behind
            raise StoreUnavailable(self._label, "the store was closed (aclose)")
        self._ready = True
        if self._sweep_interval is not None and self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(
                self._sweep_every(self._sweep_interval)
            )

    async def _open_own_pool(self) -> None:
        if self._closed:
            raise StoreUnavailable(self._label, "the store was closed (aclose)")
        if self._own is None:
            import asyncpg

            dsn = self._dsn

            def connect() -> Any:
                return asyncpg.connect(dsn, server_settings={"application_name": "admission-store"})

            self._own = Connections(
                connect,
                lambda conn: conn.terminate(),
                lambda conn: not conn.is_closed(),
                OWN_POOL_SIZE,
            )
            self._acquire = contextlib.asynccontextmanager(self._own_connection)

    async def _connect_and_check(self) -> None:

        if self._owns_pool:
            await self._open_own_pool()
        async with self._connection() as conn:
            version, complete = await self._version_on(conn)
            needed = _postgres_sql.VERSION
            # A later version keeps every object of this one: used as it is, never brought
            # "up" to this one (which would put this release's functions over its own).
            if version is not None and version >= needed:
                return
            if not self._create:
                if complete:  # at `needed`, its number written back by an earlier release
                    return
                found = "has no admission tables" if version is None else f"is at {version}"
                raise ConfigError(
                    f"schema {self._schema!r} of {self._label} {found} (this version needs "
                    f"{needed}): run `await store.migrate()` with this version first (then "
                    "roll the processes; see README, Across hosts), or make the store with "
                    "create=True"
                )
            await self._migrate_on(conn)

    async def _version_on(self, conn: Any) -> tuple[int | None, bool]:
        """The schema's version (None: no admission tables) and whether it has the objects
        of this version."""
        import asyncpg

        try:
            row = await conn.fetchrow(self._sql["version"])
        except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError):
            return None, False
        return (None, False) if row is None else (row[0], row[1])

    async def _migrate_on(self, conn: Any) -> None:
        import asyncpg

        # Concurrent creations (processes starting together) collide in the catalogs:
        # IF NOT EXISTS checks before it inserts. The loser's transaction rolls back whole;
        # its next attempt finds the objects there.
        collisions = (
            asyncpg.UniqueViolationError,
            asyncpg.DuplicateObjectError,
            asyncpg.DuplicateTableError,
            asyncpg.DuplicateSchemaError,
            asyncpg.DuplicateFunctionError,
            asyncpg.DeadlockDetectedError,
            asyncpg.InternalServerError,  # "tuple concurrently updated"
            # Adding version 4's column waits 50 ms at most for the table's lock, so that
            # the decisions queued behind it are not held up for longer.
            asyncpg.LockNotAvailableError,
        )
        for attempt in range(_MIGRATE_ATTEMPTS):
            try:
                await conn.execute(self._sql["schema"])
                return
            except collisions:
                if attempt == _MIGRATE_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(random.uniform(0.01, 0.05))

    async def migrate(self) -> None:
        """Creates the store's schema, tables and function, or brings them up to this version.

        Idempotent, and safe when several processes run it at once; a schema a later
        release brought to a later version is left as it is (never lowered). Needs the
        right to create a schema in the database (or an existing schema owned by the role).
        Raises `admission.errors.StoreUnavailable` if the database cannot be reached within
        `SETUP_TIMEOUT` seconds.
        """
        try:
            if self._owns_pool:
                await asyncio.wait_for(self._open_own_pool(), SETUP_TIMEOUT)

            async def run() -> None:
                async with self._connection() as conn:
                    version, _ = await self._version_on(conn)
                    if version is None or version <= _postgres_sql.VERSION:
                        await self._migrate_on(conn)

            await asyncio.wait_for(run(), SETUP_TIMEOUT)
        except Exception as exc:
            if self._is_store_failure(exc):
                raise self._failure(exc, SETUP_TIMEOUT) from exc
            raise

    # ------------------------------------------------------------------ the contract

    async def register(self, kind: str, name: str, config: Mapping[str, float]) -> None:
        """Records limiter ``name`` of ``kind`` with ``config``; see `NetworkStore.register`."""
        wanted = dict(config)
        stored_text = await self._call(
            "fetchval", "register", kind, name, json.dumps(wanted, sort_keys=True)
        )
        stored = json.loads(stored_text)
        if stored != wanted:
            raise ValueError(
                f"{kind} {name!r} is registered in {self._label} with {stored}, "
                f"not {wanted}: give it another name, or the same configuration"
            )

    async def rate(
        self,
        name: str,
        key: bytes | None,
        interval_us: int,
        burst: int,
        cost: int,
        max_wait_us: int,
    ) -> RateReply:
        """One GCRA decision on the server's clock; see `NetworkStore.rate`."""
        max_wait_us = check_rate(interval_us, burst, cost, max_wait_us)
        admitted, tat, now = await self._call(
            "fetchrow", "rate", name, key, interval_us, burst, cost, max_wait_us
        )
        return _rate_reply(admitted, tat, now, interval_us, burst, cost)

    async def rate_many(
        self,
        name: str,
        key: bytes | None,
        interval_us: int,
        burst: int,
        requests: Sequence[tuple[int, int]],
    ) -> list[RateReply]:
        """Several GCRA decisions on one bucket in one statement (the schema's ``rate_many``
        function: the row locked, the requests decided in order, one write); see
        `NetworkStore.rate_many`."""
        requests = check_requests(requests, interval_us, burst)
        admitted, waits, tats, now = await self._call(
            "fetchrow",
            "rate_many",
            name,
            key,
            interval_us,
            burst,
            [cost for cost, _ in requests],
            [max_wait for _, max_wait in requests],
        )
        return [RateReply(*reply, now) for reply in zip(admitted, waits, tats, strict=True)]

    @property
    def rate_batch_is_one_round_trip(self) -> bool:
        """True: `rate_batch` is one statement, one transaction."""
        return True

    async def rate_batch(
        self,
        name: str,
        interval_us: int,
        burst: int,
        requests: Sequence[tuple[bytes | None, int, int]],
    ) -> list[RateReply]:
        """Decisions on several buckets of limiter ``name`` in one statement (the schema's
        ``rate_batch`` function: the rows locked in one order, `by_bucket`'s, then the
        requests decided in order, one write per bucket charged); see
        `NetworkStore.rate_batch`. One transaction: a row another session holds locked
        (a slow or stuck transaction on ``buckets``) would hold up every bucket of the
        batch, so the rows are waited for a quarter of ``timeout`` at most; past it,
        `BatchContended` (nothing written): the limiters then decide each key on its own.
        A batch whose requests share one max wait, each bucket's at one cost (the common
        case: callers on many keys, one timeout), goes as one plain statement instead
        (`_rate_each`)."""
        requests = check_batch(requests, interval_us, burst)
        buckets = by_bucket(requests)
        # A quarter of the timeout, within lock_timeout's range (a timeout of 99 days or
        # more would be refused by the server).
        lock_ms = min(max(int(self.timeout * 250), 1), 2**31 - 1)
        if (each := _each_bucket(requests, buckets, interval_us, burst)) is not None:
            return await self._rate_each(name, interval_us, burst, requests, each, lock_ms)
        index = {key: i for i, key in enumerate(buckets, 1)}
        try:
            admitted, waits, tats, now = await self._call(
                "fetchrow",
                "rate_batch",
                name,
                interval_us,
                burst,
                buckets,
                [index[key] for key, _, _ in requests],
                [cost for _, cost, _ in requests],
                [max_wait for _, _, max_wait in requests],
                lock_ms,
            )
        except StoreUnavailable as exc:
            if (contended := _contended(name, exc)) is None:
                raise
            raise contended from exc
        return [RateReply(*reply, now) for reply in zip(admitted, waits, tats, strict=True)]

    async def _rate_each(
        self,
        name: str,
        interval_us: int,
        burst: int,
        requests: Sequence[tuple[bytes | None, int, int]],
        each: dict[bytes | None, tuple[int, int]],
        lock_ms: int,
    ) -> list[RateReply]:
        """`rate_batch` of requests that share one max wait, each bucket's at one cost
        (``each``: bucket -> (cost, requests), in `by_bucket`'s order): each bucket's
        requests decided as `rate` decides them one after the other, all in one statement
        (``rate_each``: one write per row, where the ``rate_batch`` function writes each row
        twice)."""
        counts: tuple[list[int], ...] = ()
        statement = "rate_each"  # each bucket once: no count's arithmetic (1 µs a row less)
        if len(each) < len(requests):
            counts = ([count for _, count in each.values()],)
            statement = "rate_each_counted"
        try:
            rows = await self._call(
                "fetch",
                statement,
                name,
                interval_us,
                burst,
                list(each),
                [cost for cost, _ in each.values()],
                requests[0][2],
                f"{lock_ms}ms",
                *counts,
            )
        except StoreUnavailable as exc:
            if (contended := _contended(name, exc)) is None:
                raise
            raise contended from exc
        decided = {stored: (granted, tat, now) for stored, granted, tat, now in rows}
        replies = []
        seen: dict[bytes | None, int] = {}
        for key, cost, _ in requests:
            granted, tat, now = decided[b"" if key is None else b"\x01" + key]
            # The n-th request of its bucket; the first `granted` were admitted, the n-th
            # leaving the TAT that the last admitted one left less the costs after it.
            n = seen[key] = seen.get(key, 0) + 1
            if n <= granted:
                tat -= (granted - n) * cost * interval_us
            replies.append(_rate_reply(n <= granted, tat, now, interval_us, burst, cost))
        return replies

    async def rate_give_back(
        self, name: str, key: bytes | None, interval_us: int, cost: int, tat_us: int
    ) -> bool:
        """Undoes the last charge if it is still the last; see `NetworkStore.rate_give_back`."""
        check_bucket(interval_us, cost)
        status = await self._call("execute", "rate_give_back", name, key, interval_us, cost, tat_us)
        return bool(status == "UPDATE 1")

    async def semaphore_acquire(
        self, name: str, limit: int, holder: str, lease_us: int, queue: bool
    ) -> SemaphoreReply:
        """A lease, or a place in the FIFO queue; see `NetworkStore.semaphore_acquire`."""
        check_lease(lease_us)
        granted, fence, in_use, ahead = await self._call(
            "fetchrow", "semaphore_acquire", name, limit, holder, lease_us, queue
        )
        return SemaphoreReply(granted, fence, in_use, ahead)

    async def semaphore_renew(self, name: str, holders: Sequence[str], lease_us: int) -> list[bool]:
        """Extends the holders' valid leases; see `NetworkStore.semaphore_renew`."""
        check_lease(lease_us)
        rows = await self._call("fetch", "semaphore_renew", name, list(holders), lease_us)
        renewed = {row[0] for row in rows}
        return [holder in renewed for holder in holders]

    async def semaphore_release(self, name: str, holder: str) -> bool:
        """Ends a lease or a place in the queue; see `NetworkStore.semaphore_release`."""
        return bool(await self._call("fetchval", "semaphore_release", name, holder))

    async def semaphore_state(self, name: str) -> tuple[int, int]:
        """(valid leases, queued waiters) now; see `NetworkStore.semaphore_state`."""
        in_use, waiting = await self._call("fetchrow", "semaphore_state", name)
        return int(in_use), int(waiting)

    # ------------------------------------------------------------------ maintenance

    async def sweep(self, *, batch: int = 1000) -> int:
        """Deletes expired rows (full buckets, expired leases and queue entries) in batches of
        at most ``batch`` per table, each its own statement; returns how many it deleted.

        Never waits for a decision in flight (``FOR UPDATE SKIP LOCKED``: a row being
        decided on is left for the next sweep); a decision meeting a row of the batch waits
        for that one statement at most. Each batch may take `SETUP_TIMEOUT` seconds.
        """
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValueError(f"batch must be an integer >= 1, got {batch!r}")
        if not self._ready:
            await self._wait_ready()
        deleted = 0
        while True:
            try:
                row = await asyncio.wait_for(
                    self._query("fetchrow", self._sql["sweep"], (batch,)), SETUP_TIMEOUT
                )
            except Exception as exc:
                if self._is_store_failure(exc):
                    raise self._failure(exc, SETUP_TIMEOUT) from exc
                raise
            deleted += int(sum(row))
            if max(row) < batch:
                return deleted

    async def _sweep_every(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval * random.uniform(0.5, 1.5))
            # A failed sweep is the next one's work; the decisions report the outage.
            with contextlib.suppress(StoreUnavailable):
                await self.sweep()

    async def aclose(self) -> None:
        """Stops the periodic sweep and closes the store's own connections (never a pool it
        was given); idempotent. Calls after it raise `admission.errors.StoreUnavailable`."""
        self._closed = True
        self._ready = False
        sweeper, self._sweeper = self._sweeper, None
        if sweeper is not None:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
        if self._own is not None:
            await self._own.aclose(_close_or_drop)
