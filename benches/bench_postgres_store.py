"""Decisions per second through the PostgreSQL store (`admission.stores.Postgres`) at
concurrency 1 and 16, against raw asyncpg ``select 1`` on a pool of the same size and
pyrate-limiter's ``PostgresBucket``, in the same run, on one throwaway local server.

Rows (every decision admitted: the bucket's rate is far above what any row reaches, and every
worker decides on the ONE shared bucket, the contended case a shared limit is, except the
row over 1,000 keys):

- ``asyncpg select 1``: ``pool.fetchval("select 1")`` on an asyncpg pool as created by default,
  whose release sends asyncpg's reset query (a second round trip).
- ``asyncpg select 1, no reset``: the same on a pool that sends nothing on release: the pool
  floor a one-statement decision is held to (the issue's >= 0.8 x).
- ``select 1, raw connections``: ``conn.fetchval("select 1")`` on asyncpg connections used
  directly, one per worker from an idle list (the kind of connection a store made from a DSN
  uses): the floor without any pool's cost.
- ``Postgres.rate``: one GCRA decision, the store's statement (``INSERT ... ON CONFLICT DO
  UPDATE ... RETURNING``), on a store made from the DSN (its own connections, used directly);
  and the same on a store given the pool without reset (asyncpg's pool per statement).
- ``TokenBucket(store=Postgres)``: ``await bucket.acquire(timeout=0)``, the limiter on top (at
  c=16 the decisions asked for while one is in flight go as one ``rate_many`` statement);
- the same limiter deciding one statement per decision, as before coalescing (the "before"
  row of the same run: `bench_remote_layer.OneByOne`).
- ``KeyedTokenBucket(store=Postgres), 1,000 keys``: the workers' decisions spread over 1,000
  keys in turn (at c=16, 16 different keys at a time), where the rows above all decide on one
  hot bucket (the best case for coalescing): the decisions asked for while one is in flight
  go as one ``rate_batch`` statement over their keys; and the same limiter deciding one
  statement per decision (`bench_remote_layer.OneByOneKeyed`).
- ``KeyedTokenBucket(store=Postgres), Zipf keys``: the same limiter, the workers' keys drawn
  from a Zipf distribution (s = 1) over 1,000 keys, a fixed seeded sequence: the hottest key
  is about one decision in seven, so most batches at c=16 hold a key more than once.
- ``PL/pgSQL function``: the same decision as a function called by one SELECT (``SELECT ...
  FOR UPDATE`` then ``UPDATE`` inside the server): the alternative the store did not keep.
- ``SELECT FOR UPDATE + UPDATE transaction``: Bucket4j's way: BEGIN, read the row locked,
  decide in the client, UPDATE, COMMIT (four round trips, the row locked across them).
- ``pyrate-limiter PostgresBucket``: ``Limiter(PostgresBucket(...)).try_acquire(blocking=False)``
  on a psycopg pool of the same size, from threads (it is synchronous; its limiter takes a
  lock around each call, and it reads the server's clock in a round trip of its own).

Rounds are interleaved (a noisy neighbour hits every row alike), medians reported.

    .venv/bin/python benches/bench_postgres_store.py [ROUNDS=7] [SCALE=1.0]   # RESULTS.md
    .venv/bin/python -m pytest benches/bench_postgres_store.py --benchmark-only

Where a decision's time goes (CPU, not wall time, so a loaded machine blurs it less): the
client's CPU and the server backend's (``/proc/<pid>/stat``) per statement, on one
connection, for ``select 1``, the decision's statement and the least a write can be::

    .venv/bin/python benches/bench_postgres_store.py cpu [STATEMENTS=3000] [ROUNDS=5]

The same split per decision at c=16 (every client backend's CPU), for ``select 1`` on raw
connections and the limiter rows (one hot bucket, 1,000 keys in turn, Zipf keys)::

    .venv/bin/python benches/bench_postgres_store.py cpu16 [DECISIONS=3000] [ROUNDS=5]
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest

import admission as adm
from admission.stores.postgres import Postgres

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "integration"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from postgres import PostgresServer

from bench_remote_layer import one_by_one

GROUP_1 = "postgres store decision, c=1"
GROUP_16 = "postgres store decision, c=16"
CONCURRENCY = (1, 16)
POOL_SIZE = 16
OPS = {1: 1_500, 16: 3_000}  # per round; pyrate-limiter's rows a tenth of it
INTERVAL_US = 1  # a bucket of a million per second: every decision in the bench admitted
BURST = 1_000_000
KEYS_SPREAD = 1_000  # the keys the keyed row's decisions go round


def _zipf_keys(count: int, keys: int, seed: int = 1) -> list[int]:
    """``count`` keys drawn from a Zipf distribution (s = 1) over ``keys``: key i (from 0)
    with probability proportional to 1 / (i + 1)."""
    weights = list(itertools.accumulate(1 / (i + 1) for i in range(keys)))
    rng = random.Random(seed)
    return [bisect.bisect(weights, rng.random() * weights[-1]) for _ in range(count)]


ZIPF_KEYS = _zipf_keys(100_000, KEYS_SPREAD)

Op = Callable[[], Awaitable[Any]]

_FUNCTION = """
CREATE SCHEMA IF NOT EXISTS bench;
CREATE UNLOGGED TABLE IF NOT EXISTS bench.buckets (
    name text PRIMARY KEY, tat bigint NOT NULL
);
CREATE OR REPLACE FUNCTION bench.rate(
    p_name text, p_interval bigint, p_burst bigint, p_cost bigint, p_max_wait bigint,
    OUT admitted boolean, OUT tat bigint, OUT now bigint
) LANGUAGE plpgsql AS $$
DECLARE old bigint; new bigint;
BEGIN
    LOOP
        SELECT b.tat INTO old FROM bench.buckets b WHERE b.name = p_name FOR UPDATE;
        now := (extract(epoch FROM clock_timestamp()) * 1000000)::bigint;
        IF NOT FOUND THEN
            INSERT INTO bench.buckets (name, tat) VALUES (p_name, now + p_cost * p_interval)
                ON CONFLICT DO NOTHING;
            IF FOUND THEN admitted := true; tat := now + p_cost * p_interval; RETURN; END IF;
            CONTINUE;
        END IF;
        new := greatest(old, now) + p_cost * p_interval;
        admitted := p_max_wait < 0 OR new - p_burst * p_interval - now <= p_max_wait;
        IF admitted THEN
            UPDATE bench.buckets b SET tat = new WHERE b.name = p_name;
            tat := new;
        ELSE
            tat := old;
        END IF;
        RETURN;
    END LOOP;
