"""PoolManager's life cycle against a real PostgreSQL (issue 12 case 5).

A manager is opened once and closed once: ``open()`` twice is one opening, ``close()``
twice is one closing (the second waits for the first), and a closed manager is never
reopened: ``open()``/``async with pools:`` again and ``connection()`` raise `PoolClosed`
saying to create a new manager, without opening a single connection.
"""

from __future__ import annotations

import asyncio

import asyncpg  # type: ignore[import-untyped]
import pytest
from postgres import APP_PASSWORD, PostgresServer, run, sessions, settle, wait_until

import admission as adm

REOPEN = "closed and cannot be reopened"
NEW_MANAGER = "create a new PoolManager"


def manager(pg: PostgresServer, app: str, **kwargs: object) -> adm.PoolManager:
    config = adm.PoolConfig(pg.app_dsn(), application_name=app, **kwargs)  # type: ignore[arg-type]
    return adm.PoolManager({"db": config})


def test_async_with_twice_raises_on_the_second_entry_and_opens_nothing(
    pg: PostgresServer,
) -> None:
    app = "adm-test-with-twice"

    async def scenario() -> None:
        monitor = await asyncpg.connect(pg.dsn())
        try:
            pools = manager(pg, app, min_size=2, max_size=2)
            async with pools:
                async with pools.connection("db") as conn:
                    assert await conn.fetchval("SELECT 1") == 1
                assert await settle(monitor, app, 2) == 2
            assert await settle(monitor, app, 0) == 0
            with pytest.raises(adm.PoolClosed, match=REOPEN) as raised:
                async with pools:
                    pytest.fail("a closed manager was entered again")
            assert NEW_MANAGER in str(raised.value)
            assert isinstance(raised.value, adm.Closed)
            assert raised.value.pool == "db"
            assert pools.stats("db").state == "closed"
            await asyncio.sleep(0.1)
            assert await sessions(monitor, app) == 0  # nothing was opened
            # The advice works: a new manager from the same configuration connects.
            again = adm.PoolManager({"db": pools._get("db").config})
            async with again, again.connection("db") as conn:
                assert await conn.fetchval("SELECT 2") == 2
        finally:
            await monitor.close()

    run(scenario())


def test_open_twice_is_one_opening(pg: PostgresServer) -> None:
    app = "adm-test-open-twice"

    async def scenario() -> None:
        monitor = await asyncpg.connect(pg.dsn())
        try:
            pools = manager(pg, app, min_size=2, max_size=3)
            await asyncio.gather(pools.open(), pools.open())  # concurrently
            await pools.open()  # and once more
            assert await settle(monitor, app, 2) == 2  # one pool's min_size, not three
            async with pools.connection("db") as conn:
                assert await conn.fetchval("SELECT 1") == 1
            stats = pools.stats("db")
            assert (stats.state, stats.size, stats.acquired) == ("up", 2, 1)
            await pools.close()
            assert await settle(monitor, app, 0) == 0
        finally:
            await monitor.close()

    run(scenario())


def test_close_twice_and_a_second_close_waits_for_the_first(pg: PostgresServer) -> None:
    app = "adm-test-close-twice"

    async def scenario() -> None:
        monitor = await asyncpg.connect(pg.dsn())
        try:
            pools = manager(pg, app, min_size=1, max_size=2, close_timeout=30.0)
            await pools.open()
            started = asyncio.Event()
            finished: list[str] = []

            async def in_flight() -> None:
                async with pools.connection("db") as conn:
                    started.set()
                    await conn.execute("SELECT pg_sleep(0.3)")
                finished.append("work")

            work = asyncio.create_task(in_flight())
            await started.wait()
            first = asyncio.create_task(pools.close())
            await wait_until(lambda: pools.stats("db").state == "closing", "closing")
            await pools.close()  # must not return while the first is still closing
            finished.append("second close")
            assert finished == ["work", "second close"]
            assert pools.stats("db").state == "closed"
            await first
            await work
            await pools.close()  # and after it: returns at once, no error
            assert pools.stats("db").state == "closed"
            assert await settle(monitor, app, 0) == 0
        finally:
            await monitor.close()

    run(scenario())


def test_open_after_close_raises_and_connects_nothing(pg: PostgresServer) -> None:
    app = "adm-test-open-after-close"

    async def scenario() -> None:
        monitor = await asyncpg.connect(pg.dsn())
        try:
            pools = manager(pg, app, min_size=1, max_size=2)
            await pools.open()
            async with pools.connection("db"):
                pass
            await pools.close()
            assert await settle(monitor, app, 0) == 0
            for _ in range(2):  # every time, not only the first
                with pytest.raises(adm.PoolClosed, match=REOPEN):
                    await pools.open()
            await asyncio.sleep(0.1)
            assert await sessions(monitor, app) == 0
            stats = pools.stats("db")
            assert (stats.state, stats.acquired) == ("closed", 1)  # counters kept
            # Closing before it was ever opened closes it for good as well.
            never = manager(pg, app)
            await never.close()
            with pytest.raises(adm.PoolClosed, match=REOPEN):
                await never.open()
        finally:
            await monitor.close()

    run(scenario())


def test_open_after_a_failed_open_raises_instead_of_doing_nothing(pg: PostgresServer) -> None:
    wrong = pg.app_dsn(password="not-the-" + APP_PASSWORD)

    async def scenario() -> None:
        pools = adm.PoolManager({"db": adm.PoolConfig(wrong)})
        with pytest.raises(adm.PoolConnectError):
            await pools.open()
        with pytest.raises(adm.PoolClosed, match=REOPEN):
            await pools.open()

    run(scenario())


def test_connection_after_close_raises_a_clear_error(pg: PostgresServer) -> None:
    app = "adm-test-connection-after-close"

    async def scenario() -> None:
        pools = manager(pg, app, min_size=1, max_size=2)
        async with pools:
            pass
        with pytest.raises(adm.PoolClosed, match="'db' is closed") as raised:
            async with pools.connection("db"):
                pytest.fail("admitted after close")
        assert NEW_MANAGER in str(raised.value)
        with pytest.raises(adm.PoolClosed, match=NEW_MANAGER):
            async with pools.transaction("db"):
                pytest.fail("admitted after close")
        ready = await pools.check()
        assert not ready.ok
        assert NEW_MANAGER in (ready.pools["db"].error or "")

    run(scenario())


def test_close_while_open_is_connecting_leaves_nothing_open(pg: PostgresServer) -> None:
    app = "adm-test-close-during-open"

    async def scenario() -> None:
        monitor = await asyncpg.connect(pg.dsn())
        try:
            pools = manager(pg, app, min_size=2, max_size=2)
            opening = asyncio.create_task(pools.open())
            await asyncio.sleep(0)  # open() is now connecting
            await pools.close()
            with pytest.raises(adm.PoolClosed):
                await opening
            assert pools.stats("db").state == "closed"
            assert await settle(monitor, app, 0) == 0
            with pytest.raises(adm.PoolClosed, match=NEW_MANAGER):
                async with pools.connection("db"):
                    pytest.fail("admitted after close")
        finally:
            await monitor.close()

    run(scenario())
