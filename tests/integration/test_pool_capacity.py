"""The server's connection limit below ``max_size``, against a real PostgreSQL (issue 12, case 4).

"Too many connections" (SQLSTATE 53300, a role's ``CONNECTION LIMIT`` or ``max_connections``)
is not an outage: while some connections are open the pool serves with them (callers wait
for one, bounded by ``acquire_timeout``), stops growing, says so once (one WARNING line, the
``admission_pool_capacity_limited`` gauge) and grows again when the server allows it. When the
server allows none at all, calls fail fast with `PoolServerFull`, not "unreachable".
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

import asyncpg  # type: ignore[import-untyped]
import pytest
from postgres import PostgresServer, run, wait_until

import admission as adm
from admission.metrics import Sample
from admission.pools._driver import at_capacity, fatal, transient

POOL = "db"


def limit_role(pg: PostgresServer, limit: int) -> None:
    """``ALTER ROLE app CONNECTION LIMIT`` (``-1``: no limit)."""
    pg.psql(f"ALTER ROLE app CONNECTION LIMIT {limit}")


def exported(metric: str) -> float:
    """The pool's sample of ``metric`` as the exporters read it now."""
    for family in adm.metrics.collect():
        if family.name == metric:
            for sample in family.samples:
                if isinstance(sample, Sample) and sample.labels == {"pool": POOL}:
                    return sample.value
    raise AssertionError(f"{metric}{{pool={POOL!r}}} is not exported")


