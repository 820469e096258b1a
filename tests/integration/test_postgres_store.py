"""`admission.stores.Postgres` against a real PostgreSQL server: every `NetworkStore` method's
semantics (network.py's docstrings), concurrency on the server, failures within the timeout,
the schema's creation, sweeping, and credentials never shown.

Times come from the server's clock; the tests use intervals and leases far longer than a test
step (nothing refills or expires by accident) or poll with bounded waits for what must expire.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import itertools
import multiprocessing
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from fractions import Fraction
from typing import Any

import asyncpg
import pytest
from postgres import APP_PASSWORD, PostgresServer, run, wait_until
from store_contract import (
    a_dead_waiters_entry_expires_before_its_lease,
    absurd_waits_and_buckets_stay_exact,
    one_event_loop_per_store,
    rates_answer_as_the_reference,
    semaphores_answer_as_the_reference,
)

import admission as adm
from admission.errors import ConfigError, StoreUnavailable
from admission.stores import _postgres_sql
from admission.stores.network import RATE_MANY_MAX
from admission.stores.postgres import Postgres

SECOND = 1_000_000  # µs
LONG = 3600 * SECOND  # an interval or lease nothing in a test outlives
# The store's timeout where a test is not about timeouts: the default 0.1 s is shorter than
# a statement can take on a loaded 2-core machine (the first one also connects).
LOADED = 30.0
_schemas = itertools.count()


def fresh_schema() -> str:
    return f"t{next(_schemas)}_{int(time.time() * 1000) % 10**8}"


@pytest.fixture
def schema() -> str:
    return fresh_schema()


async def rows(pg: PostgresServer, sql: str, *args: Any) -> list[Any]:
    conn = await asyncpg.connect(pg.dsn())
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


# ---------------------------------------------------------------------------- rate


def test_rate_is_the_gcra_on_the_servers_clock(pg: PostgresServer, schema: str) -> None:
    async def main() -> None:
        store = Postgres(pg.app_dsn(), schema=schema, timeout=LOADED)
        try:
            conn = await asyncpg.connect(pg.dsn())
            before = await conn.fetchval(_server_now)
            first = await store.rate("api", None, LONG, 3, 1, 0)
            after = await conn.fetchval(_server_now)
            await conn.close()
            assert first.admitted
            assert first.wait_us == 0
            assert before <= first.now_us <= after  # the server's clock, not ours
            assert first.tat_us == first.now_us + LONG  # a new bucket is full

            second = await store.rate("api", None, LONG, 3, 2, 0)
            assert second.admitted
            assert second.wait_us == 0
            assert second.tat_us == first.tat_us + 2 * LONG

            refused = await store.rate("api", None, LONG, 3, 1, 0)
            assert not refused.admitted
            assert refused.tat_us == second.tat_us  # as it stands
            # µs until one more fits: allow_at - now
            assert refused.wait_us == second.tat_us + LONG - 3 * LONG - refused.now_us
            assert 0 < refused.wait_us <= LONG

            # A refusal changed nothing: the next charge lands right after the second one.
            later = await store.rate("api", None, LONG, 3, 1, 2 * LONG)
            assert later.admitted
            assert later.tat_us == second.tat_us + LONG
            assert later.wait_us == later.tat_us - 3 * LONG - later.now_us > 0

            # max_wait < 0: no bound.
            unbounded = await store.rate("api", None, LONG, 3, 3, -1)
            assert unbounded.admitted
            assert unbounded.tat_us == later.tat_us + 3 * LONG
            # Beyond max_wait: refused, TAT unchanged.
            bounded = await store.rate("api", None, LONG, 3, 1, LONG)
            assert not bounded.admitted
            assert bounded.tat_us == unbounded.tat_us
        finally:
            await store.aclose()

    run(main())


_server_now = "SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint"


def test_rate_keys_are_separate_buckets(pg: PostgresServer, schema: str) -> None:
    async def main() -> None:
        store = Postgres(pg.app_dsn(), schema=schema, timeout=LOADED)
        try:
            for key in (None, b"", b"a", b"\x01"):
                assert (await store.rate("k", key, LONG, 1, 1, 0)).admitted, key
                assert not (await store.rate("k", key, LONG, 1, 1, 0)).admitted, key
            assert (await store.rate("other", None, LONG, 1, 1, 0)).admitted
        finally:
            await store.aclose()

    run(main())


def test_rate_refuses_a_cost_outside_1_to_burst(pg: PostgresServer, schema: str) -> None:
    async def main() -> None:
        store = Postgres(pg.app_dsn(), schema=schema, timeout=LOADED)
        try:
            for cost in (0, 4):
                with pytest.raises(ValueError, match="cost must be between 1 and burst"):
                    await store.rate("c", None, LONG, 3, cost, 0)
        finally:
            await store.aclose()

    run(main())


def test_an_argument_the_server_refuses_as_data_is_the_callers_error(
    pg: PostgresServer, schema: str
) -> None:
    """A value the driver cannot send (out of bigint's range) or the server refuses as data
    (a NUL in a text) is the caller's mistake, raised as it is: never `StoreUnavailable`,
    which would count against the store's breaker, shared by all its limiters."""

    async def main() -> None:
        store = Postgres(pg.app_dsn(), schema=schema, timeout=LOADED)
        try:
            with pytest.raises(asyncpg.DataError, match="out of int64 range") as refused:
                await store.rate_give_back("c", None, LONG, 1, 2**63)
            assert not isinstance(refused.value, StoreUnavailable)
            # (A max wait past bigint is no bound, the longest a store grants: MAX_SPAN_US.)
            assert (await store.rate("c", None, LONG, 3, 1, 2**63)).admitted
            with pytest.raises(asyncpg.DataError, match="0x00"):
                await store.rate("c\x00d", None, LONG, 3, 1, 0)
            assert (await store.rate("c", None, LONG, 3, 1, 0)).admitted  # the connection is fine
        finally:
            await store.aclose()

    run(main())


def test_rate_give_back_is_a_compare_and_set(pg: PostgresServer, schema: str) -> None:
    async def main() -> None:
        store = Postgres(pg.app_dsn(), schema=schema, timeout=LOADED)
        try:
            a = await store.rate("g", b"u", LONG, 5, 1, 0)
            b = await store.rate("g", b"u", LONG, 5, 2, 0)
            assert not await store.rate_give_back("g", b"u", LONG, 1, a.tat_us)  # not the last
            assert await store.rate_give_back("g", b"u", LONG, 2, b.tat_us)
            assert not await store.rate_give_back("g", b"u", LONG, 2, b.tat_us)  # only once
            assert await store.rate_give_back("g", b"u", LONG, 1, a.tat_us)  # now the last
            again = await store.rate("g", b"u", LONG, 5, 1, 0)
            assert again.tat_us == max(a.tat_us - LONG, again.now_us) + LONG
            assert not await store.rate_give_back("g", None, LONG, 1, again.tat_us)  # other
            assert not await store.rate_give_back("nobody", None, LONG, 1, again.tat_us)
        finally:
            await store.aclose()

    run(main())


def test_concurrent_deciders_admit_exactly_the_burst(pg: PostgresServer, schema: str) -> None:
    async def main() -> None:
        pool = await asyncpg.create_pool(pg.app_dsn(), min_size=16, max_size=16)
        store = Postgres(pool=pool, schema=schema, timeout=30)
        try:
            replies = await asyncio.gather(
                *(store.rate("burst", None, LONG, 10, 1, 0) for _ in range(64))
            )
            admitted = sorted(r.tat_us for r in replies if r.admitted)
            assert len(admitted) == 10
            # Each admitted charge moved the TAT by one interval: no charge was lost.
            assert [t - admitted[0] for t in admitted] == [i * LONG for i in range(10)]
        finally:
            await store.aclose()
            await pool.close()

    run(main())


# ---------------------------------------------------------------------------- register


def test_register_is_idempotent_and_refuses_another_config(pg: PostgresServer, schema: str) -> None:
    async def main() -> None:
        store = Postgres(pg.app_dsn(), schema=schema, timeout=LOADED)
        try:
            await store.register("TokenBucket", "openai", {"rate": 500, "per": 60.0, "burst": 10})
            await store.register("TokenBucket", "openai", {"burst": 10, "per": 60, "rate": 500.0})
            await store.register("Semaphore", "openai", {"limit": 5})  # another kind
            with pytest.raises(ValueError, match="is registered in") as refused:
                await store.register("TokenBucket", "openai", {"rate": 50, "per": 60, "burst": 10})
            message = str(refused.value)
            assert "'rate': 500" in message
            assert "'rate': 50}" not in message
            assert "'rate': 50" in message.split("not ")[-1]
        finally:
            await store.aclose()

    run(main())


# ---------------------------------------------------------------------------- semaphore


def test_semaphore_fifo_queue_fences_and_renewal(pg: PostgresServer, schema: str) -> None:
    async def main() -> None:
        store = Postgres(pg.app_dsn(), schema=schema, timeout=LOADED)
        try:
            a = await store.semaphore_acquire("db", 1, "a", LONG, True)
            assert a == (True, a.fence, 1, 0)
            assert a.fence >= 1
            b = await store.semaphore_acquire("db", 1, "b", LONG, True)
            c = await store.semaphore_acquire("db", 1, "c", LONG, True)
            assert (b.granted, b.fence, b.in_use, b.ahead) == (False, 0, 1, 0)
            assert (c.granted, c.ahead) == (False, 1)
            # Not queueing: refused, not queued (ahead 0), even though room will come.
            d = await store.semaphore_acquire("db", 1, "d", LONG, False)
            assert (d.granted, d.ahead) == (False, 0)
            assert await store.semaphore_state("db") == (1, 2)
            # Asking again renews and keeps the fence.
            assert await store.semaphore_acquire("db", 1, "a", LONG, True) == a
            assert await store.semaphore_release("db", "a")
            # c asked before b asked again, but b is ahead: c waits.
            c = await store.semaphore_acquire("db", 1, "c", LONG, True)
            assert (c.granted, c.in_use, c.ahead) == (False, 0, 1)
            newcomer = await store.semaphore_acquire("db", 1, "e", LONG, False)
            assert not newcomer.granted  # never passes a live queued waiter
            b = await store.semaphore_acquire("db", 1, "b", LONG, True)
            assert b.granted
            assert b.fence > a.fence
            assert b.ahead == 0
            assert await store.semaphore_state("db") == (1, 1)
            assert await store.semaphore_release("db", "b")
            c = await store.semaphore_acquire("db", 1, "c", LONG, True)
            assert c.granted
            assert c.fence > b.fence
            assert await store.semaphore_state("db") == (1, 0)
            # Release: a lease, a place in the queue, or nothing.
            f = await store.semaphore_acquire("db", 1, "f", LONG, True)
            assert not f.granted
            assert await store.semaphore_release("db", "f")
            assert not await store.semaphore_release("db", "f")
            assert not await store.semaphore_release("db", "nobody")
            assert await store.semaphore_renew("db", ["c", "f", "a"], LONG) == [True, False, False]
        finally:
            await store.aclose()

    run(main())


def test_semaphore_expiry_drops_leases_and_waiters_not_the_fence(
    pg: PostgresServer, schema: str
) -> None:
    short = 200_000  # 0.2 s

    async def main() -> None:
        store = Postgres(pg.app_dsn(), schema=schema, timeout=5)
        try:
            held = await store.semaphore_acquire("x", 1, "dies", short, True)
            queued = await store.semaphore_acquire("x", 1, "gives-up", short, True)
            assert held.granted
            assert not queued.granted
            # Neither renews: the lease expires, then the waiter drops out of the queue.
            await wait_until(
                lambda: _state_is(store, "x", (0, 0)), "the lease and the queue entry expire"
            )
            assert await store.semaphore_renew("x", ["dies"], LONG) == [False]
            late = await store.semaphore_acquire("x", 1, "late", LONG, True)
            assert late.granted
            assert late.ahead == 0
            assert late.fence > held.fence
            # The expired holder asking again is a new holder: queued behind nobody, refused.
            again = await store.semaphore_acquire("x", 1, "dies", LONG, False)
            assert not again.granted
            assert await store.sweep() >= 0
            assert await store.semaphore_release("x", "late")
            # The fence survives every lease expiring and a sweep.
            after = await store.semaphore_acquire("x", 1, "next", LONG, True)
            assert after.fence > late.fence
        finally:
            await store.aclose()

    run(main())


async def _state_is(store: Postgres, name: str, want: tuple[int, int]) -> bool:
    return await store.semaphore_state(name) == want


def test_concurrent_acquirers_never_exceed_the_limit(pg: PostgresServer, schema: str) -> None:
    limit = 5
    acquirers = 24

    async def main() -> None:
        pool = await asyncpg.create_pool(pg.app_dsn(), min_size=acquirers, max_size=acquirers)
        store = Postgres(pool=pool, schema=schema, timeout=30)
        holding = 0
        most = 0
        fences: list[int] = []

        async def acquirer(i: int) -> None:
            nonlocal holding, most
            for round_ in range(15):
                holder = f"h{i}-{round_}"
                reply = await store.semaphore_acquire("lim", limit, holder, LONG, False)
                assert reply.in_use <= limit
                if reply.granted:
                    fences.append(reply.fence)
                    holding += 1  # after the grant, before the release: never above truth
                    most = max(most, holding)
                    await asyncio.sleep(0)
                    holding -= 1
                    assert await store.semaphore_release("lim", holder)

        async def monitor(stop: asyncio.Event) -> int:
            conn = await asyncpg.connect(pg.dsn())
            seen = 0
            while not stop.is_set():
                count = await conn.fetchval(
                    f'SELECT count(*) FROM "{schema}".leases WHERE name = $1', "lim"
                )
                seen = max(seen, count)
            await conn.close()
            return seen

        try:
            await store.migrate()  # the monitor reads its table from the start
            stop = asyncio.Event()
            watching = asyncio.ensure_future(monitor(stop))
            await asyncio.gather(*(acquirer(i) for i in range(acquirers)))
            stop.set()
            assert await watching <= limit
            assert 0 < most <= limit
            assert len(fences) == len(set(fences))  # never the same token twice
            assert await store.semaphore_state("lim") == (0, 0)
        finally:
            await store.aclose()
            await pool.close()

    run(main())


# ---------------------------------------------------------------------------- failures


@pytest.fixture
def own_server() -> Iterator[PostgresServer]:
    """A server of the test's own, to stop or pause."""
    with PostgresServer() as server:
        yield server


async def _bounded_failure(store: Postgres, bound: float) -> list[StoreUnavailable]:
    """Every method fails with StoreUnavailable, each within ``bound`` seconds (a hang
    guard: the store's timeout is far shorter)."""
    calls = [
        lambda: store.rate("r", None, LONG, 1, 1, 0),
        lambda: store.rate_give_back("r", None, LONG, 1, 0),
        lambda: store.register("TokenBucket", "r", {"rate": 1}),
        lambda: store.semaphore_acquire("s", 1, "h", LONG, True),
        lambda: store.semaphore_renew("s", ["h"], LONG),
        lambda: store.semaphore_release("s", "h"),
        lambda: store.semaphore_state("s"),
    ]
    errors = []
    for call in calls:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable) as failed:
            await asyncio.wait_for(call(), bound)
        assert time.monotonic() - started < bound
        errors.append(failed.value)
    return errors


