"""`admission.stores._connections.Connections`: the network stores' own connections, with
fake connections (what it does with them is all there is to see): the limit, the queue of
callers waiting for one, broken and stale connections replaced, closing."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from admission.stores._connections import Connections


class Fake:
    ids = itertools.count(1)

    def __init__(self) -> None:
        self.id = next(self.ids)
        self.alive = True
        self.closed_by: str | None = None


def make(limit: int) -> tuple[Connections[Fake], list[Fake]]:
    made: list[Fake] = []

    async def connect() -> Fake:
        await asyncio.sleep(0)
        conn = Fake()
        made.append(conn)
        return conn

    def discard(conn: Fake) -> None:
        conn.closed_by = "discard"

    return Connections(connect, discard, lambda c: c.alive, limit), made


def test_callers_beyond_the_limit_wait_for_a_connection_given_back_in_order() -> None:
    async def main() -> None:
        conns, made = make(2)
        a, b = await conns.take(), await conns.take()
        waiting = [asyncio.ensure_future(conns.take()) for _ in range(2)]
        await asyncio.sleep(0)
        assert not any(w.done() for w in waiting)
        conns.give(a, True)
        assert await waiting[0] is a  # handed over, first come first served
        conns.give(b, True)
        assert await waiting[1] is b
        assert len(made) == 2
        assert conns.open == 2

    asyncio.run(main())


def test_a_broken_connection_is_closed_and_its_place_goes_to_a_waiter() -> None:
    async def main() -> None:
        conns, _ = make(1)
        a = await conns.take()
        waiter = asyncio.ensure_future(conns.take())
        await asyncio.sleep(0)
        conns.give(a, False)
        b = await waiter
        assert a.closed_by == "discard"
        assert b is not a
        assert conns.open == 1

    asyncio.run(main())


def test_a_stale_idle_connection_is_replaced_and_a_failed_call_frees_its_place() -> None:
    async def main() -> None:
        conns, _ = make(1)
        a = await conns.take()
        conns.give(a, True)
        a.alive = False  # the server closed it while idle
        b = await conns.take()
        assert b is not a
        assert a.closed_by == "discard"
        assert conns.open == 1

        async def fails(conn: Fake) -> None:
            raise OSError("broken pipe")

        conns.give(b, True)
        with pytest.raises(OSError, match="broken pipe"):
            await conns.call(fails, ValueError)
        assert b.closed_by == "discard"  # not in step: closed
        assert conns.open == 0

        async def refused(conn: Fake) -> None:
            raise ValueError("the server refused the command")

        with pytest.raises(ValueError, match="refused"):
            await conns.call(refused, ValueError)
        assert conns.open == 1  # in step: kept
        assert len(conns.idle) == 1

    asyncio.run(main())


def test_a_cancelled_waiter_leaves_the_queue_and_closing_fails_the_next_takes() -> None:
    async def main() -> None:
        conns, _ = make(1)
        a = await conns.take()
        waiter = asyncio.ensure_future(conns.take())
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        conns.give(a, True)
        assert conns.idle == [a]  # not handed to the cancelled one
        closed: list[Fake] = []

        async def close(conn: Fake) -> None:
            closed.append(conn)

        await conns.aclose(close)
        assert closed == [a]
        assert conns.open == 0
        with pytest.raises(ConnectionError, match="closed"):
            await conns.take()

    asyncio.run(main())


def test_a_connection_given_back_after_closing_is_discarded() -> None:
    async def main() -> None:
        conns, _ = make(2)
        a = await conns.take()

        async def close(conn: Fake) -> None:
            pass

        await conns.aclose(close)
        conns.give(a, True)
        assert a.closed_by == "discard"
        assert conns.open == 0

    asyncio.run(main())


def test_closing_cancelled_midway_discards_the_connections_it_had_not_closed() -> None:
    """Off the idle list when `aclose` began, they would stay open."""

    async def main() -> None:
        conns, _ = make(3)
        held = [await conns.take() for _ in range(3)]
        for conn in held:
            conns.give(conn, True)
        closed: list[Fake] = []
        first_closing = asyncio.Event()

        async def close(conn: Fake) -> None:
            first_closing.set()
            await asyncio.sleep(3600)  # a server that never answers the close
            closed.append(conn)

        closing = asyncio.ensure_future(conns.aclose(close))
        await first_closing.wait()
        closing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await closing
        assert closed == []
        assert sorted(c.id for c in held if c.closed_by == "discard") == sorted(c.id for c in held)
        assert conns.open == 0
        with pytest.raises(ConnectionError, match="closed"):
            await conns.take()

    asyncio.run(main())


def test_close_discards_the_idle_connections_at_once_and_the_others_as_given_back() -> None:
    async def main() -> None:
        conns, _ = make(2)
        idle, busy = await conns.take(), await conns.take()
        conns.give(idle, True)
        conns.close()
        assert idle.closed_by == "discard"
        assert busy.closed_by is None
        conns.give(busy, True)
        assert busy.closed_by == "discard"
        assert conns.open == 0
        assert conns.closed

    asyncio.run(main())


def test_a_connection_whose_caller_gave_up_opening_it_serves_the_next_caller() -> None:
    """Opening a connection takes longer than the caller waits (its timeout): it goes on,
    and the connection serves the next caller, rather than every caller cutting its own
    short (a server slower to connect to than the timeout would never be reached)."""

    async def main() -> None:
        go = asyncio.Event()
        made: list[Fake] = []

        async def slow_connect() -> Fake:
            await go.wait()
            made.append(Fake())
            return made[-1]

        conns = Connections(slow_connect, lambda c: None, lambda c: c.alive, 1)
        first = asyncio.ensure_future(conns.take())
        await asyncio.sleep(0)
        first.cancel()  # gave up while the connection opens
        with pytest.raises(asyncio.CancelledError):
            await first
        go.set()
        for _ in range(5):
            await asyncio.sleep(0)
        assert conns.idle == made
        assert conns.open == 1
        assert await conns.take() is made[0]
        assert len(made) == 1

    asyncio.run(main())
