"""Outages against a real PostgreSQL: a restart under load, and a server down at start-up.

What must hold: calls during the outage fail at once with the pool's own clear errors
(never hang, never another error type), the pool comes back by itself, and the books
balance: committed + failed == attempted, no committed row missing, no row written twice.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter

import asyncpg  # type: ignore[import-untyped]
import pytest
from postgres import PostgresServer, run, settle, wait_until

import admission as adm


def test_restart_under_load(pg: PostgresServer) -> None:
    app = "adm-test-restart"
    max_size = 10

    async def scenario() -> None:
        config = adm.PoolConfig(
            pg.app_dsn(),
            min_size=5,
            max_size=max_size,
            # Long on purpose: a caller that waited instead of failing fast would hang the
            # test until its guard fires, which fails it.
            acquire_timeout=120.0,
            reconnect_base=0.05,
            reconnect_cap=0.5,
            application_name=app,
        )
        pools = adm.PoolManager({"db": config})
        ids = itertools.count()
        attempted: set[int] = set()
        committed: set[int] = set()
        failed: dict[int, adm.PoolError] = {}
        after_restart = 0
        restarted = False
        stop = False

        async def worker() -> None:
            nonlocal after_restart
            while not stop:
                i = next(ids)
                attempted.add(i)
                try:
                    async with pools.transaction("db") as conn:
                        await conn.execute("INSERT INTO restart_ops (id) VALUES ($1)", i)
                        await conn.execute("SELECT pg_sleep(0.001)")
                except adm.PoolUnavailable as exc:  # PoolConnectionLost included
                    failed[i] = exc
                    # one test client backing off (not spinning): no herd for jitter to spread
                    await asyncio.sleep(0.005)  # noqa: ADM401
                    continue
                # Anything else propagates and fails the test: only clear errors allowed.
                committed.add(i)
                if restarted:
                    after_restart += 1

        async with pools:
            async with pools.connection("db") as conn:
                await conn.execute("CREATE TABLE restart_ops (id int NOT NULL)")
            workers = [asyncio.create_task(worker()) for _ in range(20)]
            await wait_until(lambda: len(committed) >= 300, "commits before the restart")
            await asyncio.to_thread(pg.stop, "fast")
            # While the server is down: calls fail fast, the pool says it is down.
            await wait_until(lambda: pools.stats("db").state == "down", "the pool to go down")
            failures_at_stop = len(failed)
            await wait_until(lambda: len(failed) >= failures_at_stop + 50, "fast failures")
            assert not (await pools.check()).ok
            await asyncio.to_thread(pg.start)
            restarted = True
            await wait_until(lambda: after_restart >= 300, "commits after the restart")
            stop = True
            await asyncio.gather(*workers)
            stats = pools.stats("db")
            ready = await pools.check()

        monitor = await asyncpg.connect(pg.dsn())
        try:
            rows = [r["id"] for r in await monitor.fetch("SELECT id FROM restart_ops")]
            left_open = await settle(monitor, app, 0)
        finally:
            await monitor.close()

        # The books balance.
        assert committed | set(failed) == attempted
        assert not committed & set(failed)
        in_table = Counter(rows)
        assert max(in_table.values()) == 1, "an operation was written twice"
        missing = committed - set(in_table)
        assert not missing, f"committed rows missing after the restart: {sorted(missing)[:10]}"
        # A failed operation may still have committed (the COMMIT's reply lost with the
        # connection), but nothing exists that was never attempted.
        assert set(in_table) <= attempted
        # The errors were the clear ones, and both kinds were seen.
        kinds = Counter(type(e).__name__ for e in failed.values())
        assert set(kinds) <= {"PoolUnavailable", "PoolConnectionLost"}, kinds
        assert kinds["PoolUnavailable"] > 0
        for exc in failed.values():
            assert "s3cr" not in str(exc)
        # It healed by itself and is healthy.
        assert stats.outages >= 1
        assert stats.state == "up"
        assert ready.ok
        assert stats.in_use == 0
        assert stats.unavailable >= kinds["PoolUnavailable"]
        assert left_open == 0

    run(scenario(), timeout=90)


def test_database_down_at_start_up() -> None:
    server = PostgresServer()
    try:
        server.init()  # not started yet

        async def scenario() -> None:
            config = adm.PoolConfig(
                server.dsn("postgres"),
                min_size=2,
                max_size=5,
                acquire_timeout=120.0,  # failing fast is not timing out
                reconnect_base=0.05,
                reconnect_cap=0.5,
            )
            pools = adm.PoolManager({"db": config})
            async with pools:  # comes up even though the database is down
                assert pools.stats("db").state == "down"
                for _ in range(20):
                    with pytest.raises(adm.PoolUnavailable, match="unreachable") as info:
                        async with pools.connection("db"):
                            pytest.fail("got a connection with the database down")
                    assert info.value.pool == "db"
                ready = await pools.check()
                assert not ready.ok
                assert ready.pools["db"].error is not None
                assert "unreachable" in ready.pools["db"].error

                await asyncio.to_thread(server.start)
                await wait_until(pools.check, "the pool to come up by itself")
                async with pools.transaction("db") as conn:
                    assert await conn.fetchval("SELECT 1") == 1
                stats = pools.stats("db")
                assert stats.state == "up"
                assert stats.unavailable >= 20
                assert stats.outages == 1
                assert stats.size <= 5

        run(scenario())
    finally:
        server.cleanup()
