"""``admission_pool_*`` metrics of a PoolManager against a real PostgreSQL, scraped as
Prometheus text and parsed with prometheus_client's parser."""

from __future__ import annotations

import asyncio
import contextlib

import prometheus_client
import pytest
from postgres import APP_PASSWORD, PostgresServer, run, wait_until
from prometheus_client.parser import text_string_to_metric_families

import admission as adm

Scrape = dict[tuple[str, frozenset[tuple[str, str]]], float]


def exposition(registry: prometheus_client.CollectorRegistry) -> str:
    return prometheus_client.generate_latest(registry).decode()


def parse(text: str) -> Scrape:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


class PoolSeries:
    """One pool's samples in one scrape."""

    def __init__(self, registry: prometheus_client.CollectorRegistry, pool: str) -> None:
        self.text = exposition(registry)
        self.samples = parse(self.text)
        self.pool = pool

    def get(self, name: str, **labels: str) -> float | None:
        return self.samples.get((name, frozenset({"pool": self.pool, **labels}.items())))

    def __getitem__(self, name: str) -> float:
        value = self.get(name)
        assert value is not None, f"{name}{{pool={self.pool!r}}} is not exported"
        return value

    def outcome(self, outcome: str) -> float:
        value = self.get("admission_pool_acquisitions_total", outcome=outcome)
        assert value is not None
        return value

    def names(self) -> set[str]:
        return {name for name, labels in self.samples if ("pool", self.pool) in labels}


def test_gauges_counters_and_waits_of_a_pool_in_use(
    pg: PostgresServer, registry: prometheus_client.CollectorRegistry
) -> None:
    name = "metrics-use"
    config = adm.PoolConfig(
        pg.app_dsn(), min_size=2, max_size=3, acquire_timeout=0.3, max_waiters=1
    )
    pools = adm.PoolManager({name: config})

    async def scenario() -> None:
        assert PoolSeries(registry, name).names() == set()  # not open: not exported
        async with pools:
            s = PoolSeries(registry, name)
            assert (s["admission_pool_up"], s["admission_pool_min_size"]) == (1, 2)
            assert (s["admission_pool_max_size"], s["admission_pool_in_use"]) == (3, 0)
            assert s["admission_pool_size"] == s["admission_pool_idle"] >= 2
            assert s["admission_pool_waiting"] == 0
            assert s.outcome("acquired") == 0

            for _ in range(10):
                async with pools.connection(name) as conn:
                    assert await conn.fetchval("SELECT 1") == 1
                    assert PoolSeries(registry, name)["admission_pool_in_use"] == 1
            assert PoolSeries(registry, name).outcome("acquired") == 10

            # Hold every connection; one caller queues; the next is refused (max_waiters=1).
            release = asyncio.Event()
            held = 0

            async def hold() -> None:
                nonlocal held
                async with pools.connection(name):
                    held += 1
                    await release.wait()

            holders = [asyncio.create_task(hold()) for _ in range(3)]
            await wait_until(lambda: held == 3, "3 connections held")
            with pytest.raises(adm.PoolTimeout):  # queues 0.3 s, then gives up
                async with pools.connection(name):
                    pytest.fail("got a fourth connection")

            async def waiter() -> None:
                async with pools.connection(name) as conn:
                    await conn.fetchval("SELECT 1")

            queued = asyncio.create_task(waiter())
            await wait_until(lambda: pools.stats(name).waiting == 1, "one caller queued")
            with pytest.raises(adm.PoolOverloaded):
                async with pools.connection(name):
                    pytest.fail("got past max_waiters")
            s = PoolSeries(registry, name)
            assert (s["admission_pool_in_use"], s["admission_pool_waiting"]) == (3, 1)
            assert (s["admission_pool_size"], s["admission_pool_idle"]) == (3, 0)
            await asyncio.sleep(0.05)
            release.set()  # the queued caller gets a connection after waiting >= 50 ms
            await asyncio.gather(*holders, queued)

            # A caller cancelled while queued.
            release.clear()
            held = 0
            holders = [asyncio.create_task(hold()) for _ in range(3)]
            await wait_until(lambda: held == 3, "3 connections held again")
            cancelled = asyncio.create_task(waiter())
            await wait_until(lambda: pools.stats(name).waiting == 1, "one caller queued")
            cancelled.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await cancelled
            release.set()
            await asyncio.gather(*holders)

            s = PoolSeries(registry, name)
            stats = pools.stats(name)
            # 10 + 3 holders + the queued caller + 3 holders.
            assert s.outcome("acquired") == stats.acquired == 17
            assert s.outcome("timeout") == stats.timed_out == 1
            assert s.outcome("overloaded") == stats.overloaded == 1
            assert s.outcome("cancelled") == stats.cancelled == 1
            assert s.outcome("unavailable") == 0
            assert s["admission_pool_in_use"] == s["admission_pool_waiting"] == 0
            assert s["admission_pool_connections_lost_total"] == 0
            assert s["admission_pool_reconnects_total"] == 0
            # The histogram: every permit granted, one of them after >= 50 ms in the queue.
            count = s["admission_pool_acquire_wait_seconds_count"]
            assert count == stats.wait.count >= 17
            assert s["admission_pool_acquire_wait_seconds_sum"] >= 0.05
            under_50ms = s.get("admission_pool_acquire_wait_seconds_bucket", le="0.02")
            assert under_50ms is not None
            assert under_50ms <= count - 1
            assert s.get("admission_pool_acquire_wait_seconds_bucket", le="+Inf") == count
            # The pool's semaphore counts each request once, by its outcome: a caller that
            # queued is not also a refusal (the overloaded one never reached the queue).
            sem = pools._get(name).semaphore.stats()
            assert (sem.admitted, sem.timed_out, sem.cancelled) == (17, 1, 1)
            assert sem.rejected == 0
            # Labels are pool names: no DSN, host, user or password anywhere.
            for secret in (APP_PASSWORD, "s3cr", pg.app_dsn(), f"{pg.host}:{pg.port}"):
                assert secret not in s.text

        # Closed: its series are gone.
        assert PoolSeries(registry, name).names() == set()

    run(scenario())