def pool_log(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    """The pool's log lines (level, message), without the SSL choice logged at open."""
    return [
        (r.levelname, r.getMessage())
        for r in caplog.records
        if r.name == "admission.pools" and "ssl=" not in r.getMessage()
    ]


def test_a_connection_limit_below_max_size_is_served_not_an_outage(
    pg: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="admission.pools")
    limit_role(pg, 3)

    async def scenario() -> None:
        config = adm.PoolConfig(
            pg.app_dsn(),
            min_size=1,
            max_size=10,
            # Long: a caller waits for one of the open connections, it does not time out.
            acquire_timeout=30.0,
            reconnect_base=0.05,
            reconnect_cap=0.5,
            application_name="adm-test-capacity",
        )
        pools = adm.PoolManager({POOL: config})
        outcomes: Counter[str] = Counter()
        stop = False

        async def worker() -> None:
            while not stop:
                try:
                    async with pools.connection(POOL) as conn:
                        await conn.execute("SELECT pg_sleep(0.002)")
                except adm.PoolError as exc:
                    outcomes[type(exc).__name__] += 1
                    # A load generator backing off, not a retry loop: no jitter needed.
                    await asyncio.sleep(0.005)  # noqa: ADM401
                else:
                    outcomes["ok"] += 1

        async with pools:
            workers = [asyncio.create_task(worker()) for _ in range(50)]
            # The load (50 tasks; it ran 5 s and saw 81 outages and 14,324
            # PoolUnavailable against 228 successes): no caller may fail.
            await asyncio.sleep(2.0)
            assert set(outcomes) == {"ok"}, outcomes
            limited = pools.stats(POOL)
            assert (limited.state, limited.outages, limited.reconnects) == ("up", 0, 0)
            assert limited.unavailable == 0
            await wait_until(
                lambda: pools.stats(POOL).size == 3, "the 3 connections the role allows"
            )
            limited = pools.stats(POOL)
            assert limited.capacity_limited
            assert 3 <= limited.capacity < limited.max_size
            # Growth is retried with a backoff (about one refused attempt per reconnect_cap,
            # after the first burst), not by every caller.
            assert limited.capacity_refusals >= 1
            assert 5 * limited.capacity_refusals <= limited.acquired, limited
            assert exported("admission_pool_capacity_limited") == 1.0
            assert exported("admission_pool_up") == 1.0
            # Reported once, as what it is.
            ((level, message),) = pool_log(caplog)
            assert level == "WARNING"
            assert "too many connections" in message
            assert "unreachable" not in message

            # The server allows more again: the pool grows by itself, back to max_size.
            await asyncio.to_thread(limit_role, pg, -1)
            await wait_until(lambda: pools.stats(POOL).size > 3, "the pool to grow past 3")
            await wait_until(
                lambda: not pools.stats(POOL).capacity_limited, "the capacity limit to clear"
            )
            stop = True
            await asyncio.gather(*workers)
            grown = pools.stats(POOL)
            assert exported("admission_pool_capacity_limited") == 0.0

        assert set(outcomes) == {"ok"}, outcomes
        assert (grown.outages, grown.reconnects, grown.unavailable) == (0, 0, 0)
        assert grown.capacity == grown.max_size == 10
        assert [level for level, _ in pool_log(caplog)] == ["WARNING", "INFO"]

    try:
        run(scenario())
    finally:
        limit_role(pg, -1)


def test_a_refused_caller_waits_for_an_open_connection_within_its_timeout(
    pg: PostgresServer,
) -> None:
    limit_role(pg, 1)

    async def scenario() -> None:
        def config(acquire_timeout: float) -> adm.PoolConfig:
            return adm.PoolConfig(
                pg.app_dsn(), max_size=3, acquire_timeout=acquire_timeout, reconnect_base=0.05
            )

        pools = adm.PoolManager({POOL: config(acquire_timeout=30.0)})
        async with pools:
            holding = asyncio.Event()
            done = asyncio.Event()

            async def hold() -> None:
                async with pools.connection(POOL):
                    holding.set()
                    await done.wait()

            async def select_one() -> int:
                async with pools.connection(POOL) as conn:
                    value: int = await conn.fetchval("SELECT 1")
                    return value

            holder = asyncio.create_task(hold())
            await holding.wait()
            # The only connection the role allows is held: the next caller's connection is
            # refused, and it waits for the held one instead of failing.
            waiter = asyncio.create_task(select_one())
            await wait_until(lambda: pools.stats(POOL).capacity_refusals >= 1, "a refusal")
            await wait_until(lambda: pools.stats(POOL).waiting == 1, "the caller to wait")
            assert not waiter.done()
            done.set()
            await holder
            assert await waiter == 1

            # Its wait is bounded by acquire_timeout, which counts from its first queueing.
            holding.clear()
            done.clear()
            holder = asyncio.create_task(hold())
            await holding.wait()
            pools.reconfigure({POOL: config(acquire_timeout=0.3)})
            with pytest.raises(adm.PoolTimeout):
                await select_one()
            done.set()
            await holder
            stats = pools.stats(POOL)
            assert (stats.timed_out, stats.unavailable, stats.outages) == (1, 0, 0)
            assert stats.acquired == 3  # the holder twice, the waiter once
            assert stats.in_use == 0
            assert stats.capacity_limited

    try:
        run(scenario())
    finally:
        limit_role(pg, -1)


def test_a_server_that_allows_no_connection_is_full_not_unreachable(
    pg: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="admission.pools")
    limit_role(pg, 0)

    async def scenario() -> None:
        config = adm.PoolConfig(
            pg.app_dsn(),
            min_size=1,
            max_size=5,
            acquire_timeout=30.0,  # failing fast is not timing out
            reconnect_base=0.05,
            reconnect_cap=0.2,
        )
        pools = adm.PoolManager({POOL: config})
        async with pools:  # comes up, down: nothing can be opened
            for _ in range(200):
                with pytest.raises(adm.PoolServerFull) as info:
                    async with pools.connection(POOL):
                        pytest.fail("got a connection the server does not allow")
                assert isinstance(info.value, adm.PoolUnavailable)  # handlers of outages catch it
                assert "too many connections" in str(info.value)
                assert "unreachable" not in str(info.value)
                await asyncio.sleep(0.001)
            # The background retries are refused too, and nothing more is logged.
            await wait_until(
                lambda: pools.stats(POOL).capacity_refusals >= 5, "the retries to be refused"
            )
            full = pools.stats(POOL)
            assert (full.state, full.capacity_limited, full.capacity) == ("down", True, 0)
            ready = await pools.check()
            assert not ready.ok
            assert "too many connections" in (ready.pools[POOL].error or "")
            assert exported("admission_pool_capacity_limited") == 1.0
            assert exported("admission_pool_up") == 0.0
            ((level, message),) = pool_log(caplog)
            assert level == "WARNING"
            assert "too many connections" in message

            await asyncio.to_thread(limit_role, pg, -1)
            await wait_until(pools.check, "the pool to come up by itself")
            up = pools.stats(POOL)
            assert (up.state, up.capacity_limited, up.capacity) == ("up", False, 5)
            assert up.unavailable >= 200
        assert [level for level, _ in pool_log(caplog)] == ["WARNING", "INFO"]

    try:
        run(scenario())
    finally:
        limit_role(pg, -1)


@pytest.mark.parametrize(
    "exc",
    [
        asyncpg.TooManyConnectionsError('too many connections for role "app"'),
        asyncpg.TooManyConnectionsError('too many connections for database "rag"'),
        asyncpg.TooManyConnectionsError("sorry, too many clients already"),
        asyncpg.TooManyConnectionsError(
            "remaining connection slots are reserved for roles with the SUPERUSER attribute"
        ),
        asyncpg.ConfigurationLimitExceededError("configuration limit exceeded"),
    ],
    ids=["role", "database", "max_connections", "reserved", "53400"],
)
def test_refusals_for_capacity_are_told_apart(exc: Exception) -> None:
    assert at_capacity(asyncpg, exc)
    assert not transient(asyncpg, exc)
    assert not fatal(asyncpg, exc)


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionRefusedError(111, "Connection refused"),
        TimeoutError(),
        asyncpg.CannotConnectNowError("the database system is starting up"),
        asyncpg.InvalidPasswordError('password authentication failed for user "app"'),
        asyncpg.InvalidCatalogNameError('database "nope" does not exist'),
    ],
    ids=["refused", "timeout", "starting", "password", "database"],
)
def test_outages_and_bad_configuration_are_not_capacity(exc: Exception) -> None:
    assert not at_capacity(asyncpg, exc)
