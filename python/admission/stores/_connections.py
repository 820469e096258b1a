"""The connections a network store opens itself, used directly rather than through its
driver's pool (`admission.stores.redis`, `admission.stores.postgres`).

A driver's pool does, per call, what a store's one-command calls do not need: asyncpg's
release shields a task of its own (one more turn of the loop, about a third of a decision's
client CPU on loopback), redis-py's takes a lock and checks the connection's health with a
read. `Connections` is a list of idle connections, a count of the open ones and a queue of
callers waiting for one: taking an idle connection and giving it back cost a list's pop and
append when no one waits.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar, final

__all__ = ["CONNECT_WITHIN", "Connections"]

CONNECT_WITHIN = 10.0
"""Seconds a connection may take to open. It opens in a task of its own: a caller that
gives up (its timeout, a cancellation) leaves it opening for the next caller, so that a
server slower to connect to than the stores' timeout (TLS, far away) is still reached."""

C = TypeVar("C")
T = TypeVar("T")


@final
class Connections(Generic[C]):
    """Up to ``limit`` connections made by ``connect()``: `take` one (an idle one if there
    is one ``usable`` still, a new one while fewer than ``limit`` are open, else the first
    one given back), and `give` it back saying whether it is still in step with its server.

    A connection given back not healthy (a call that failed other than by the server's
    refusal of the command, or was cut short) is closed by ``discard`` (it must not block:
    it may run with no loop), and its place goes to the first caller waiting, which opens a
    new one. A connection opens in a task of its own, within `CONNECT_WITHIN`: a caller
    that gives up meanwhile leaves it to the next caller. ``usable`` is checked when an
    idle connection is taken: one that the server closed meanwhile (a restart, an idle
    timeout) is discarded and the next one tried, so a call is not failed by a connection
    that died while no one used it.
    """

    __slots__ = (
        "_closed",
        "_connect",
        "_discard",
        "_idle",
        "_limit",
        "_loop",
        "_open",
        "_usable",
        "_waiters",
    )

    def __init__(
        self,
        connect: Callable[[], Awaitable[C]],
        discard: Callable[[C], object],
        usable: Callable[[C], bool],
        limit: int,
    ) -> None:
        self._connect = connect
        self._discard = discard
        self._usable = usable
        self._limit = limit
        self._idle: list[C] = []
        self._open = 0
        self._waiters: collections.deque[asyncio.Future[C | None]] = collections.deque()
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        """The event loop the connections belong to (the first that took one)."""

    @property
    def open(self) -> int:
        """Connections open now (idle or in use)."""
        return self._open

    @property
    def closed(self) -> bool:
        """Whether `aclose` was called."""
        return self._closed

    @property
    def idle(self) -> list[C]:
        """The idle connections (a copy), for tests."""
        return list(self._idle)

    def _take_idle(self) -> C | None:
        """An idle connection still usable, or None (the stale ones met are discarded).
        `RuntimeError` on another event loop than the first one's: its connections (its
        streams, its futures) are that loop's, which may be closed (a second
        ``asyncio.run``, a test framework's loop per test)."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            if self._loop is not None:
                raise RuntimeError(
                    "this store's connections belong to the event loop it was first used "
                    "on, not this one: a store serves one event loop (make one per loop, "
                    "e.g. where the loop starts)"
                )
            self._loop = loop
        idle = self._idle
        while idle:
            conn = idle.pop()
            if self._usable(conn):
                return conn
            self._open -= 1
            self._discard(conn)
        return None

    async def take(self) -> C:
        """A connection for one call; give it back with `give` whatever happens."""
        conn = self._take_idle()
        if conn is not None:
            return conn
        if self._closed:
            raise ConnectionError("the store was closed (aclose)")
        if self._open >= self._limit:
            waiter: asyncio.Future[C | None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                handed = await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self.give(waiter.result(), True)  # handed over just as it was cancelled
                raise
            if handed is not None:
                return handed
            # Handed the place of a connection closed (already counted open by `give`).
            if self.closed:
                self._open -= 1
                raise ConnectionError("the store was closed (aclose)")
        else:
            self._open += 1
        opening = asyncio.ensure_future(asyncio.wait_for(self._connect(), CONNECT_WITHIN))
        try:
            return await asyncio.shield(opening)
        except asyncio.CancelledError:
            if opening.done():  # opened (or failed) as the caller gave up: not used by it
                self._opened(opening)
            else:
                opening.add_done_callback(self._opened)
            raise
        except BaseException:
            self.give(None, False)
            raise

    def _opened(self, opening: asyncio.Future[C]) -> None:
        """A connection opened for a caller that gave up meanwhile: for the next one."""
        if opening.cancelled() or opening.exception() is not None:
            self.give(None, False)
        else:
            self.give(opening.result(), True)

    async def call(
        self, use: Callable[[C], Awaitable[T]], in_step: type[BaseException] | tuple[Any, ...]
    ) -> T:
        """``await use(conn)`` on a connection taken for it, given back after: healthy if
        ``use`` returned or raised ``in_step`` (the server refused the command: the
        connection is as it was), closed otherwise (broken, or cut short mid-reply)."""
        conn = self._take_idle()  # without a coroutine of `take`'s, when one is idle
        if conn is None:
            conn = await self.take()
        healthy = False
        try:
            result = await use(conn)
            healthy = True
            return result
        except in_step:
            healthy = True
            raise
        finally:
            self.give(conn, healthy)

    def give(self, conn: C | None, healthy: bool) -> None:
        """Gives back ``conn`` (None: only its place, it failed to open) to the first caller
        waiting, or to the idle list; closes it unless ``healthy``."""
        if conn is not None and (not healthy or self._closed):
            self._discard(conn)
            conn = None
        if conn is None:
            self._open -= 1
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                if conn is None:
                    self._open += 1
                waiter.set_result(conn)
                return
        if conn is not None:
            self._idle.append(conn)

    async def aclose(self, close: Callable[[C], Awaitable[object]]) -> None:
        """Closes the idle connections with ``close`` (the others are discarded as they are
        given back) and makes `take` fail from now on; idempotent. Cancelled meanwhile, it
        discards those it had not closed yet: off the list, they would stay open."""
        idle = self._end()
        for done, conn in enumerate(idle):
            try:
                await close(conn)
            except Exception:
                pass  # a close that fails: the connection is gone all the same
            except BaseException:
                for left in idle[done:]:
                    self._discard(left)
                raise

    def close(self) -> None:
        """`aclose` at once: the idle connections closed by ``discard``."""
        for conn in self._end():
            self._discard(conn)

    def _end(self) -> list[C]:
        """Makes `take` fail from now on; the idle connections, taken off the list and the
        count of those open, for the caller to close."""
        self._closed = True
        idle, self._idle = self._idle, []
        self._open -= len(idle)
        return idle
