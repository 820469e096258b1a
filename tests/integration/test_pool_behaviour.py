"""PoolManager's contract against a real PostgreSQL, one behaviour per test.

Wrong password, bounded and timed waiting, FIFO, graceful close with its deadline, health
checks and readiness, secrets kept out of logs, the SSL choice logged once.
"""

from __future__ import annotations

import asyncio
import logging
import traceback

import asyncpg  # type: ignore[import-untyped]
import pytest
from postgres import APP_PASSWORD, PostgresServer, run, settle, wait_until

import admission as adm


def manager(pg: PostgresServer, **kwargs: object) -> adm.PoolManager:
    return adm.PoolManager({"db": adm.PoolConfig(pg.app_dsn(), **kwargs)})  # type: ignore[arg-type]


def test_wrong_password_is_a_clear_error_without_the_password(
    pg: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "not-the-" + APP_PASSWORD
    pools = adm.PoolManager({"db": adm.PoolConfig(pg.app_dsn(password=wrong))})
    caplog.set_level(logging.DEBUG)
    with pytest.raises(adm.PoolConnectError) as info:
        run(pools.open())
    message = str(info.value)
    assert "password authentication failed" in message
    assert "pool 'db'" in message
    assert "check the configuration" in message
    everything = "".join(traceback.format_exception(info.value)) + caplog.text + repr(pools)
    for form in (wrong, APP_PASSWORD, "s3cr"):
        assert form not in everything
    assert isinstance(info.value.__cause__, asyncpg.InvalidPasswordError)
    assert pools.stats("db").state == "closed"


def test_password_given_separately_and_the_ssl_choice_logged_once(
    pg: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    dsn = pg.app_dsn().replace(pg.app_dsn().split("@")[0].split("//")[1] + "@", "app@")
    pools = adm.PoolManager({"db": adm.PoolConfig(dsn, password=APP_PASSWORD)})

    async def scenario() -> None:
        async with pools:
            for _ in range(50):
                async with pools.connection("db") as conn:
                    await conn.fetchval("SELECT 1")

    run(scenario())
    choices = [r.getMessage() for r in caplog.records if "ssl=" in r.getMessage()]
    assert choices == [f"pool 'db' ({dsn}): ssl=disable (auto: loopback host)"]
    assert "s3cr" not in caplog.text


def test_beyond_max_waiters_fails_fast(pg: PostgresServer) -> None:
    async def scenario() -> None:
        async with manager(pg, max_size=2, max_waiters=3) as pools:
            release = asyncio.Event()

            async def hold() -> None:
                async with pools.connection("db"):
                    await release.wait()

            holders = [asyncio.create_task(hold()) for _ in range(2 + 3)]  # 2 hold, 3 queue
            await wait_until(lambda: pools.stats("db").waiting == 3, "3 queued")
            with pytest.raises(adm.PoolOverloaded, match=r"max_waiters=3") as info:
                async with pools.connection("db"):
                    pytest.fail("admitted beyond max_waiters")
            assert info.value.pool == "db"
            release.set()
            await asyncio.gather(*holders)
            stats = pools.stats("db")
            assert (stats.overloaded, stats.acquired, stats.waited) == (1, 5, 3)

    run(scenario())


def test_acquire_timeout(pg: PostgresServer) -> None:
    async def scenario() -> None:
        async with manager(pg, max_size=1, acquire_timeout=0.05) as pools:
            async with pools.connection("db"):
                with pytest.raises(adm.PoolTimeout, match="no connection became free") as info:
                    async with pools.connection("db"):
                        pytest.fail("a second connection from a pool of one")
                assert isinstance(info.value, TimeoutError)
            assert pools.stats("db").timed_out == 1
            async with pools.connection("db") as conn:  # the permit was not lost
                assert await conn.fetchval("SELECT 1") == 1

    run(scenario())


def test_many_waiters_time_out_and_later_ones_still_get_served(pg: PostgresServer) -> None:
    """One timer serves all the waiters of a pool: each still times out on its own."""

    async def scenario() -> None:
        async with manager(pg, max_size=1, acquire_timeout=0.05) as pools:

            async def use() -> int:
                async with pools.connection("db") as conn:
                    value: int = await conn.fetchval("SELECT 7")
                    return value

            async with pools.connection("db"):
                first = [asyncio.create_task(use()) for _ in range(5)]
                await asyncio.sleep(0.01)
                later = [asyncio.create_task(use()) for _ in range(5)]
                results = await asyncio.gather(*first, *later, return_exceptions=True)
            assert all(isinstance(r, adm.PoolTimeout) for r in results), results
            # The last of five queues for four round trips: may be past 50 ms on a loaded host.
            pools.reconfigure({"db": adm.PoolConfig(pg.app_dsn(), max_size=1, acquire_timeout=30)})
            assert await asyncio.gather(*(use() for _ in range(5))) == [7] * 5
            stats = pools.stats("db")
            assert (stats.timed_out, stats.in_use, stats.waiting) == (10, 0, 0)
            assert stats.waited == 4  # the last five queued behind each other

    run(scenario())


def test_waiting_is_fifo_and_cancelled_waiters_leave_no_trace(pg: PostgresServer) -> None:
    async def scenario() -> None:
        async with manager(pg, max_size=1) as pools:
            order: list[int] = []

            async def use(i: int) -> None:
                async with pools.connection("db"):
                    order.append(i)

            async with pools.connection("db"):
                tasks = [asyncio.create_task(use(i)) for i in range(10)]
                await wait_until(lambda: pools.stats("db").waiting == 10, "10 queued")
                for i in (3, 7):
                    tasks[i].cancel()
                await asyncio.sleep(0)
            results = await asyncio.gather(*tasks, return_exceptions=True)
            assert [i for i, r in enumerate(results) if isinstance(r, asyncio.CancelledError)] == [
                3,
                7,
            ]
            assert order == [0, 1, 2, 4, 5, 6, 8, 9]
            stats = pools.stats("db")
            assert (stats.cancelled, stats.in_use, stats.waiting) == (2, 0, 0)

    run(scenario())


def test_graceful_close_waits_for_work_in_flight_and_refuses_new(pg: PostgresServer) -> None:
    async def scenario() -> None:
        pools = manager(pg, max_size=2, close_timeout=30.0)
        await pools.open()
        async with pools.connection("db") as conn:
            await conn.execute("CREATE TABLE closing (id int)")
        entered: list[int] = []

        async def in_flight() -> None:
            async with pools.transaction("db") as conn:
                entered.append(1)
                await conn.execute("SELECT pg_sleep(0.2)")
                await conn.execute("INSERT INTO closing VALUES (1)")

        async def queued() -> None:
            async with pools.connection("db"):
                pytest.fail("admitted while closing")

        work = [asyncio.create_task(in_flight()) for _ in range(2)]
        await wait_until(lambda: len(entered) == 2, "both blocks running")
        waiter = asyncio.create_task(queued())
        await wait_until(lambda: pools.stats("db").waiting == 1, "1 queued")
        closing = asyncio.create_task(pools.close())
        await wait_until(lambda: pools.stats("db").state == "closing", "closing")
        with pytest.raises(adm.PoolClosed, match="closing"):
            async with pools.connection("db"):
                pytest.fail("admitted while closing")
        with pytest.raises(adm.PoolClosed, match="closed while waiting"):
            await waiter
        await asyncio.gather(*work)  # the work in flight finished normally
        await closing
        assert pools.stats("db").state == "closed"
        with pytest.raises(adm.PoolClosed):
            async with pools.connection("db"):
                pytest.fail("admitted after close")
        check = await asyncpg.connect(pg.dsn())
        try:
            assert await check.fetchval("SELECT count(*) FROM closing") == 2
        finally:
            await check.close()

    run(scenario())


def test_close_terminates_what_outlives_the_deadline(pg: PostgresServer) -> None:
    app = "adm-test-deadline"

    async def scenario() -> None:
        pools = manager(pg, max_size=2, close_timeout=0.2, application_name=app)
        await pools.open()
        started = asyncio.Event()

        async def stuck() -> None:
            async with pools.connection("db") as conn:
                started.set()
                await conn.execute("SELECT pg_sleep(60)")

        task = asyncio.create_task(stuck())
        await started.wait()
        await pools.close()  # returns at the deadline, not after 60 s
        with pytest.raises(adm.PoolClosed, match="terminated by close"):
            await task
        monitor = await asyncpg.connect(pg.dsn())
        try:
            assert await settle(monitor, app, 0) == 0
        finally:
            await monitor.close()

    run(scenario(), timeout=30)


def test_using_the_manager_before_open(pg: PostgresServer) -> None:
    async def scenario() -> None:
        pools = manager(pg)
        with pytest.raises(adm.PoolClosed, match="not open yet"):
            async with pools.connection("db"):
                pytest.fail("admitted before open")

    run(scenario())


def test_health_checks_ping_idle_connections_and_check_reports_ready(pg: PostgresServer) -> None:
    app = "adm-test-health"

    async def scenario() -> None:
        monitor = await asyncpg.connect(pg.dsn())
        try:
            async with manager(
                pg, min_size=3, max_size=3, health_check_interval=0.05, application_name=app
            ) as pools:
                ready = await pools.check()
                assert ready
                assert ready.pools["db"] == adm.pools.PoolCheck("db", True, None)

                async def all_pinged() -> bool:
                    queries = await monitor.fetch(
                        "SELECT query FROM pg_stat_activity WHERE application_name = $1", app
                    )
                    return len(queries) == 3 and all(r["query"] == "SELECT 1" for r in queries)

                # Kill one idle connection behind the pool's back: it is replaced.
                await monitor.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = $1 LIMIT 1",
                    app,
                )
                await wait_until(all_pinged, "health checks on every idle connection")
                async with pools.connection("db") as conn:
                    assert await conn.fetchval("SELECT 2") == 2
                assert pools.stats("db").connections_lost == 0
        finally:
            await monitor.close()

    run(scenario(), timeout=30)