def test_a_stopped_server_is_unavailable_within_the_timeout(own_server: PostgresServer) -> None:
    async def main() -> None:
        store = Postgres(own_server.app_dsn(), timeout=0.2)
        try:
            assert (await store.rate("r", None, LONG, 5, 1, 0)).admitted  # connected
            own_server.stop()
            errors = await _bounded_failure(store, bound=5.0)
            for error in errors:
                assert error.__cause__ is not None  # the driver's error
                assert APP_PASSWORD not in str(error)
            own_server.start()
            await wait_until(
                lambda: _works(store), "the store to work again after the restart", every=0.05
            )
        finally:
            await store.aclose()

    run(main())


async def _works(store: Postgres) -> bool:
    try:
        await store.semaphore_state("s")
    except StoreUnavailable:
        return False
    return True


def test_a_paused_server_is_unavailable_within_the_timeout(own_server: PostgresServer) -> None:
    async def main() -> None:
        store = Postgres(own_server.app_dsn(), timeout=0.2)
        try:
            assert (await store.rate("r", None, LONG, 5, 1, 0)).admitted
            own_server.pause()
            try:
                errors = await _bounded_failure(store, bound=5.0)
            finally:
                own_server.resume()
            assert all("no answer within 0.2 s" in e.reason for e in errors)
            assert all(isinstance(e.__cause__, TimeoutError) for e in errors)
            await wait_until(lambda: _works(store), "the store to answer after SIGCONT", every=0.05)
        finally:
            await store.aclose()

    run(main())