END
$$;
"""
_NOW = "(extract(epoch FROM clock_timestamp()) * 1000000)::bigint"


async def _no_reset(conn: Any) -> None:
    pass


class Contenders:
    """Every row's operation against one server, on one event loop (pyrate's in threads)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.pool: Any = None
        self.bare: Any = None
        self.raw: list[Any] = []  # idle raw connections
        self.store: Postgres | None = None
        self.store_on_pool: Postgres | None = None
        self.bucket: Any = None
        self.executor = ThreadPoolExecutor(POOL_SIZE)
        self.pyrate: Any = None
        self.pyrate_admitted = self.pyrate_refused = 0
        self.psycopg_pool: Any = None

    async def open(self) -> None:
        size = {"min_size": POOL_SIZE, "max_size": POOL_SIZE}
        self.pool = await asyncpg.create_pool(self.dsn, **size)
        self.bare = await asyncpg.create_pool(self.dsn, reset=_no_reset, **size)
        self.raw = [await asyncpg.connect(self.dsn) for _ in range(POOL_SIZE)]
        # The store as made from a DSN: its own connections, used directly.
        self.store = Postgres(self.dsn, timeout=30, sweep_interval=None)
        await self.store.migrate()
        self.store_on_pool = Postgres(pool=self.bare, timeout=30, sweep_interval=None)
        self.bucket = adm.TokenBucket(
            rate=1_000_000, per=1, burst=BURST, name="bench-limiter", store=self.store
        )
        self.keyed = adm.KeyedTokenBucket(
            rate=1_000_000, per=1, burst=BURST, name="bench-keyed", store=self.store
        )
        self.next_key = 0
        self.next_zipf = 0
        self.keyed_one_by_one = one_by_one(
            adm.KeyedTokenBucket(
                rate=1_000_000, per=1, burst=BURST, name="bench-keyed-1by1", store=self.store
            )
        )
        self.next_key_one_by_one = 0
        self.one_by_one = one_by_one(
            adm.TokenBucket(rate=1_000_000, per=1, burst=BURST, name="bench-1by1", store=self.store)
        )
        await self.bare.execute(_FUNCTION)
        await asyncio.get_running_loop().run_in_executor(self.executor, self._open_pyrate)

    def _open_pyrate(self) -> None:
        from psycopg_pool import ConnectionPool  # type: ignore[import-not-found]
        from pyrate_limiter import Duration, Limiter, PostgresBucket, Rate

        self.psycopg_pool = ConnectionPool(
            self.dsn, min_size=POOL_SIZE, max_size=POOL_SIZE, open=True
        )
        bucket = PostgresBucket(self.psycopg_pool, "bench", [Rate(1_000_000, Duration.SECOND)])
        self.pyrate = Limiter(bucket)

    async def close(self) -> None:
        assert self.store is not None
        assert self.store_on_pool is not None
        await self.store.aclose()
        await self.store_on_pool.aclose()
        await self.pool.close()
        await self.bare.close()
        for conn in self.raw:
            await conn.close()
        if self.pyrate is not None:
            self.pyrate.close()
        if self.psycopg_pool is not None:
            self.psycopg_pool.close()
        self.executor.shutdown()

    async def select_1(self) -> None:
        await self.pool.fetchval("select 1")

    async def select_1_no_reset(self) -> None:
        await self.bare.fetchval("select 1")

    async def select_1_raw(self) -> None:
        conn = self.raw.pop()
        try:
            await conn.fetchval("select 1")
        finally:
            self.raw.append(conn)

    async def store_rate(self) -> None:
        assert self.store is not None
        reply = await self.store.rate("bench", None, INTERVAL_US, BURST, 1, 0)
        assert reply.admitted

    async def store_rate_on_pool(self) -> None:
        assert self.store_on_pool is not None
        reply = await self.store_on_pool.rate("bench-pool", None, INTERVAL_US, BURST, 1, 0)
        assert reply.admitted

    async def limiter(self) -> None:
        await self.bucket.acquire(timeout=0)

    async def limiter_keys(self) -> None:
        self.next_key = key = (self.next_key + 1) % KEYS_SPREAD
        await self.keyed.acquire(key, timeout=0)

    async def limiter_keys_zipf(self) -> None:
        self.next_zipf = n = (self.next_zipf + 1) % len(ZIPF_KEYS)
        await self.keyed.acquire(ZIPF_KEYS[n], timeout=0)

    async def limiter_keys_one_by_one(self) -> None:
        self.next_key_one_by_one = key = (self.next_key_one_by_one + 1) % KEYS_SPREAD
        await self.keyed_one_by_one.acquire(key, timeout=0)

    async def limiter_one_by_one(self) -> None:
        await self.one_by_one.acquire(timeout=0)

    async def function(self) -> None:
        row = await self.bare.fetchrow(
            "SELECT admitted, tat, now FROM bench.rate($1, $2, $3, $4, $5)",
            "fn",
            INTERVAL_US,
            BURST,
            1,
            0,
        )
        assert row[0]

    async def transaction(self) -> None:
        async with self.bare.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"SELECT tat, {_NOW} FROM bench.buckets WHERE name = $1 FOR UPDATE", "tx"
            )
            if row is None:  # the first decision: the INSERT ON CONFLICT of the row
                await conn.execute(
                    f"INSERT INTO bench.buckets VALUES ($1, {_NOW}) ON CONFLICT DO NOTHING", "tx"
                )
                return
            tat, now = row
            new = max(tat, now) + INTERVAL_US
            assert new - BURST * INTERVAL_US <= now
            await conn.execute("UPDATE bench.buckets SET tat = $2 WHERE name = $1", "tx", new)

    async def pyrate_limiter(self) -> None:
        loop = asyncio.get_running_loop()
        if await loop.run_in_executor(self.executor, self.pyrate.try_acquire, "x", 1, False):
            self.pyrate_admitted += 1
        else:  # its table lock is taken NOWAIT: a concurrent call is refused, not queued
            self.pyrate_refused += 1

    def table(self) -> list[tuple[str, str, str, Op, float]]:
        """(key, label, role, operation, share of the round's operations)."""
        return [
            ("select1", "asyncpg select 1", "reference", self.select_1, 1.0),
            ("select1-bare", "asyncpg select 1, no reset", "floor", self.select_1_no_reset, 1.0),
            ("select1-raw", "select 1, raw connections (the kind the store uses)", "floor",
             self.select_1_raw, 1.0),
            ("store", "Postgres.rate", "admission", self.store_rate, 1.0),
            ("store-pool", "Postgres.rate on a given asyncpg pool (no reset)", "reference",
             self.store_rate_on_pool, 1.0),
            ("limiter", "TokenBucket(store=Postgres)", "admission", self.limiter, 1.0),
            ("limiter-1by1", "TokenBucket(store=Postgres), a statement per decision (before)",
             "reference", self.limiter_one_by_one, 1.0),
            ("limiter-keys", "KeyedTokenBucket(store=Postgres), 1,000 keys", "admission",
             self.limiter_keys, 1.0),
            ("limiter-keys-zipf", "KeyedTokenBucket(store=Postgres), Zipf keys", "admission",
             self.limiter_keys_zipf, 1.0),
            ("limiter-keys-1by1", "the same, a statement per decision", "reference",
             self.limiter_keys_one_by_one, 1.0),
            ("function", "PL/pgSQL function", "reference", self.function, 1.0),
            ("transaction", "SELECT FOR UPDATE + UPDATE transaction", "reference",
             self.transaction, 0.5),
            ("pyrate", "pyrate-limiter PostgresBucket", "peer", self.pyrate_limiter, 0.1),
        ]  # fmt: skip


