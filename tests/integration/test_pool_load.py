"""PoolManager under load against a real PostgreSQL: the bound holds, nothing leaks.

The server's own ``pg_stat_activity`` is the witness: it counts the sessions the pool
really opened, whatever the pool believes.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import asyncpg  # type: ignore[import-untyped]
import pytest
from postgres import PostgresServer, run, sessions, settle

import admission as adm


def test_500_concurrent_operations_through_20_connections(pg: PostgresServer) -> None:
    app = "adm-test-500"
    max_size = 20

    async def scenario() -> None:
        monitor = await asyncpg.connect(pg.dsn())
        config = adm.PoolConfig(
            pg.app_dsn(), min_size=2, max_size=max_size, max_waiters=1000, application_name=app
        )
        pools = adm.PoolManager({"rag": config})
        seen: list[int] = []
        done = asyncio.Event()

        async def sample() -> None:
            while not done.is_set():
                seen.append(await sessions(monitor, app))
                await asyncio.sleep(0.002)

        async def operation(i: int) -> None:
            async with pools.transaction("rag") as conn:
                await conn.execute("INSERT INTO ops_500 (id) VALUES ($1)", i)
                # Holds the connection a little so that all 500 really compete for 20.
                await conn.execute("SELECT pg_sleep(0.01)")

        try:
            async with pools:
                async with pools.connection("rag") as conn:
                    # No unique constraint: a duplicate must be visible, not refused.
                    await conn.execute("CREATE TABLE ops_500 (id int NOT NULL)")
                sampler = asyncio.create_task(sample())
                await asyncio.gather(*(operation(i) for i in range(500)))
                done.set()
                await sampler
                stats = pools.stats("rag")
            rows = await monitor.fetch("SELECT id, count(*) AS n FROM ops_500 GROUP BY id")
            after_close = await settle(monitor, app, 0)
        finally:
            await monitor.close()

        assert seen, "pg_stat_activity was never sampled"
        assert max(seen) <= max_size, f"the server saw {max(seen)} sessions from the pool"
        assert max(seen) >= 1
        assert {r["id"]: r["n"] for r in rows} == dict.fromkeys(range(500), 1)
        # All 500 started at once: 20 got a connection, 480 queued (FIFO) for one.
        assert stats.high_water == max_size
        assert stats.acquired == 501  # the CREATE TABLE and the 500 operations
        assert stats.waited >= 500 - max_size
        assert stats.wait_seconds_max > 0
        assert stats.size <= max_size
        assert (stats.in_use, stats.waiting, stats.timed_out, stats.overloaded) == (0, 0, 0, 0)
        assert after_close == 0, "sessions left open after the manager closed"

    run(scenario())


def test_10000_failing_and_cancelled_operations_leak_nothing(pg: PostgresServer) -> None:
    """Exceptions, cancellations and broken connections inside blocks, at concurrency 50."""
    app = "adm-test-churn"
    max_size = 10
    total = 10_000
    concurrency = 50

    async def scenario() -> None:
        monitor = await asyncpg.connect(pg.dsn())
        config = adm.PoolConfig(
            pg.app_dsn(), min_size=2, max_size=max_size, max_waiters=1000, application_name=app
        )
        pools = adm.PoolManager({"churn": config})
        outcomes: Counter[str] = Counter()

        async def operation(i: int) -> None:
            kind = i % 100
            if kind < 40:  # plain success
                async with pools.connection("churn") as conn:
                    assert await conn.fetchval("SELECT $1::int", i) == i
                outcomes["ok"] += 1
            elif kind < 60:  # the block raises: the connection goes back
                with pytest.raises(ValueError, match="boom"):
                    await raise_in_block()
                outcomes["raised"] += 1
            elif kind < 75:  # cancelled mid-query (or while queued)
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(sleep_in_block(), 0.002)
                outcomes["cancelled"] += 1
            elif kind < 76:  # the connection breaks (rare: reconnecting costs a login)
                with pytest.raises(adm.PoolConnectionLost):
                    async with pools.connection("churn") as conn:
                        await conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")
                outcomes["lost"] += 1
            elif kind < 88:  # a transaction that commits
                async with pools.transaction("churn") as conn:
                    await conn.execute("INSERT INTO churn (id) VALUES ($1)", i)
                outcomes["committed"] += 1
            else:  # a transaction whose block raises: rolled back
                with pytest.raises(RuntimeError, match="undo"):
                    await insert_then_raise(i)
                outcomes["rolled back"] += 1

        async def raise_in_block() -> None:
            async with pools.connection("churn") as conn:
                await conn.fetchval("SELECT 1")
                raise ValueError("boom")

        async def insert_then_raise(i: int) -> None:
            async with pools.transaction("churn") as conn:
                await conn.execute("INSERT INTO churn (id) VALUES ($1)", i)
                raise RuntimeError("undo")

        async def sleep_in_block() -> None:
            async with pools.connection("churn") as conn:
                await conn.execute("SELECT pg_sleep(5)")

        async def worker(start: int) -> None:
            for i in range(start, total, concurrency):
                await operation(i)

        try:
            async with pools:
                async with pools.connection("churn") as conn:
                    await conn.execute("CREATE TABLE churn (id int NOT NULL)")
                await asyncio.gather(*(worker(w) for w in range(concurrency)))
                stats = pools.stats("churn")
                # Every connection the pool holds is a live session, and no other exists.
                on_server = await settle(monitor, app, stats.size)
                in_table = {r["id"] for r in await monitor.fetch("SELECT id FROM churn")}
                # The pool still works normally afterwards.
                async with pools.transaction("churn") as conn:
                    assert await conn.fetchval("SELECT count(*) FROM churn") == len(in_table)
            after_close = await settle(monitor, app, 0)
        finally:
            await monitor.close()

        assert sum(outcomes.values()) == total
        assert outcomes["lost"] == total // 100
        committed = {i for i in range(total) if 76 <= i % 100 < 88}
        assert in_table == committed  # commits all there, rollbacks all gone
        assert 0 <= stats.size <= max_size
        assert stats.in_use == 0
        assert stats.waiting == 0
        assert stats.high_water <= max_size
        assert stats.connections_lost == outcomes["lost"]
        assert on_server == stats.size, "server sessions differ from the pool's connections"
        assert after_close == 0

    run(scenario(), timeout=90)
