"""One pool's life: open, hand out connections, notice outages, reconnect, check, close.

The asyncpg pool owns the connections; the admission `Semaphore` of ``max_size`` permits
owns the queue in front of it. A caller holds a permit for exactly as long as it holds a
connection, so the asyncpg pool always has one free for a permit holder and never queues
anyone itself: waiting is FIFO, timed, bounded by ``max_waiters``, cancellation-safe and
counted, all by the semaphore.

States (`PoolState`): ``new`` → ``up`` ⇄ ``down`` → ``closing`` → ``closed``. ``down`` means
opening a connection failed for a reason that may pass (refused, reset, timed out, the
server starting or shutting down): every call then fails at once with `PoolUnavailable`
while one background task probes the server with exponential backoff and full jitter,
and the pool is ``up`` again as soon as a probe's ``SELECT 1`` succeeds. Nothing a caller
ran is ever retried: only the caller knows whether its work may run twice.

A server that refuses a connection for capacity ("too many connections": a ``CONNECTION
LIMIT``, ``max_connections``) is up, not down. If the pool has connections open, it stays
``up`` and *capacity limited*: the semaphore's limit is lowered to the connections open (so
no more callers try to connect than can be served), the refused caller queues again for one
of them, and one background task lifts the limit one connection at a time with the same
backoff, lengthened by each refusal, until it stands at ``max_size`` again. Only with no
connection open is it ``down``, and callers get `PoolServerFull`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from typing import Any, NoReturn

from admission.concurrency import Semaphore
from admission.errors import AcquireTimeout, Closed
from admission.pools import metrics
from admission.pools._driver import (
    TIMEOUTS,
    AsyncpgPool,
    at_capacity,
    broken,
    discard,
    driver,
    fatal,
    prefer_connected,
    transient,
)
from admission.pools.config import PoolConfig
from admission.pools.dsn import parse_dsn, scrub
from admission.pools.errors import (
    PoolClosed,
    PoolConnectError,
    PoolConnectionLost,
    PoolOverloaded,
    PoolServerFull,
    PoolTimeout,
    PoolUnavailable,
)
from admission.pools.stats import PoolCheck, PoolState, PoolStats
from admission.pools.tls import SslChoice, choose_ssl, root_cert_path

__all__ = ["ManagedPool"]

log = logging.getLogger("admission.pools")


class ManagedPool:
    """One named pool of a `PoolManager` (internal: use the manager's methods)."""

    def __init__(self, name: str, config: PoolConfig) -> None:
        self.name = name
        self.config = config
        parsed = parse_dsn(config.dsn)
        self._dsn = parsed
        # Whatever asyncpg may take as the password: the DSN's, ``password=``, PGPASSWORD.
        secrets = list(parsed.secrets)
        for extra in (config.password, os.environ.get("PGPASSWORD")):
            if extra:
                secrets.append(extra)
        self._secrets = tuple(secrets)
        self.semaphore = Semaphore(config.max_size, name=f"pool:{name}")
        self.pool: AsyncpgPool | None = None
        self.state: PoolState = "new"
        self.ssl: SslChoice | None = None
        self._pg: Any = None
        self._kwargs: dict[str, Any] = {}
        self._reconnector: asyncio.Task[None] | None = None
        self._health: asyncio.Task[None] | None = None
        self._grower: asyncio.Task[None] | None = None  # runs while capacity limited
        self._next_probe = 0.0
        self._expired = False
        # Counters (the semaphore counts timeouts and cancellations itself).
        self.acquired = 0
        self._waited = 0  # acquisitions that queued, then got their permit
        self._wait_total = 0.0  # their summed waits, seconds
        self._wait_max = 0.0  # the longest of them, seconds
        self._overloaded = 0
        self._unavailable = 0
        self._lost = 0
        self._outages = 0
        self._reconnects = 0
        self._capacity_refusals = 0
        self.last_error: str | None = None
        self._full = False  # last_error is a refusal for capacity ("too many connections")

    # ---------------------------------------------------------------- opening and closing

    def _connect_kwargs(self, choice: SslChoice) -> dict[str, Any]:
        cfg = self.config
        settings = dict(cfg.server_settings or {})
        if "application_name" not in settings and "application_name" not in self._dsn.params:
            settings["application_name"] = cfg.application_name or f"admission:{self.name}"
        kwargs: dict[str, Any] = {
            "min_size": cfg.min_size,
            "max_size": cfg.max_size,
            "timeout": cfg.connect_timeout,
            "command_timeout": cfg.command_timeout,
            "max_inactive_connection_lifetime": cfg.max_inactive_connection_lifetime,
            "server_settings": settings,
            **cfg.connect_kwargs,
        }
        if cfg.init is not None:
            kwargs["init"] = cfg.init
        if cfg.password is not None:
            kwargs["password"] = cfg.password
        if choice.arg is not None:
            kwargs["ssl"] = choice.arg
        return kwargs

    async def open(self) -> None:
        """Creates the asyncpg pool; if the database is unreachable, comes up ``down``.

        Raises:
            PoolConnectError: connecting failed for a reason waiting will not fix.
        """
        if self.state != "new":
            return
        self._pg = driver()
        choice = choose_ssl(self.config.ssl, root_cert_path(self.config.ssl_root_cert), self._dsn)
        self.ssl = choice
        log.info("pool %r (%s): %s", self.name, self.config.redacted_dsn, choice)
        self._kwargs = self._connect_kwargs(choice)
        try:
            pool = await self._create()
        except Exception as exc:
            if self._closed_meanwhile():
                raise PoolClosed(self.name, f"pool {self.name!r} was closed while opening") from exc
            if not (transient(self._pg, exc) or at_capacity(self._pg, exc)):
                self.state = "closed"
                raise self._connect_error(exc) from exc
            self._go_down(exc)  # start-up with the database down or full: come up by ourselves
        else:
            if self._closed_meanwhile():  # close() found no pool to close: close it here
                await self._close_pool(pool)
                raise PoolClosed(self.name, f"pool {self.name!r} was closed while opening")
            self.pool = pool
            self.state = "up"
        metrics.track(self)  # admission_pool_* from now on, until closed
        if self.config.health_check_interval is not None:
            self._health = asyncio.get_running_loop().create_task(
                self._health_loop(self.config.health_check_interval),
                name=f"admission pool {self.name!r} health",
            )

    def _closed_meanwhile(self) -> bool:
        # A method, not an inline test: close() may run while open() is connecting.
        return self.state != "new"

    async def _create(self) -> AsyncpgPool:
        pool: AsyncpgPool = await self._pg.create_pool(self.config.dsn, **self._kwargs)
        return pool

    async def close(self) -> None:
        """Stops admitting, waits for connections in use up to ``close_timeout``, then
        terminates what is left."""
        if self.state in ("closing", "closed"):
            return
        self.state = "closing"
        self.semaphore.close()  # queued callers get PoolClosed now
        tasks = [t for t in (self._reconnector, self._health, self._grower) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._reconnector = self._health = self._grower = None
        if self.pool is not None:
            await self._close_pool(self.pool)
        self.state = "closed"
        metrics.untrack(self)

    async def _close_pool(self, pool: AsyncpgPool) -> None:
        """Closes an asyncpg pool gracefully, terminating it at ``close_timeout``."""
        try:
            # asyncpg's close() waits for every connection to come back; if cancelled
            # (here: by the deadline) it terminates them all.
            await asyncio.wait_for(pool.close(), self.config.close_timeout)
        except TIMEOUTS:
            log.warning(
                "pool %r: %d connection(s) still in use after close_timeout=%gs: terminated",
                self.name,
                self.semaphore.in_use,
                self.config.close_timeout,
            )
        except Exception:
            pool.terminate()
            log.exception("pool %r: error while closing; connections terminated", self.name)

    # ------------------------------------------------------------------ handing out

    def refuse(self) -> NoReturn:
        """Raises the error that explains why the pool hands out nothing now."""
        if self.state == "down":
            raise self._unavailable_error("the database is unreachable")
        if self.state == "new":
            raise PoolClosed(
                self.name,
                f"pool {self.name!r} is not open yet: use `async with pools:` "
                "or `await pools.open()` first",
            )
        raise PoolClosed(
            self.name,
            f"pool {self.name!r} is {self.state}: no new connections (a closed PoolManager "
            "is not reopened: create a new PoolManager to connect again)",
        )

    def _serving(self) -> bool:
        # A method, not an inline test: the state changes while a caller is suspended.
        return self.state == "up"

    def _unavailable_error(self, what: str) -> PoolUnavailable:
        self._unavailable += 1
        retry_after = max(0.0, self._next_probe - time.monotonic())
        if self._full:
            return PoolServerFull(
                self.name,
                f"pool {self.name!r}: the server is at its connection limit and refuses new "
                f"connections ({self.last_error}), and none is open; failing fast while the "
                "pool retries in the background",
                retry_after,
            )
        return PoolUnavailable(
            self.name,
            f"pool {self.name!r}: {what} ({self.last_error}); "
            "failing fast while the pool reconnects in the background",
            retry_after,
        )

    def _overloaded_error(self) -> PoolOverloaded:
        self._overloaded += 1
        return PoolOverloaded(
            self.name,
            f"pool {self.name!r}: {self.semaphore.waiting} callers already wait for a "
            f"connection (max_waiters={self.config.max_waiters}): refused at once; shed load "
            "or raise max_size",
        )

    async def acquire(self, holder: Any = None) -> Any:
        """A connection, with its permit held; give both back with `release`.

        ``holder``, if given, gets it as ``holder._conn`` too (saves the context managers a
        coroutine frame: this is the hot path).
        """
        if self.state != "up":
            self.refuse()
        sem = self.semaphore
        queued = granted = 0.0  # when this caller first queued and last got a permit
        if not sem._try_take(1):  # uncounted: a queued request is counted by its outcome
            queued = time.monotonic()
            granted = await self._wait_for_permit(queued)
        while True:
            try:
                conn = await self.pool.acquire()  # type: ignore[union-attr]  # up => pool set
                break
            except BaseException as exc:
                if not self._limit_to_open(exc):
                    sem.release()
                    self._acquire_failed(exc)
                    raise
            # The server is full but connections are open: wait for one of them. The limit
            # was lowered first, so this permit goes to nobody who would try to connect.
            sem.release()
            queued = queued or time.monotonic()
            granted = await self._wait_for_permit(queued)
        if queued:
            self._note_wait(granted - queued)
        self.acquired += 1
        if holder is not None:
            holder._conn = conn
        return conn

    async def _wait_for_permit(self, queued: float) -> float:
        """Queues FIFO for a permit (bounded, timed from ``queued``, counted); returns when
        it was granted."""
        sem = self.semaphore
        limit = self.config.max_waiters
        if limit is not None and sem.waiting >= limit:
            raise self._overloaded_error()
        # The semaphore's FIFO queue: its waiters' timeouts share one loop timer.
        timeout = self.config.acquire_timeout
        left = None if timeout is None else max(0.0, timeout - (time.monotonic() - queued))
        try:
            await sem.acquire(1, left)
        except AcquireTimeout:
            raise PoolTimeout(self.name, timeout or 0.0) from None
        except Closed:
            closed = f"pool {self.name!r} was closed while waiting"
            raise PoolClosed(self.name, closed) from None
        granted = time.monotonic()
        if not self._serving():  # went down (or closed) while we queued
            sem.release()
            self.refuse()
        return granted

    def _note_wait(self, waited: float) -> None:
        self._waited += 1
        self._wait_total += waited
        if waited > self._wait_max:
            self._wait_max = waited

    def _acquire_failed(self, exc: BaseException) -> None:
        """Opening a connection for a caller failed: raise the clear error, if there is one."""
        if self.state in ("closing", "closed"):
            raise PoolClosed(self.name, f"pool {self.name!r} is {self.state}") from exc
        if not isinstance(exc, Exception) or self._pg is None:
            return  # cancelled: propagate as is
        if transient(self._pg, exc) or at_capacity(self._pg, exc):  # full, none open: down
            self._go_down(exc)
            raise self._unavailable_error("cannot connect to the database") from exc
        if fatal(self._pg, exc):
            self._go_down(exc)  # e.g. the password was changed: keep probing, fail fast
            raise self._connect_error(exc) from exc

    async def release(self, conn: Any, exc: BaseException | None, committing: bool = False) -> None:
        """Gives a connection and its permit back; a broken connection is discarded.

        Raises `PoolConnectionLost` (chained to ``exc``) when ``exc`` says the connection
        broke. A failure to reset a connection after a block that succeeded is not the
        block's failure: the connection is discarded and nothing is raised, so a caller
        never retries (runs twice) work that was done.
        """
        lost = exc is not None and broken(self._pg, exc, conn)
        try:
            if lost:
                discard(conn)
            await self.pool.release(conn)  # type: ignore[union-attr]
        except Exception as reset_error:
            log.debug("pool %r: connection discarded on release: %r", self.name, reset_error)
        finally:
            self.semaphore.release()
        if lost:
            assert exc is not None
            if self.state in ("closing", "closed"):
                raise PoolClosed(
                    self.name,
                    f"pool {self.name!r}: the connection was terminated by close() after "
                    f"close_timeout={self.config.close_timeout:g}s",
                ) from exc
            self._lost += 1
            outcome = (
                "; the COMMIT was in flight: it may or may not have happened" if committing else ""
            )
            raise PoolConnectionLost(
                self.name,
                f"pool {self.name!r}: the connection broke while in use "
                f"({self.describe(exc)}); it was discarded, nothing was retried{outcome}",
            ) from exc

    # ------------------------------------------------------------- outages and health

    def describe(self, exc: BaseException) -> str:
        """``Type: message`` of a driver error, with every known secret masked."""
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return scrub(text, self._secrets)

    def _connect_error(self, exc: BaseException) -> PoolConnectError:
        return PoolConnectError(
            self.name,
            f"pool {self.name!r} ({self.config.redacted_dsn}): cannot connect: "
            f"{self.describe(exc)}; waiting will not fix this, check the configuration",
        )

    def _connect_failed(self, exc: BaseException) -> None:
        """Remembers why opening a connection failed (and counts refusals for capacity)."""
        self.last_error = self.describe(exc)
        self._full = self._pg is not None and at_capacity(self._pg, exc)
        if self._full:
            self._capacity_refusals += 1

    def _backoff(self, attempt: int) -> float:
        """The wait before retry ``attempt`` (0, 1, ...): exponential from ``reconnect_base``
        up to ``reconnect_cap``, with full jitter, so that many clients restarting together
        do not retry in lockstep."""
        cfg = self.config
        return random.uniform(
            0.0, min(cfg.reconnect_cap, cfg.reconnect_base * 2.0 ** min(attempt, 64))
        )

    def _go_down(self, exc: BaseException) -> None:
        self._connect_failed(exc)
        if self.state in ("down", "closing", "closed"):
            return
        self.state = "down"
        self._outages += 1
        self._expired = False
        if self._full:
            log.warning(
                "pool %r (%s): the server is at its connection limit and refuses every new "
                "connection (%s), and none is open; calls fail fast (PoolServerFull) while "
                "the pool retries",
                self.name,
                self.config.redacted_dsn,
                self.last_error,
            )
        else:
            log.warning(
                "pool %r (%s): database unreachable (%s); calls fail fast while reconnecting",
                self.name,
                self.config.redacted_dsn,
                self.last_error,
            )
        self._reconnector = asyncio.get_running_loop().create_task(
            self._reconnect(), name=f"admission pool {self.name!r} reconnect"
        )

    async def _reconnect(self) -> None:
        """Probes until the database answers: exponential backoff, full jitter, no give-up."""
        started = time.monotonic()
        attempt = 0
        reported = self.last_error
        # No attempt limit on purpose (ADM402): a background reconnector that probes until the
        # database answers; close() cancels it.
        while True:  # noqa: ADM402
            delay = self._backoff(attempt)
            attempt += 1
            self._next_probe = time.monotonic() + delay
            await asyncio.sleep(delay)
            try:
                await self._probe()
            except Exception as exc:
                self._connect_failed(exc)
                if self.last_error != reported:  # log changes, not every attempt
                    reported = self.last_error
                    still = (
                        "the server still refuses connections"
                        if self._full
                        else "still unreachable"
                    )
                    log.warning("pool %r: %s (%s)", self.name, still, reported)
                continue
            break
        full, self._full = self._full, False
        self._reconnector = None
        self.state = "up"
        self._reconnects += 1
        # A full server letting the pool in is no outage ending: the server was up all along.
        log.log(
            logging.INFO if full else logging.WARNING,
            "pool %r: %s again after %.1f s; serving",
            self.name,
            "the server accepts connections" if full else "database reachable",
            time.monotonic() - started,
        )

    # ------------------------------------------------------------ the server's limit

    def _limit_to_open(self, exc: BaseException) -> bool:
        """If ``exc`` is the server refusing one more connection while the pool has some
        open: caps the pool at those and returns True (the caller then waits for one).

        The cap is set before the refused caller gives its permit back, so the permit goes
        to no waiter who would try to connect again. The first refusal logs once and starts
        `_grow_back`; later ones (its lifts being refused) are only counted.
        """
        pool = self.pool
        if not (
            isinstance(exc, Exception)
            and self._pg is not None
            and at_capacity(self._pg, exc)
            and self.state == "up"
            and pool is not None
        ):
            return False
        open_now = pool.get_size()
        if not open_now:
            return False  # nothing to serve with: down (`_acquire_failed`)
        self._connect_failed(exc)
        prefer_connected(pool)
        self.semaphore.limit = open_now
        if self._grower is None:
            log.warning(
                "pool %r (%s): the server is at its connection limit (%s): serving with the "
                "%d connection(s) open (max_size=%d), growing again when the server allows "
                "(retried with a backoff; the next line is when this clears)",
                self.name,
                self.config.redacted_dsn,
                self.last_error,
                open_now,
                self.config.max_size,
            )
            self._grower = asyncio.get_running_loop().create_task(
                self._grow_back(), name=f"admission pool {self.name!r} grow back"
            )
        return True

    async def _grow_back(self) -> None:
        """While capacity limited: lifts the cap by one connection at a time, to ``max_size``.

        A lift lets one more caller open a connection. The backoff before the next lift
        (`_backoff`) grows with each lift the server refused (a refusal puts the cap back
        at the connections open) and starts over once a lift stands; the state clears when
        a lift to ``max_size`` has stood for one backoff. While nobody needs more
        connections, lifts are not tried by anyone and the cap climbs back.
        """
        sem = self.semaphore
        max_size = self.config.max_size
        started = time.monotonic()
        attempt = 0
        lifted = False  # a lift is waiting to be refused or not
        refusals = self._capacity_refusals
        while True:
            await asyncio.sleep(self._backoff(attempt))
            if self._capacity_refusals != refusals:  # refused again: wait longer, then lift
                refusals = self._capacity_refusals
                attempt += 1
                lifted = False
                continue
            if lifted:
                attempt = 0
                if sem.limit >= max_size:
                    break
            if self.state == "up" and self.pool is not None:  # no lifts during an outage
                sem.limit = min(max_size, max(sem.limit, self.pool.get_size()) + 1)
                lifted = True
        self._grower = None
        log.info(
            "pool %r: the server's connection limit no longer holds the pool back: max_size=%d "
            "again after %.1f s",
            self.name,
            max_size,
            time.monotonic() - started,
        )

    async def _probe(self) -> None:
        timeout = self.config.connect_timeout
        if self.pool is None:  # never opened: the first connections are the probe
            self.pool = await self._create()
            return
        pool = self.pool
        # A permit, like any caller: the probe's connection counts towards max_size.
        await self.semaphore.acquire(1, timeout)
        try:
            if not self._expired:
                # Connections opened before the outage are not trusted; they are replaced
                # as they come back (idle ones at their next use).
                await pool.expire_connections()
                self._expired = True
            conn = await pool.acquire(timeout=2 * timeout)
            try:
                await conn.fetchval("SELECT 1", timeout=timeout)
            except BaseException:
                discard(conn)
                raise
            finally:
                await pool.release(conn)
        finally:
            self.semaphore.release()

    async def _health_loop(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            if self.state != "up" or self.pool is None:
                continue
            try:
                await self._ping_idle(self.pool)
            except Exception as exc:  # the loop must survive anything a ping raises
                log.debug("pool %r: health check failed: %r", self.name, exc)

    async def _ping_idle(self, pool: AsyncpgPool) -> None:
        """``SELECT 1`` on each idle connection; broken ones are terminated (replaced)."""
        # Only permits nobody waits for: a health check never delays a caller.
        taken = 0
        idle = pool.get_idle_size()
        while taken < idle and self.semaphore._try_take(1):  # a refusal here is no request
            taken += 1
        if not taken:
            return
        try:
            results = await asyncio.gather(
                *(self._ping_one(pool) for _ in range(taken)), return_exceptions=True
            )
        finally:
            self.semaphore.release(taken)
        for result in results:
            if isinstance(result, Exception) and transient(self._pg, result):
                self._go_down(result)
                return

    async def _ping_one(self, pool: AsyncpgPool) -> None:
        conn = await pool.acquire(timeout=2 * self.config.connect_timeout)
        try:
            await conn.fetchval("SELECT 1", timeout=self.config.connect_timeout)
        except Exception as exc:
            log.info("pool %r: idle connection failed its health check: %r", self.name, exc)
            discard(conn)
        finally:
            await pool.release(conn)

    async def check(self, timeout: float) -> PoolCheck:
        """``SELECT 1`` through the normal path, within ``timeout`` seconds."""
        if self.state != "up":
            try:
                self.refuse()
            except (PoolUnavailable, PoolClosed) as exc:
                return PoolCheck(self.name, False, str(exc))

        async def select_one() -> None:
            conn = await self.acquire()
            error: BaseException | None = None
            try:
                await conn.fetchval("SELECT 1")
            except BaseException as exc:
                error = exc
                raise
            finally:
                await self.release(conn, error)

        try:
            await asyncio.wait_for(select_one(), timeout)
        except TIMEOUTS:
            return PoolCheck(self.name, False, f"pool {self.name!r}: no answer within {timeout} s")
        except Exception as exc:
            return PoolCheck(self.name, False, scrub(str(exc), self._secrets) or repr(exc))
        return PoolCheck(self.name, True, None)

    # -------------------------------------------------------------------- observing

    def stats(self) -> PoolStats:
        sem = self.semaphore.stats()
        pool = self.pool
        alive = pool is not None and self.state not in ("closed", "new")
        refused_all = self.state == "down" and self._full
        return PoolStats(
            name=self.name,
            state=self.state,
            min_size=self.config.min_size,
            max_size=self.config.max_size,
            size=pool.get_size() if alive and pool is not None else 0,
            idle=pool.get_idle_size() if alive and pool is not None else 0,
            in_use=sem.in_use,
            waiting=sem.waiting,
            high_water=sem.high_water,
            acquired=self.acquired,
            waited=self._waited,
            wait_seconds_total=self._wait_total,
            wait_seconds_max=self._wait_max,
            timed_out=sem.timed_out,
            cancelled=sem.cancelled,
            overloaded=self._overloaded,
            unavailable=self._unavailable,
            connections_lost=self._lost,
            outages=self._outages,
            last_error=self.last_error,
            reconnects=self._reconnects,
            wait=sem.wait,
            capacity=0 if refused_all else sem.limit,
            capacity_limited=refused_all or self._grower is not None,
            capacity_refusals=self._capacity_refusals,
        )
