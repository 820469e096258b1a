"""`admission.stores.Postgres` behind PgBouncer in transaction mode (issue 17: "PgBouncer
safety"): the README's route (a pool given with ``statement_cache_size=0``) decides exactly,
with more client connections than server sessions, so consecutive statements of one client
run on different server sessions and any session state the store relied on would be lost.

A real PgBouncer (`pgbouncer.py`) in front of a real PostgreSQL (`postgres.py`), both started
here. Rates and leases are far longer than the test, so every count is exact.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import asyncpg
import pytest
from pgbouncer import PgBouncer
from postgres import PostgresServer, run

import admission as adm
from admission.stores.postgres import Postgres

CLIENTS = 8  # connections of the pool given to the store
SESSIONS = 2  # PgBouncer's connections to the server
WAIT = 30.0  # the store's timeout: statements queue in PgBouncer behind SESSIONS


@pytest.fixture(scope="module")
def bouncer(pg: PostgresServer) -> Iterator[PgBouncer]:
    with PgBouncer(pg, server_connections=SESSIONS) as bouncer:
        yield bouncer


async def _pool(bouncer: PgBouncer) -> asyncpg.Pool:
    # Named prepared statements do not survive transaction pooling before PgBouncer 1.21:
    # the README's advice for such a PgBouncer.
    return await asyncpg.create_pool(
        bouncer.dsn(), min_size=CLIENTS, max_size=CLIENTS, statement_cache_size=0
    )


def test_rate_limits_are_exact_through_transaction_pooling(
    pg: PostgresServer, bouncer: PgBouncer
) -> None:
    async def main() -> None:
        pool = await _pool(bouncer)
        store = Postgres(pool=pool, schema="bounced_rate", timeout=WAIT)
        bucket = adm.TokenBucket(rate=1, per=3600, burst=20, name="api", store=store)
        per_user = adm.KeyedTokenBucket(rate=1, per=3600, burst=3, name="users", store=store)
        try:
            await store.migrate()

            async def attempt() -> bool:
                try:
                    await bucket.acquire(timeout=0)
                except adm.AcquireTimeout:
                    return False
                return True

            async def attempt_key(key: str) -> bool:
                try:
                    await per_user.acquire(key, timeout=0)
                except adm.AcquireTimeout:
                    return False
                return True

            # 60 callers at once over 8 client connections and 2 server sessions.
            outcomes = await asyncio.gather(*(attempt() for _ in range(60)))
            assert sum(outcomes) == 20
            keyed = await asyncio.gather(*(attempt_key(f"user:{i % 5}") for i in range(50)))
            for user in range(5):
                assert sum(keyed[i] for i in range(user, 50, 5)) == 3
            stats = bucket.stats()
            assert (stats.admitted, stats.timed_out) == (20, 40)
            # Every statement went through PgBouncer's sessions: at most SESSIONS of them.
            sessions = await pg_sessions(pg)
            assert 1 <= sessions <= SESSIONS, sessions
        finally:
            await store.aclose()
            await pool.close()

    run(main(), timeout=120)


def test_a_semaphore_holds_its_limit_through_transaction_pooling(
    pg: PostgresServer, bouncer: PgBouncer
) -> None:
    limit = 3

    async def main() -> None:
        pool = await _pool(bouncer)
        store = Postgres(pool=pool, schema="bounced_sem", timeout=WAIT)
        sem = adm.Semaphore(limit, name="db", store=store, lease="180s")  # >= 6 timeouts
        held = 0
        most = 0
        fences: list[int] = []
        try:
            await store.migrate()

            async def worker() -> None:
                nonlocal held, most
                for _ in range(4):
                    async with sem as lease:
                        held += 1
                        most = max(most, held)
                        fences.append(lease.fence)
                        await asyncio.sleep(0.01)
                        held -= 1

            await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(8))), 90)
            assert most == limit  # reached, never passed
            assert len(fences) == 32
            assert len(set(fences)) == 32  # each grant its own fencing token
            assert await sem.state() == (0, 0)
        finally:
            await store.aclose()
            await pool.close()

    run(main(), timeout=120)


async def pg_sessions(pg: PostgresServer) -> int:
    """Server sessions PgBouncer holds (its connections as the superuser, not ours)."""
    conn = await asyncpg.connect(pg.dsn())
    try:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE usename = 'postgres' AND pid <> pg_backend_pid() "
            "AND backend_type = 'client backend'"
        )
        return count
    finally:
        await conn.close()
