"""PostgreSQL ``select 1`` at concurrency 50: a connection per operation, a raw asyncpg pool,
and admission's PoolManager over the same pool.

- ``asyncpg.connect`` per operation: the anti-pattern the PoolManager exists to replace
  (connect, query, close: a server process forked per operation). The server trusts the
  connection (no password), so this is its cheapest possible form.
- ``asyncpg.create_pool``: ``async with pool.acquire() as conn`` - the floor for pooling.
- ``admission.PoolManager``: ``async with pools.connection("bench") as conn`` over an
  identical pool (fair FIFO queue, timeouts, bounded waiters, outage handling, counters).

Both pools hold ``MAX_SIZE`` = 20 connections, opened before timing (``min_size`` =
``max_size``), so 30 of the 50 workers are always queued: the queue is part of the cost.
The server is a throwaway PostgreSQL on 127.0.0.1 (tests/integration/postgres.py).

One round is ``OPS`` operations spread over 50 concurrent workers; rounds of the three
implementations are interleaved, so a noisy neighbour hits them alike, and the ratio to the
raw pool is taken per pair of neighbouring rounds. The client's own CPU time per operation
is reported too: it is what the PoolManager adds to, whatever the server and the machine do.

    .venv/bin/python benches/bench_pool.py [ROUNDS=40] [SCALE=0.5]   # the RESULTS.md table
    .venv/bin/python -m pytest benches/bench_pool.py --benchmark-only   # pytest-benchmark
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest

import admission as adm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "integration"))
from postgres import PostgresServer

GROUP = "postgres select 1, concurrency 50"
CONCURRENCY = 50
MAX_SIZE = 20
OPS = 4_000  # per round, pooled
CONNECT_OPS = 400  # per round, connection per operation (about 20x slower)

Op = Callable[[], Awaitable[None]]


async def run_round(op: Op, ops: int) -> float:
    """Seconds for ``ops`` calls of ``op`` by ``CONCURRENCY`` workers."""
    per_worker, extra = divmod(ops, CONCURRENCY)

    async def worker(n: int) -> None:
        for _ in range(n):
            await op()

    start = time.perf_counter()
    await asyncio.gather(*(worker(per_worker + (i < extra)) for i in range(CONCURRENCY)))
    return time.perf_counter() - start


class Contenders:
    """The three implementations against one server, on one event loop."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.pool: Any = None
        self.pools: adm.PoolManager | None = None

    async def open(self) -> None:
        self.pool = await asyncpg.create_pool(self.dsn, min_size=MAX_SIZE, max_size=MAX_SIZE)
        self.pools = adm.PoolManager(
            {
                "bench": adm.PoolConfig(
                    self.dsn, min_size=MAX_SIZE, max_size=MAX_SIZE, max_waiters=None
                )
            }
        )
        await self.pools.open()

    async def close(self) -> None:
        await self.pool.close()
        assert self.pools is not None
        await self.pools.close()

    async def connect_per_op(self) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            await conn.fetchval("select 1")
        finally:
            await conn.close()

    async def raw_pool(self) -> None:
        async with self.pool.acquire() as conn:
            await conn.fetchval("select 1")

    async def pool_manager(self) -> None:
        assert self.pools is not None
        async with self.pools.connection("bench") as conn:
            await conn.fetchval("select 1")

    def table(self) -> list[tuple[str, str, Op, int]]:
        """(key, label, operation, ops per round)."""
        return [
            ("asyncpg.connect", "asyncpg.connect per operation", self.connect_per_op, CONNECT_OPS),
            ("asyncpg.create_pool", "asyncpg.create_pool (raw pool)", self.raw_pool, OPS),
            ("admission.PoolManager", "admission PoolManager", self.pool_manager, OPS),
        ]


# --------------------------------------------------------------------- pytest-benchmark


@pytest.fixture(scope="module")
def server() -> Iterator[PostgresServer]:
    with PostgresServer() as pg:
        yield pg


@pytest.mark.benchmark(group=GROUP)
@pytest.mark.parametrize("key", ["asyncpg.connect", "asyncpg.create_pool", "admission.PoolManager"])
def test_select_1(benchmark: Any, server: PostgresServer, key: str) -> None:
    loop = asyncio.new_event_loop()
    contenders = Contenders(server.dsn())
    try:
        loop.run_until_complete(contenders.open())
        _, label, op, ops = next(row for row in contenders.table() if row[0] == key)
        loop.run_until_complete(run_round(op, ops // 4))  # warm-up
        # A raw asyncpg pool is the floor: the least a pooled query can cost.
        role = {"admission.PoolManager": "admission", "asyncpg.create_pool": "floor"}.get(
            key, "peer"
        )
        benchmark.extra_info.update(
            key=key, impl=label, role=role, baseline=role == "admission", calls=ops
        )
        benchmark.pedantic(
            lambda: loop.run_until_complete(run_round(op, ops)), rounds=5, iterations=1
        )
        if contenders.pools is not None and key.startswith("admission"):
            stats = contenders.pools.stats("bench")
            assert stats.in_use == 0
            assert stats.high_water == MAX_SIZE
            assert stats.timed_out == stats.overloaded == stats.unavailable == 0
    finally:
        loop.run_until_complete(contenders.close())
        loop.close()


# ------------------------------------------------------------------ standalone: the table


async def interleaved(
    dsn: str, rounds: int, scale: float
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """ops/s and client CPU microseconds per op of each round of each implementation,
    rounds interleaved (``scale`` multiplies the ops per round)."""
    contenders = Contenders(dsn)
    await contenders.open()
    rates: dict[str, list[float]] = {key: [] for key, *_ in contenders.table()}
    cpu: dict[str, list[float]] = {key: [] for key, *_ in contenders.table()}
    try:
        for _, _, op, ops in contenders.table():
            await run_round(op, ops // 4)  # warm-up: prepared statements, caches
        for _ in range(rounds):
            for key, _, op, ops in contenders.table():
                n = max(CONCURRENCY, int(ops * scale))
                started = time.process_time()
                rates[key].append(n / await run_round(op, n))
                cpu[key].append((time.process_time() - started) / n * 1e6)
    finally:
        await contenders.close()
    return rates, cpu


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    scale = float(sys.argv[2]) if len(sys.argv) > 2 else 0.5
    with PostgresServer() as pg:
        rates, cpu = asyncio.run(interleaved(pg.dsn(), rounds, scale))
    labels = {key: label for key, label, *_ in Contenders("").table()}
    raw_key = "asyncpg.create_pool"
    raw = statistics.median(rates[raw_key])
    print(f"{rounds} interleaved rounds; per round: ops/s and this process's CPU per op\n")
    print(
        "| implementation | ops/s (median) | ops/s (min - max) | vs raw pool "
        "| client CPU us/op (median) |"
    )
    print("| --- | ---: | ---: | ---: | ---: |")
    for key, values in rates.items():
        med = statistics.median(values)
        print(
            f"| {labels[key]} | {med:,.0f} | {min(values):,.0f} - {max(values):,.0f} | "
            f"{med / raw:.3f} | {statistics.median(cpu[key]):.1f} |"
        )
    manager = rates["admission.PoolManager"]
    pairs = [m / r for m, r in zip(manager, rates[raw_key], strict=True)]
    print(
        f"\nPoolManager / raw pool, ratio of ops/s per interleaved pair: median "
        f"{statistics.median(pairs):.3f} (quartiles {statistics.quantiles(pairs, n=4)[0]:.3f}"
        f" - {statistics.quantiles(pairs, n=4)[2]:.3f})"
    )


if __name__ == "__main__":
    main()