async def run_round(op: Op, ops: int, concurrency: int) -> float:
    """Seconds for ``ops`` calls of ``op`` by ``concurrency`` workers."""
    per_worker, extra = divmod(ops, concurrency)

    async def worker(n: int) -> None:
        for _ in range(n):
            await op()

    start = time.perf_counter()
    await asyncio.gather(*(worker(per_worker + (i < extra)) for i in range(concurrency)))
    return time.perf_counter() - start


def _ops(concurrency: int, share: float, scale: float) -> int:
    return max(concurrency, int(OPS[concurrency] * share * scale))


# --------------------------------------------------------------------- pytest-benchmark


@pytest.fixture(scope="module")
def server() -> Iterator[PostgresServer]:
    with PostgresServer() as pg:
        yield pg


KEYS = [row[0] for row in Contenders("").table()]


@pytest.mark.parametrize(
    "concurrency",
    [
        pytest.param(1, marks=pytest.mark.benchmark(group=GROUP_1)),
        pytest.param(16, marks=pytest.mark.benchmark(group=GROUP_16)),
    ],
)
@pytest.mark.parametrize("key", KEYS)
def test_decisions(benchmark: Any, server: PostgresServer, key: str, concurrency: int) -> None:
    loop = asyncio.new_event_loop()
    contenders = Contenders(server.app_dsn())
    try:
        loop.run_until_complete(contenders.open())
        _, label, role, op, share = next(r for r in contenders.table() if r[0] == key)
        ops = _ops(concurrency, share, 0.5)
        loop.run_until_complete(run_round(op, ops // 4, concurrency))  # warm-up
        benchmark.extra_info.update(
            key=key, impl=label, role=role, baseline=key == "store", calls=ops
        )
        benchmark.pedantic(
            lambda: loop.run_until_complete(run_round(op, ops, concurrency)),
            rounds=3,
            iterations=1,
        )
    finally:
        loop.run_until_complete(contenders.close())
        loop.close()


# ------------------------------------------------------------------ standalone: the table


async def interleaved(
    dsn: str, rounds: int, scale: float
) -> tuple[dict[tuple[str, int], list[float]], dict[int, float]]:
    """Decisions per second of each round of each row at each concurrency, and the share of
    pyrate-limiter's decisions that admitted at each concurrency."""
    contenders = Contenders(dsn)
    admitted_share: dict[int, float] = {}
    await contenders.open()
    rates: dict[tuple[str, int], list[float]] = {}
    try:
        for concurrency in CONCURRENCY:
            for _, _, _, op, share in contenders.table():  # warm-up: statements, caches
                await run_round(op, _ops(concurrency, share, scale) // 4, concurrency)
        for _ in range(rounds):
            for concurrency in CONCURRENCY:
                for key, _, _, op, share in contenders.table():
                    n = _ops(concurrency, share, scale)
                    seconds = await run_round(op, n, concurrency)
                    rates.setdefault((key, concurrency), []).append(n / seconds)
        for concurrency in CONCURRENCY:  # pyrate's refusals, per concurrency, in a round alone
            contenders.pyrate_admitted = contenders.pyrate_refused = 0
            await run_round(contenders.pyrate_limiter, _ops(concurrency, 0.1, scale), concurrency)
            admitted_share[concurrency] = contenders.pyrate_admitted / (
                contenders.pyrate_admitted + contenders.pyrate_refused
            )
    finally:
        await contenders.close()
    return rates, admitted_share


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    scale = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
    with PostgresServer() as pg:
        rates, admitted_share = asyncio.run(interleaved(pg.app_dsn(), rounds, scale))
    rows = Contenders("").table()
    medians = {k: statistics.median(v) for k, v in rates.items()}
    print(f"{rounds} interleaved rounds, pools of {POOL_SIZE}; decisions/s (median of rounds)\n")
    head = " | ".join(f"c={c} | vs raw | vs pool floor" for c in CONCURRENCY)
    print(f"| row | {head} |")
    print("| --- |" + " ---: | ---: | ---: |" * len(CONCURRENCY))
    for key, label, *_ in rows:
        cells = []
        for c in CONCURRENCY:
            value = medians[(key, c)]
            raw = medians[("select1-raw", c)]
            floor = medians[("select1-bare", c)]
            cells.append(f"{value:,.0f} | {value / raw:.2f} | {value / floor:.2f}")
        print(f"| {label} | {' | '.join(cells)} |")
    shares = ", ".join(f"c={c}: {share:.0%}" for c, share in admitted_share.items())
    print(f"\npyrate-limiter's decisions that admitted (the rest: refused by its lock): {shares}")


_CPU_ROWS = {
    "select 1": ("select 1", ()),
    "six parameters in, three columns out, no table": (
        "select $1::text is null, $3::bigint + $4::bigint,"
        " $5::bigint + $6::bigint + coalesce(length($2::bytea), 0)",
        ("cpu", None, INTERVAL_US, BURST, 1, 0),
    ),
    "UPDATE of the row, tat = tat + 1 (the least write)": (
        "UPDATE admission.buckets SET tat = tat + 1 WHERE name = 'cpu' AND key = '\\x'::bytea",
        (),
    ),
    "the decision (Postgres.rate's statement)": (
        "",
        ("cpu", None, INTERVAL_US, BURST, 1, 0),
    ),
}


def _backend_cpu(pid: int) -> float:
    """Seconds of CPU the server process ``pid`` has used (user + system)."""
    import os

    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def cpu_per_statement(dsn: str, statements: int, rounds: int) -> None:
    store = Postgres(dsn, timeout=30, sweep_interval=None)
    await store.migrate()
    await store.rate("cpu", None, INTERVAL_US, BURST, 1, 0)  # the row exists
    conn = await asyncpg.connect(dsn)
    try:
        pid = await conn.fetchval("select pg_backend_pid()")
        rows = {k: (sql or store._sql["rate"], args) for k, (sql, args) in _CPU_ROWS.items()}
        spent: dict[str, tuple[list[float], list[float], list[float]]] = {
            k: ([], [], []) for k in rows
        }
        for sql, args in rows.values():  # prepared, planned (generic plans after 5)
            for _ in range(100):
                await conn.fetchrow(sql, *args)
        for _ in range(rounds):
            for key, (sql, args) in rows.items():
                server, client, wall = _backend_cpu(pid), time.process_time(), time.perf_counter()
                for _ in range(statements):
                    await conn.fetchrow(sql, *args)
                for values, used in zip(
                    spent[key],
                    (
                        time.perf_counter() - wall,
                        time.process_time() - client,
                        _backend_cpu(pid) - server,
                    ),
                    strict=True,
                ):
                    values.append(used / statements * 1e6)
    finally:
        await conn.close()
        await store.aclose()
    print(f"one connection, {rounds} interleaved rounds of {statements}; µs per statement\n")
    print("| statement | wall | client CPU | server CPU | CPU, both |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for key, (wall, client, server) in spent.items():
        both = statistics.median(client) + statistics.median(server)
        print(
            f"| {key} | {statistics.median(wall):.0f} | {statistics.median(client):.0f} "
            f"| {statistics.median(server):.0f} | {both:.0f} |"
        )


_CPU16_ROWS = ("select1-raw", "limiter", "limiter-keys", "limiter-keys-zipf")


async def cpu_per_decision_at_16(dsn: str, decisions: int, rounds: int) -> None:
    """Wall time, client CPU (``time.process_time``) and the server backends' CPU per
    decision at c=16, for `_CPU16_ROWS`, rounds interleaved."""
    contenders = Contenders(dsn)
    await contenders.open()
    monitor = await asyncpg.connect(dsn)
    ops = {key: op for key, _, _, op, _ in contenders.table() if key in _CPU16_ROWS}
    spent: dict[str, tuple[list[float], list[float], list[float]]] = {
        key: ([], [], []) for key in ops
    }
    try:
        backends = [
            row[0]
            for row in await monitor.fetch(
                "SELECT pid FROM pg_stat_activity"
                " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
            )
        ]
        for op in ops.values():
            await run_round(op, decisions // 4, 16)
        for _ in range(rounds):
            for key, op in ops.items():
                server = sum(_backend_cpu(pid) for pid in backends)
                client, wall = time.process_time(), time.perf_counter()
                await run_round(op, decisions, 16)
                used = (
                    time.perf_counter() - wall,
                    time.process_time() - client,
                    sum(_backend_cpu(pid) for pid in backends) - server,
                )
                for values, seconds in zip(spent[key], used, strict=True):
                    values.append(seconds / decisions * 1e6)
    finally:
        await monitor.close()
        await contenders.close()
    print(f"c=16, {rounds} interleaved rounds of {decisions}; µs per decision (medians)\n")
    print("| row | wall | decisions/s | client CPU | server CPU |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for key, (wall, client, server) in spent.items():
        print(
            f"| {key} | {statistics.median(wall):.1f} | {1e6 / statistics.median(wall):,.0f} "
            f"| {statistics.median(client):.1f} | {statistics.median(server):.1f} |"
        )


if __name__ == "__main__":
    if sys.argv[1:2] in (["cpu"], ["cpu16"]):
        count = int(sys.argv[2]) if len(sys.argv) > 2 else 3000
        repeat = int(sys.argv[3]) if len(sys.argv) > 3 else 5
        measure = cpu_per_statement if sys.argv[1] == "cpu" else cpu_per_decision_at_16
        with PostgresServer() as pg_server:
            asyncio.run(measure(pg_server.app_dsn(), count, repeat))
    else:
        main()