def test_first_use_of_a_stopped_server_and_a_wrong_password(own_server: PostgresServer) -> None:
    async def main() -> None:
        wrong = Postgres(own_server.app_dsn(password="not-it-" + APP_PASSWORD), timeout=2)
        with pytest.raises(StoreUnavailable) as failed:
            await wrong.rate("r", None, LONG, 5, 1, 0)
        assert "password authentication failed" in str(failed.value)
        assert APP_PASSWORD not in str(failed.value)
        assert APP_PASSWORD not in repr(wrong)
        await wrong.aclose()
        own_server.stop()
        store = Postgres(own_server.app_dsn(), timeout=2)
        with pytest.raises(StoreUnavailable):
            await store.rate("r", None, LONG, 5, 1, 0)
        own_server.start()
        assert (await store.rate("r", None, LONG, 5, 1, 0)).admitted  # connects this time
        await store.aclose()
        await store.aclose()  # idempotent
        with pytest.raises(StoreUnavailable, match="closed"):
            await store.rate("r", None, LONG, 5, 1, 0)

    run(main())


def test_a_server_that_never_answers_leaves_no_error_unretrieved(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A listener that accepts and answers nothing (a server of another kind, a hung one):
    every call fails within its timeout while the connecting goes on in the background
    until `SETUP_TIMEOUT`. Its failure, which no caller waits for any more, is not left for
    asyncio to log ("Task exception was never retrieved"), also after `aclose`."""
    from admission.stores import postgres

    monkeypatch.setattr(postgres, "SETUP_TIMEOUT", 0.3)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    logged: list[dict[str, Any]] = []

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _, context: logged.append(context))
        store = Postgres(f"postgresql://app:pw@127.0.0.1:{port}/test", timeout=0.05)
        with pytest.raises(StoreUnavailable, match=r"not connected within 0\.05 s"):
            await store.rate("r", None, LONG, 5, 1, 0)
        await asyncio.sleep(0.6)  # the connecting gave up
        del store
        gc.collect()
        closing = Postgres(f"postgresql://app:pw@127.0.0.1:{port}/test", timeout=0.05)
        with pytest.raises(StoreUnavailable):
            await closing.rate("r", None, LONG, 5, 1, 0)
        await closing.aclose()  # while connecting
        await asyncio.sleep(0.6)
        del closing
        gc.collect()

    try:
        run(main())
    finally:
        listener.close()
    assert logged == []


def test_a_store_used_on_a_second_event_loop_says_so_at_once(pg: PostgresServer) -> None:
    """A store (its connections) serves the event loop it was first used on: used from
    another (a second ``asyncio.run``, a test framework's loop per test), it says so at
    once. (Its call awaited a future of the first loop: the task threw, the guard held
    the error and handed the task the same wait again, forever, at 100 % CPU.)"""

    store = Postgres(pg.app_dsn(), timeout=1.0, sweep_interval=None)
    run(one_event_loop_per_store(store, f"loops-{time.time_ns()}"))


def test_a_dsn_option_the_driver_refuses_is_a_config_error_not_an_outage(
    pg: PostgresServer,
) -> None:
    """``?sslmode=bogus`` is refused by asyncpg when it connects: a `ConfigError` saying
    so, at every call, never `StoreUnavailable` (which counted against the breaker, and
    which on_store_error='open' answered by admitting everything, for good)."""
    from admission.stores.remote import store_breaker

    async def main() -> None:
        store = Postgres(pg.app_dsn() + "?sslmode=bogus", timeout=LOADED, sweep_interval=None)
        bucket = adm.TokenBucket(rate=5, name="bogus", store=store, on_store_error="open")
        try:
            for _ in range(6):
                with pytest.raises(ConfigError, match="sslmode") as refused:
                    await bucket.acquire(timeout=0)
                assert APP_PASSWORD not in str(refused.value)
            with pytest.raises(ConfigError, match="sslmode"):
                await store.migrate()
            assert store_breaker(store).state == "closed"
        finally:
            await store.aclose()

    run(main())


def test_credentials_are_never_shown(pg: PostgresServer) -> None:
    dsn = pg.app_dsn()
    store = Postgres(dsn)
    assert APP_PASSWORD not in repr(store)
    assert APP_PASSWORD not in store.label
    encoded = dsn.split("//")[1].split("@")[0].split(":")[1]
    assert encoded not in repr(store)
    assert encoded not in store.label
    assert store.label == f"postgresql://app:***@127.0.0.1:{pg.port}/test"
    query = Postgres(f"postgresql://app@127.0.0.1:{pg.port}/test?password=hunter2")
    assert "hunter2" not in query.label
    assert "hunter2" not in repr(query)


# ---------------------------------------------------------------------------- schema


def test_create_false_says_to_migrate_then_works(pg: PostgresServer, schema: str) -> None:
    async def main() -> None:
        store = Postgres(pg.app_dsn(), schema=schema, create=False, timeout=LOADED)
        try:
            with pytest.raises(ConfigError, match=r"run `await store.migrate\(\)`"):
                await store.rate("m", None, LONG, 1, 1, 0)
            await store.migrate()
            await store.migrate()  # idempotent
            assert (await store.rate("m", None, LONG, 1, 1, 0)).admitted
        finally:
            await store.aclose()
        version = await rows(pg, f'SELECT version FROM "{schema}".meta')
        assert [r[0] for r in version] == [_postgres_sql.VERSION]

    run(main())


def _first_use(dsn: str, schema: str, start: Any, results: Any) -> None:
    async def main() -> bool:
        store = Postgres(dsn, schema=schema, timeout=30)
        try:
            start.wait(30)
            reply = await store.rate("first", None, LONG, 100, 1, 0)
            return bool(reply.admitted)
        finally:
            await store.aclose()

    try:
        results.put(("ok", asyncio.run(main())))
    except BaseException as exc:
        results.put(("error", repr(exc)))


async def _at_version_3(pg: PostgresServer, schema: str) -> None:
    """``schema`` as the release of schema version 3 left it: without ``buckets.granted``."""
    await migrate(pg, schema)
    conn = await asyncpg.connect(pg.dsn())
    try:
        await conn.execute(
            f'ALTER TABLE "{schema}".buckets DROP COLUMN granted;'
            f' UPDATE "{schema}".meta SET version = 3'
        )
    finally:
        await conn.close()


@pytest.mark.parametrize("older", [False, True], ids=["no schema", "schema version 3"])
def test_concurrent_first_uses_from_processes_all_succeed(
    pg: PostgresServer, schema: str, older: bool
) -> None:
    """6 processes' first uses create the schema, or bring it up to this version, at once:
    every one decides (the losers of each race in the catalogs try again)."""
    if older:
        asyncio.run(_at_version_3(pg, schema))
    spawn = multiprocessing.get_context("spawn")
    start = spawn.Barrier(6)
    results = spawn.Queue()
    procs = [
        spawn.Process(target=_first_use, args=(pg.app_dsn(), schema, start, results))
        for _ in range(6)
    ]
    for proc in procs:
        proc.start()
    try:
        outcomes = [results.get(timeout=60) for _ in procs]
    finally:
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
    assert outcomes == [("ok", True)] * 6


def _overlapping_batches(
    dsn: str, schema: str, seed: int, rounds: int, start: Any, results: Any
) -> None:
    """8 tasks, each sending ``rounds`` `rate_batch` calls of 4 to 12 requests on keys drawn
    in random order from 12 that every process shares: half of them each key once (decided
    by the plain ``rate_each`` statement), half with keys repeated at random costs (mostly
    the ``rate_batch`` function; the plain statement where each key's costs agree), so
    that the two race each other too."""

    async def main() -> tuple[dict[bytes, int], list[str]]:
        import random

        rng = random.Random(seed)
        store = Postgres(dsn, schema=schema, timeout=LOADED)
        charged: dict[bytes, int] = {}  # key -> admitted cost
        errors: list[str] = []

        async def task() -> None:
            for _ in range(rounds):
                size = rng.randint(4, 12)
                if rng.random() < 0.5:  # each key once: the plain statement (rate_each)
                    keys = rng.sample(range(12), size)
                else:  # some keys repeated: mostly the rate_batch function
                    keys = [rng.randrange(12) for _ in range(size)]
                batch = [(b"k%d" % key, rng.randint(1, 3), 0) for key in keys]
                try:
                    replies = await store.rate_batch("overlap", LONG, 10**5, batch)
                except StoreUnavailable as exc:
                    errors.append(exc.reason)
                    continue
                for (key, cost, _), reply in zip(batch, replies, strict=True):
                    assert reply.admitted
                    charged[key] = charged.get(key, 0) + cost

        try:
            await store.rate("warm", None, LONG, 1, 1, 0)  # connected before the start
            start.wait(30)
            await asyncio.gather(*(task() for _ in range(8)))
        finally:
            await store.aclose()
        return charged, errors

    try:
        results.put(("ok", asyncio.run(main())))
    except BaseException as exc:
        results.put(("error", repr(exc)))


def test_batches_over_overlapping_keys_from_processes_never_deadlock(
    pg: PostgresServer, schema: str
) -> None:
    """4 processes x 8 tasks send `rate_batch` calls over overlapping random key sets (12
    keys, 4-12 requests each, in random order): every call decides, none fails with
    PostgreSQL's "deadlock detected" (each call locks its rows in one order: by_bucket's),
    and each bucket holds exactly the charges made on it (its TAT is the clock of its first
    charge, within the run, plus an interval per token charged: nothing lost, nothing
    applied twice)."""
    spawn = multiprocessing.get_context("spawn")
    start = spawn.Barrier(4)
    results = spawn.Queue()
    rounds = 30
    procs = [
        spawn.Process(
            target=_overlapping_batches,
            args=(pg.app_dsn(), schema, seed, rounds, start, results),
        )
        for seed in range(4)
    ]
    clock = f"SELECT {_postgres_sql._NOW}"
    began = run(rows(pg, clock))[0][0]
    for proc in procs:
        proc.start()
    try:
        outcomes = [results.get(timeout=180) for _ in procs]
    finally:
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
    assert [kind for kind, _ in outcomes] == ["ok"] * 4, outcomes
    errors = [error for _, (_, errs) in outcomes for error in errs]
    assert errors == []
    ended = run(rows(pg, clock))[0][0]
    charged: dict[bytes, int] = {}
    for _, (counts, _) in outcomes:
        for key, cost in counts.items():
            charged[key] = charged.get(key, 0) + cost
    tats = run(rows(pg, f'SELECT key, tat FROM "{schema}".buckets WHERE name = $1', "overlap"))
    assert len(tats) == len(charged) == 12
    for stored_key, tat in tats:
        first_charge = tat - charged[bytes(stored_key)[1:]] * LONG
        assert began <= first_charge <= ended, stored_key


# ---------------------------------------------------------------------------- sweeping


def test_sweep_removes_expired_rows_only(pg: PostgresServer, schema: str) -> None:
    async def main() -> None:
        store = Postgres(pg.app_dsn(), schema=schema, timeout=5)
        try:
            for i in range(25):
                await store.rate("short", str(i).encode(), 1, 1, 1, 0)  # full after 1 µs
            await store.rate("long", None, LONG, 1, 1, 0)
            await store.semaphore_acquire("s1", 1, "gone", 1, True)  # expires after 1 µs
            await store.semaphore_acquire("s2", 1, "kept", LONG, True)
            await asyncio.sleep(0.01)
            assert await store.sweep(batch=10) == 26  # three batches of buckets
            left = await rows(pg, f'SELECT name FROM "{schema}".buckets')
            assert [r[0] for r in left] == ["long"]
            leases = await rows(pg, f'SELECT holder FROM "{schema}".leases')
            assert [r[0] for r in leases] == ["kept"]
            assert await store.sweep() == 0
            with pytest.raises(ValueError, match="batch"):
                await store.sweep(batch=0)
        finally:
            await store.aclose()

    run(main())


def test_sweep_blocks_no_decider_and_waits_for_none(pg: PostgresServer, schema: str) -> None:
    async def main() -> None:
        store = Postgres(pg.app_dsn(), schema=schema, timeout=5)
        blocker = await asyncpg.connect(pg.dsn())
        try:
            for i in range(20):
                await store.rate("e", str(i).encode(), 1, 1, 1, 0)
            await asyncio.sleep(0.01)
            # A decision in flight: its row locked by an open transaction.
            tx = blocker.transaction()
            await tx.start()
            await blocker.execute(
                f'SELECT 1 FROM "{schema}".buckets WHERE key = $1 FOR UPDATE', b"\x01" + b"7"
            )
            # The sweep skips that row instead of waiting for it (bounded: a wait would hang).
            assert await asyncio.wait_for(store.sweep(batch=3), 10) == 19
            await tx.rollback()
            assert await store.sweep() == 1

            # Deciders and sweeps at once: every decision is made, none fails.
            async def decide() -> int:
                admitted = 0
                for i in range(40):
                    admitted += (await store.rate("e", str(i % 8).encode(), 1, 1, 1, 0)).admitted
                return admitted

            async def sweep_loop(stop: asyncio.Event) -> int:
                sweeps = 0
                while not stop.is_set():
                    await store.sweep(batch=2)
                    sweeps += 1
                return sweeps

            stop = asyncio.Event()
            sweeping = asyncio.ensure_future(sweep_loop(stop))
            counts = await asyncio.wait_for(asyncio.gather(*(decide() for _ in range(4))), 60)
            stop.set()
            assert await sweeping > 0
            assert all(0 < c <= 40 for c in counts)
        finally:
            await blocker.close()
            await store.aclose()

    run(main())


# ---------------------------------------------------------------------------- pools


def test_given_pools_are_used_and_left_open(pg: PostgresServer, schema: str) -> None:
    async def main() -> None:
        pool = await asyncpg.create_pool(pg.app_dsn(), min_size=1, max_size=2)
        store = Postgres(pool=pool, schema=schema, timeout=LOADED)
        assert store.label == f"postgresql://app:***@127.0.0.1:{pg.port}/test"
        assert store._secrets  # its DSN's password is scrubbed from driver messages too
        assert (await store.rate("p", None, LONG, 1, 1, 0)).admitted
        await store.aclose()
        assert await pool.fetchval("SELECT 1") == 1  # not closed by the store
        await pool.close()

        manager = adm.PoolManager({"rag": adm.PoolConfig(pg.app_dsn(), min_size=1, max_size=2)})
        async with manager:
            store = Postgres(pool=(manager, "rag"), schema=schema)
            assert store.label == "PoolManager pool 'rag'"
            assert not (await store.rate("p", None, LONG, 1, 1, 0)).admitted  # same bucket
            await store.aclose()
            async with manager.connection("rag") as conn:
                assert await conn.fetchval("SELECT 1") == 1

    run(main())


def test_bad_arguments_are_refused_at_once(pg: PostgresServer) -> None:
    with pytest.raises(TypeError, match="exactly one of dsn= and pool="):
        Postgres()
    with pytest.raises(TypeError, match="exactly one of dsn= and pool="):
        Postgres(pg.dsn(), pool=object())
    with pytest.raises(TypeError, match="asyncpg pool or \\(PoolManager, pool name\\)"):
        Postgres(pool=object())
    manager = adm.PoolManager({"rag": adm.PoolConfig(pg.app_dsn())})
    with pytest.raises(ValueError, match="no pool 'other'"):
        Postgres(pool=(manager, "other"))
    with pytest.raises(ValueError, match="schema must be an identifier"):
        Postgres(pg.dsn(), schema='x"; drop table y; --')
    # PostgreSQL reserves the prefix for its own schemas: every call would fail, as if the
    # store were down (StoreUnavailable, the breaker, on_store_error), and never recover.
    with pytest.raises(ValueError, match="reserved"):
        Postgres(pg.dsn(), schema="pg_admission")
    with pytest.raises(ValueError, match="timeout"):
        Postgres(pg.dsn(), timeout=0)
    with pytest.raises(ValueError, match="cannot be used") as bad:
        Postgres("postgresql://app:pa#ss@db/x")
    assert "pa#ss" not in str(bad.value)
    # Refused before any round trip (the store was never connected).
    store = Postgres(pg.app_dsn(), timeout=LOADED)
    with pytest.raises(ValueError, match=f"1 to {RATE_MANY_MAX} requests"):
        run(store.rate_batch("x", LONG, 2, []))
    with pytest.raises(ValueError, match="between 1 and burst"):
        run(store.rate_batch("x", LONG, 2, [(b"a", 3, 0)]))
    with pytest.raises(ValueError, match="a key must be bytes or None"):
        run(store.rate_batch("x", LONG, 2, [(7, 1, 0)]))  # type: ignore[list-item]
    assert store._own is None
    assert store.rate_batch_is_one_round_trip  # one statement: the limiters batch keys


# ---------------------------------------------------------------------------- PgBouncer


def test_no_session_state_is_relied_on(pg: PostgresServer, schema: str) -> None:
    """What PgBouncer's transaction pooling needs: every statement complete by itself. The
    pool here wipes the session (DISCARD ALL: prepared statements too) and asyncpg prepares
    nothing by name (statement_cache_size=0), as through PgBouncer before 1.21."""
    texts = " ".join(_postgres_sql.statements(schema).values()).lower()
    for session_thing in ("advisory", "temp ", "temporary", "listen", "set local", "set session"):
        assert session_thing not in texts

    async def wipe(conn: Any) -> None:
        await conn.execute("DISCARD ALL")

    async def main() -> None:
        pool = await asyncpg.create_pool(
            pg.app_dsn(), min_size=2, max_size=2, reset=wipe, statement_cache_size=0
        )
        store = Postgres(pool=pool, schema=schema, timeout=LOADED)
        try:
            await store.register("Semaphore", "pb", {"limit": 1})
            reply = await store.rate("pb", b"k", LONG, 2, 1, 0)
            assert reply.admitted
            assert await store.rate_give_back("pb", b"k", LONG, 1, reply.tat_us)
            granted = await store.semaphore_acquire("pb", 1, "a", LONG, True)
            assert granted.granted
            assert not (await store.semaphore_acquire("pb", 1, "b", LONG, True)).granted
            assert await store.semaphore_renew("pb", ["a"], LONG) == [True]
            assert await store.semaphore_state("pb") == (1, 1)
            assert await store.semaphore_release("pb", "a")
            assert await store.sweep() == 1  # the bucket, full again after the give-back
        finally:
            await store.aclose()
            await pool.close()

    run(main())


# ---------------------------------------------------------------------------- the driver


def test_import_works_without_asyncpg_and_the_store_says_what_to_install() -> None:
    code = (
        "import sys; sys.modules['asyncpg'] = None\n"
        "import admission, admission.stores\n"
        "try:\n"
        "    admission.stores.Postgres('postgresql://h/db')\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == (
        "admission.stores.Postgres needs asyncpg: pip install 'admission[postgres]'"
    )


def test_a_dead_waiter_drops_out_of_the_queue_before_its_lease(
    pg: PostgresServer, schema: str
) -> None:
    """store_contract.py's check: a queue entry outlives its waiter's last ask by
    QUEUE_ENTRY_US at most, whatever the lease."""

    async def main() -> None:
        store = Postgres(pg.app_dsn(), schema=schema, timeout=LOADED)
        try:
            await a_dead_waiters_entry_expires_before_its_lease(store, "dead")
        finally:
            await store.aclose()

    asyncio.run(main())


def test_semaphores_answer_as_the_contracts_reference_does(pg: PostgresServer, schema: str) -> None:
    """The Redis store's check too (store_contract.py): several free leases go to as many
    waiters at the head of the queue at once, as MemoryStore decides."""

    async def main() -> None:
        store = Postgres(pg.app_dsn(), schema=schema, timeout=LOADED)
        try:
            await semaphores_answer_as_the_reference(store, "ref", LONG)
        finally:
            await store.aclose()

    asyncio.run(main())


def test_rates_coalesced_or_not_answer_as_the_contracts_reference_does(
    pg: PostgresServer, schema: str
) -> None:
    """`rate_many` and `rate_batch` (one statement each: the schema's functions, or the
    plain ``rate_each`` statement) answer as MemoryStore's one-after-the-other `rate` calls
    at the same server now, interleaved with single `rate` statements and give-backs
    (store_contract.py), for a bucket and a keyed bucket's keys. Each statement is
    exercised, the plain one also on batches with a bucket repeated."""

    async def main() -> None:
        store = Postgres(pg.app_dsn(), schema=schema, timeout=LOADED)
        used: collections.Counter[str] = collections.Counter()
        call = store._call

        async def counted(method: str, statement: str, *args: Any) -> Any:
            used[statement] += 1
            return await call(method, statement, *args)

        store._call = counted  # type: ignore[method-assign]
        try:
            await rates_answer_as_the_reference(store, "ref")
        finally:
            await store.aclose()
        for statement in ("rate", "rate_many", "rate_batch", "rate_each", "rate_each_counted"):
            assert used[statement] >= 10, used

    asyncio.run(main())


@pytest.mark.parametrize(
    ("burst", "requests", "statement"),
    [
        (5, [(b"a", 2, 0), (b"b", 2, 0), (None, 1, 0)], "rate_each"),
        (5, [(b"a", 1, 0), (b"b", 2, 0), (b"a", 1, 0), (None, 1, 0)], "rate_each_counted"),
        (2, [(b"a", 1, 0), (b"a", 1, 0), (b"a", 1, 0)], "rate_batch"),  # 3 > a full bucket
        (2, [(b"a", 1, -1), (b"a", 1, -1), (b"a", 1, -1)], "rate_each_counted"),  # any wait
        (2, [(b"a", 1, 2 * LONG), (b"a", 1, 2 * LONG)] * 2, "rate_each_counted"),  # 2 waited
        (5, [(b"a", 1, 0), (b"a", 2, 0)], "rate_batch"),  # a bucket at two costs
        (5, [(b"a", 1, 0), (b"b", 1, 1)], "rate_batch"),  # two max waits
    ],
    ids=[
        "each key once",
        "hot key",
        "more than a burst",
        "any wait",
        "within the wait",
        "costs",
        "waits",
    ],
)
def test_a_batch_goes_as_the_plain_statement_where_it_decides_it(
    pg: PostgresServer,
    schema: str,
    burst: int,
    requests: list[tuple[bytes | None, int, int]],
    statement: str,
) -> None:
    """A batch whose requests share one max wait, each bucket's at one cost, is one plain
    statement (``rate_each``; ``rate_each_counted`` where a bucket repeats) when a full
    bucket admits all of each bucket's requests within that wait (its new row is the
    outcome); others go to the ``rate_batch`` function. Both answer as MemoryStore does,
    on a new bucket and again on the same rows."""

    async def main() -> None:
        store = Postgres(pg.app_dsn(), schema=schema, timeout=LOADED, sweep_interval=None)
        used: list[str] = []
        call = store._call

        async def spied(method: str, name: str, *args: Any) -> Any:
            used.append(name)
            return await call(method, name, *args)

        store._call = spied  # type: ignore[method-assign]
        now = [0]
        reference = adm.stores.MemoryStore(clock=lambda: Fraction(now[0], SECOND))
        try:
            for _ in range(2):
                got = await store.rate_batch("plain", LONG, burst, requests)
                want = []
                for (key, cost, wait), reply in zip(requests, got, strict=True):
                    now[0] = reply.now_us
                    want.append(await reference.rate("plain", key, LONG, burst, cost, wait))
                assert got == want
        finally:
            await store.aclose()
        assert used == [statement, statement]

    asyncio.run(main())


def test_own_connections_are_bounded_and_replaced_once_the_server_ends_them(
    pg: PostgresServer, schema: str
) -> None:
    """A store made from a DSN holds at most OWN_POOL_SIZE connections of its own however
    many calls are in flight; connections the server ended while idle (an idle timeout, a
    restart: here pg_terminate_backend) are replaced by the next calls, not failed on."""
    from admission.stores.postgres import OWN_POOL_SIZE

    async def main() -> None:
        store = Postgres(pg.app_dsn(), schema=schema, timeout=LOADED)
        try:
            replies = await asyncio.gather(
                *(store.rate("own", b"%d" % i, LONG, 1, 1, 0) for i in range(64))
            )
            assert all(r.admitted for r in replies)
            own = store._own
            assert own is not None
            assert own.open == len(own.idle) == OWN_POOL_SIZE
            pids = [conn.get_server_pid() for conn in own.idle]
            ended = await rows(pg, "SELECT pg_terminate_backend(p) FROM unnest($1::int[]) p", pids)
            assert all(r[0] for r in ended)
            idle = own.idle
            await wait_until(lambda: all(c.is_closed() for c in idle), "the ends seen")
            replies = await asyncio.gather(
                *(store.rate("own", b"x%d" % i, LONG, 1, 1, 0) for i in range(3))
            )
            assert all(r.admitted for r in replies)
            assert not set(own.idle) & set(idle)  # replaced
            assert own.open == len(own.idle) == 3  # the dead ones are no longer counted
        finally:
            await store.aclose()
        assert store._own.open == 0

    asyncio.run(main())


async def migrate(pg: PostgresServer, schema: str) -> None:
    """`Postgres.migrate` of ``schema`` by a store of its own, closed after."""
    store = Postgres(pg.app_dsn(), schema=schema, timeout=LOADED)
    try:
        await store.migrate()
    finally:
        await store.aclose()


def test_the_upgrade_never_holds_up_the_tables_users_behind_a_lock_it_waits_for(
    pg: PostgresServer, schema: str
) -> None:
    """Adding version 4's column takes the buckets table's exclusive lock. While another
    session holds a lock on the table (an open transaction that read it), the upgrade's
    request waits 50 ms at most each time, so the statements queued behind that request
    (every decision) go on; `migrate` tries again, reports the lock if it is never free,
    and succeeds once it is. Without the limit, the other statements here would wait as
    long as the holder does."""

    async def main() -> None:
        await _at_version_3(pg, schema)
        holder = await asyncpg.connect(pg.dsn())
        reader = await asyncpg.connect(pg.dsn())
        try:
            transaction = holder.transaction()
            await transaction.start()
            await holder.execute(f'SELECT count(*) FROM "{schema}".buckets')
            upgrade = asyncio.ensure_future(migrate(pg, schema))
            for _ in range(10):  # each would wait for the holder behind the upgrade's request
                await asyncio.wait_for(
                    reader.fetchval(f'SELECT count(*) FROM "{schema}".buckets'), 10
                )
                await asyncio.sleep(0.02)
            with pytest.raises(StoreUnavailable, match="lock timeout"):
                await asyncio.wait_for(upgrade, 30)
            await transaction.rollback()
            await migrate(pg, schema)
            assert await reader.fetchval(f'SELECT version FROM "{schema}".meta') == 4
        finally:
            await holder.close()
            await reader.close()

    asyncio.run(main())


@pytest.mark.parametrize("older", [1, 2, 3])
def test_an_older_schema_is_brought_up_to_this_version(
    pg: PostgresServer, schema: str, older: int
) -> None:
    """Version 2 added the rate_many function, 3 the rate_batch one, 4 the buckets' granted
    column: a schema left at 1, 2 or 3 (with rows in its buckets) is refused without create
    (saying to migrate), and brought up by the first use with it, after which every way of
    deciding works on the old rows and new ones."""

    async def main() -> None:
        await migrate(pg, schema)
        conn = await asyncpg.connect(pg.dsn())
        try:
            functions = {1: ["rate_batch", "rate_many"], 2: ["rate_batch"], 3: []}[older]
            dropped = "".join(f'DROP FUNCTION "{schema}".{function};' for function in functions)
            await conn.execute(
                f'{dropped} ALTER TABLE "{schema}".buckets DROP COLUMN granted;'
                f' UPDATE "{schema}".meta SET version = {older};'
                f""" INSERT INTO "{schema}".buckets VALUES ('v', '\\x0161', 0, 0, true)"""
            )
        finally:
            await conn.close()
        strict = Postgres(pg.app_dsn(), schema=schema, create=False, timeout=LOADED)
        try:
            with pytest.raises(ConfigError, match=rf"is at {older} \(this version needs 4\)"):
                await strict.rate_batch("v", LONG, 2, [(b"a", 1, 0)])
        finally:
            await strict.aclose()
        store = Postgres(pg.app_dsn(), schema=schema, timeout=LOADED)
        try:
            replies = await store.rate_many("v", None, LONG, 2, [(1, 0), (1, 0), (1, 0)])
            assert [r.admitted for r in replies] == [True, True, False]
            batch = [(b"a", 1, 0), (b"b", 2, 0), (b"a", 2, 0), (None, 1, 0)]
            replies = await store.rate_batch("v", LONG, 2, batch)
            assert [r.admitted for r in replies] == [True, True, False, False]
            batch = [(b"c", 1, 0), (b"a", 1, 0), (b"c", 1, 0), (b"a", 1, 0)]  # rate_each
            replies = await store.rate_batch("v", LONG, 2, batch)
            assert [r.admitted for r in replies] == [True, True, True, False]
        finally:
            await store.aclose()
        version = await rows(pg, f'SELECT version FROM "{schema}".meta')
        assert [r[0] for r in version] == [4]

    asyncio.run(main())


def test_a_schema_is_never_lowered_and_a_later_or_written_back_one_is_used(
    pg: PostgresServer, schema: str
) -> None:
    """Rolling upgrades: a process of the previous release, made with create=True, wrote
    its version (1) over the schema's unconditionally; this release then still uses a
    schema that has its objects (create=False included) and, with create, marks it 4
    again. A schema at a later version (5) is used as it is: this release's creation and
    `migrate` never lower it."""

    async def version() -> int:
        return int((await rows(pg, f'SELECT version FROM "{schema}".meta'))[0][0])

    async def decides(create: bool) -> None:
        store = Postgres(pg.app_dsn(), schema=schema, create=create, timeout=LOADED)
        try:
            assert (await store.rate("r", None, LONG, 2, 1, 0)).tat_us > 0
            assert len(await store.rate_many("m", None, LONG, 2, [(1, 0)])) == 1
            assert len(await store.rate_batch("m", LONG, 2, [(b"x", 1, 0), (b"y", 1, 0)])) == 2
        finally:
            await store.aclose()

    async def main() -> None:
        await migrate(pg, schema)
        conn = await asyncpg.connect(pg.dsn())
        try:
            # The previous release's creation ends with this statement (verbatim).
            await conn.execute(
                f'INSERT INTO "{schema}".meta (id, version) VALUES (true, 1)'
                " ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version"
            )
            assert await version() == 1
            await decides(create=False)
            assert await version() == 1
            await decides(create=True)
            assert await version() == 4
            await conn.execute(f'UPDATE "{schema}".meta SET version = 5')
            await decides(create=False)
            await decides(create=True)
            await migrate(pg, schema)
            assert await version() == 5
            # This release's creation text itself never lowers it either.
            await conn.execute(_postgres_sql.statements(schema)["schema"])
            assert await version() == 5
        finally:
            await conn.close()

    asyncio.run(main())


@pytest.mark.parametrize(
    "queued",
    [(("hot", 1), ("a", 1), ("b", 1)), (("hot", 1), ("a", 1), ("a", 2))],
    ids=["the rate_each statement", "a key at two costs: the rate_batch function"],
)
def test_a_row_locked_by_another_session_holds_up_only_its_own_keys(
    pg: PostgresServer, schema: str, queued: tuple[tuple[str, int], ...]
) -> None:
    """Another session holds key ``hot``'s row locked (a slow or stuck transaction). The
    keys queued with it in one batch wait for it at most a quarter of the timeout, then are
    decided each on its own (`BatchContended`): the others are admitted while the lock is
    still held; ``hot`` when it goes. Both ways a batch is decided bound the wait."""

    async def main() -> None:
        store = Postgres(pg.app_dsn(), schema=schema, timeout=8.0)  # rows waited for 2 s
        holder = await asyncpg.connect(pg.dsn())
        try:
            per_user = adm.KeyedTokenBucket(
                rate=1, per=3600, burst=100, name="h", store=store, on_store_error="closed"
            )
            await per_user.acquire("hot", timeout=0)  # its row exists
            transaction = holder.transaction()
            await transaction.start()
            await holder.execute(
                f"SELECT 1 FROM {schema}.buckets WHERE name = 'h' AND key = $1 FOR UPDATE",
                b"\x01hot",
            )
            first = asyncio.ensure_future(per_user.acquire("x", timeout=0))
            await asyncio.sleep(0)  # x's round trip in flight: the others queue behind it
            hot, a, b = (
                asyncio.ensure_future(per_user.acquire(key, cost, timeout=0))
                for key, cost in queued
            )
            await first
            await asyncio.gather(a, b)  # admitted (each raises otherwise), the lock still held
            assert not hot.done()
            await transaction.rollback()
            await hot
            stats = per_user.stats()
            assert (stats.admitted, stats.rejected) == (5, 0)
        finally:
            await holder.close()
            await store.aclose()

    run(main())


@pytest.mark.parametrize("batch", [False, True], ids=["rate", "rate_each"])
def test_a_decision_that_waited_for_its_row_is_charged_on_the_clock_after_the_wait(
    pg: PostgresServer, schema: str, batch: bool
) -> None:
    """A full bucket (10 ms interval, burst 5) whose row another session holds for 300 ms
    without changing it: a decision of the whole burst waits for the row, then is charged
    on the server's clock read after the wait, so a second one right after is refused. On
    the clock read before the wait (as the statements did), the bucket handed out the 300
    ms it waited as refill: the burst twice within a millisecond."""
    interval, burst = 10_000, 5

    async def main() -> None:
        store = Postgres(pg.app_dsn(), schema=schema, timeout=4.0, sweep_interval=None)
        holder = await asyncpg.connect(pg.dsn())
        try:
            await store.rate("stale", b"k", interval, burst, 1, 0)  # its row exists
            await asyncio.sleep(0.1)  # and the bucket is full again
            transaction = holder.transaction()
            await transaction.start()
            await holder.execute(
                f"SELECT 1 FROM {schema}.buckets WHERE name = 'stale' AND key = $1 FOR UPDATE",
                b"\x01k",
            )
            if batch:  # each key once, one max wait: the plain statement
                requests = [(b"k", burst, 0), (b"other", 1, 0)]
                decided = asyncio.ensure_future(
                    store.rate_batch("stale", interval, burst, requests)
                )
            else:
                decided = asyncio.ensure_future(
                    asyncio.gather(store.rate("stale", b"k", interval, burst, burst, 0))
                )
            await asyncio.sleep(0.3)
            assert not decided.done()  # waiting for the row
            await transaction.rollback()
            first = (await decided)[0]
            again = await store.rate("stale", b"k", interval, burst, burst, 0)
            assert first.admitted
            assert not again.admitted, (first, again)
            assert again.wait_us > burst * interval - 100_000  # nearly the whole burst's time
        finally:
            await holder.close()
            await store.aclose()

    run(main())


def test_a_batch_on_a_store_with_a_timeout_of_months_is_decided(
    pg: PostgresServer, schema: str
) -> None:
    """A batch's wait for its rows is a quarter of the store's timeout, within the server's
    range for ``lock_timeout`` (2**31 - 1 ms, about 25 days): a timeout of 116 days is not
    refused by the server, by either way a batch is decided."""

    async def main() -> None:
        store = Postgres(pg.app_dsn(), schema=schema, timeout=1e7, sweep_interval=None)
        try:
            for requests in ([(b"a", 1, 0), (b"b", 1, 0)], [(b"a", 1, 0), (b"a", 1, 0)]):
                replies = await store.rate_batch("months", SECOND, 10, requests)
                assert [reply.admitted for reply in replies] == [True, True]
        finally:
            await store.aclose()

    run(main())


def test_absurd_waits_and_buckets_answer_exactly_or_are_refused(
    pg: PostgresServer, schema: str
) -> None:
    """store_contract.py's check of the stores' range (MAX_SPAN_US): a batch of 1,024
    requests with a thousand-year wait (or none) answers as MemoryStore does, and a bucket
    or lease past the range is a ValueError before any statement (bigint arithmetic raised
    "out of range" there, which reached the caller as asyncpg's exception)."""

    async def main() -> None:
        store = Postgres(pg.app_dsn(), schema=schema, timeout=LOADED)
        try:
            await absurd_waits_and_buckets_stay_exact(store, "absurd")
        finally:
            await store.aclose()

    asyncio.run(main())