def test_two_pools_and_the_prometheus_names(
    pg: PostgresServer, registry: prometheus_client.CollectorRegistry
) -> None:
    pools = adm.PoolManager(
        {
            "metrics-a": adm.PoolConfig(pg.app_dsn(), min_size=1, max_size=2),
            "metrics-b": adm.PoolConfig(pg.dsn(), min_size=0, max_size=5),
        }
    )

    async def scenario() -> None:
        async with pools, pools.connection("metrics-a"), pools.connection("metrics-b"):
            a, b = PoolSeries(registry, "metrics-a"), PoolSeries(registry, "metrics-b")
            assert (a["admission_pool_max_size"], b["admission_pool_max_size"]) == (2, 5)
            assert (a["admission_pool_in_use"], b["admission_pool_in_use"]) == (1, 1)
            assert a.names() == b.names()
            assert a.names() >= {
                "admission_pool_up",
                "admission_pool_size",
                "admission_pool_idle",
                "admission_pool_in_use",
                "admission_pool_waiting",
                "admission_pool_min_size",
                "admission_pool_max_size",
                "admission_pool_acquisitions_total",
                "admission_pool_connections_lost_total",
                "admission_pool_reconnects_total",
                "admission_pool_acquire_wait_seconds_bucket",
                "admission_pool_acquire_wait_seconds_count",
                "admission_pool_acquire_wait_seconds_sum",
            }
            # Never one series per connection: one in_use sample per pool.
            in_use = [k for k in a.samples if k[0] == "admission_pool_in_use"]
            assert len(in_use) == len({dict(labels)["pool"] for _, labels in in_use})
        assert PoolSeries(registry, "metrics-a").names() == set()
        assert not [f for f in adm.metrics.collect() if f.name.startswith("admission_pool_")]

    run(scenario())


def test_up_is_0_during_an_outage_and_the_reconnect_is_counted(
    registry: prometheus_client.CollectorRegistry,
) -> None:
    name = "metrics-outage"
    with PostgresServer() as server:  # its own server: this test stops it

        async def scenario() -> None:
            config = adm.PoolConfig(
                server.app_dsn(),
                min_size=1,
                max_size=2,
                reconnect_base=0.05,
                reconnect_cap=0.2,
            )
            async with adm.PoolManager({name: config}) as pools:
                async with pools.connection(name) as conn:
                    await conn.fetchval("SELECT 1")
                assert PoolSeries(registry, name)["admission_pool_up"] == 1

                await asyncio.to_thread(server.stop, "fast")
                # Callers find out: the idle connection is dead, new ones are refused.
                while pools.stats(name).state != "down":
                    with contextlib.suppress(adm.PoolUnavailable):  # ConnectionLost too
                        async with pools.connection(name) as conn:
                            await conn.fetchval("SELECT 1")
                    await asyncio.sleep(0.01)
                with pytest.raises(adm.PoolUnavailable):
                    async with pools.connection(name):
                        pytest.fail("a connection while the database is down")
                s = PoolSeries(registry, name)
                stats = pools.stats(name)
                assert s["admission_pool_up"] == 0
                assert s.outcome("unavailable") == stats.unavailable >= 1
                assert s["admission_pool_connections_lost_total"] == stats.connections_lost
                assert s["admission_pool_reconnects_total"] == 0

                await asyncio.to_thread(server.start)
                await wait_until(lambda: pools.stats(name).state == "up", "the pool back up")
                async with pools.connection(name) as conn:
                    assert await conn.fetchval("SELECT 1") == 1
                s = PoolSeries(registry, name)
                assert s["admission_pool_up"] == 1
                assert s["admission_pool_reconnects_total"] == 1

        run(scenario())
