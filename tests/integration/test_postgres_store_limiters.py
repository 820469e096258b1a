"""The limiters of `admission.stores.remote` on `admission.stores.Postgres`, end to end: several
processes (spawn) sharing one limit through a real PostgreSQL server, a keyed limiter with 10k
keys, a distributed semaphore with a holder killed by SIGKILL, a server restart under load in
each ``on_store_error`` mode, and clients whose local clocks disagree.

Every wait is bounded; every process started is joined or killed by pid. The stores' timeout
is raised from 0.1 s to a few seconds where many processes load the shared 2-core machine:
these tests are about the limits, the timeout has its own tests (test_postgres_store.py).
"""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import asyncpg
import pytest
from postgres import PostgresServer, run, wait_until

import admission as adm
from admission.stores.postgres import Postgres

SPAWN = multiprocessing.get_context("spawn")


def _start(target: Callable[..., None], *args: Any) -> multiprocessing.process.BaseProcess:
    proc = SPAWN.Process(target=target, args=args)
    proc.start()
    return proc


def _collect(results: Any, count: int, procs: list[Any], within: float = 120.0) -> list[Any]:
    """``count`` results from the children; joins them, killing any still alive."""
    try:
        got = [results.get(timeout=within) for _ in range(count)]
    finally:
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                os.kill(proc.pid, signal.SIGKILL)
                proc.join(10)
    errors = [r for r in got if isinstance(r, tuple) and r and r[0] == "error"]
    assert not errors, errors
    return got


# ------------------------------------------------------------------ one bucket, 4 processes

RATE = 100
BURST = 10
SECONDS = 5.0


def _hammer(dsn: str, start: Any, results: Any) -> None:
    async def main() -> tuple[list[float], float, float]:
        store = Postgres(dsn, timeout=5)
        bucket = adm.TokenBucket(rate=RATE, per=1, burst=BURST, name="shared", store=store)
        await store.migrate()
        # Every connection the 20 tasks use opened before the start (a SCRAM handshake each).
        await asyncio.gather(*(store.rate("warm-up", None, 1, 100, 1, 0) for _ in range(20)))
        start.wait(60)
        began = time.time()
        deadline = time.monotonic() + SECONDS
        admitted: list[float] = []  # when each admitted request's turn came (it slept till then)
        refused = 0

        async def task() -> None:
            nonlocal refused
            while (left := deadline - time.monotonic()) > 0:
                try:
                    await bucket.acquire(timeout=left)  # charged only if its turn is in time
                    admitted.append(time.time())
                except adm.AcquireTimeout:
                    refused += 1

        try:
            await asyncio.gather(*(task() for _ in range(20)))
            stats = bucket.stats()
            assert stats.admitted == len(admitted)
            assert stats.timed_out == refused
            assert stats.rejected == stats.cancelled == 0
            return admitted, began, began + SECONDS
        finally:
            await store.aclose()

    try:
        results.put(asyncio.run(main()))
    except BaseException as exc:
        results.put(("error", repr(exc)))


def test_four_processes_share_one_bucket_within_the_gcra_bound(pg: PostgresServer) -> None:
    start = SPAWN.Barrier(4)
    results = SPAWN.Queue()
    procs = [_start(_hammer, pg.app_dsn(), start, results) for _ in range(4)]
    outcomes = _collect(results, 4, procs)
    first = min(o[1] for o in outcomes)
    last = max(o[2] for o in outcomes)
    # Admissions whose turn came within the run: a turn can come a round trip after a
    # client's deadline (the wait it allows is counted from when it asked), those are not.
    admitted = sum(first <= t <= last for o in outcomes for t in o[0])
    bound = BURST + RATE * (last - first)  # the most a GCRA admits in the span (full at first)
    assert admitted <= bound + 1
    assert admitted >= 0.98 * (BURST + RATE * SECONDS), (admitted, bound)


# ------------------------------------------------------------------ 10k keys


def test_a_keyed_bucket_with_ten_thousand_keys(pg: PostgresServer) -> None:
    keys = 10_000

    async def main() -> None:
        pool = await asyncpg.create_pool(pg.app_dsn(), min_size=8, max_size=8)
        store = Postgres(pool=pool, timeout=10)
        per_user = adm.KeyedTokenBucket(rate=1, per=3600, burst=1, name="users", store=store)
        try:
            sem = asyncio.Semaphore(32)

            async def twice(key: str) -> tuple[bool, bool]:
                outcomes = []
                async with sem:
                    for _ in range(2):
                        try:
                            await per_user.acquire(key, timeout=0)
                            outcomes.append(True)
                        except adm.AcquireTimeout:
                            outcomes.append(False)
                return outcomes[0], outcomes[1]

            replies = await asyncio.gather(*(twice(f"user:{i}") for i in range(keys)))
            assert replies == [(True, False)] * keys  # each key alone: one, then none
            stats = per_user.stats()
            assert (stats.admitted, stats.timed_out) == (keys, keys)
            rows = await pool.fetchval(
                "SELECT count(*) FROM admission.buckets WHERE name = 'users'"
            )
            assert rows == keys
        finally:
            await store.aclose()
            await pool.close()

    run(main(), timeout=300)


# ------------------------------------------------------------------ semaphore of 5, 4 processes

LIMIT = 5


def _hold_permits(dsn: str, start: Any, results: Any, rounds: int) -> None:
    async def main() -> list[list[int]]:
        store = Postgres(dsn, timeout=5)
        sem = adm.Semaphore(LIMIT, name="db", store=store, lease="30s")  # >= 6 timeouts
        await store.migrate()
        start.wait(60)

        async def task() -> list[int]:
            fences = []
            for _ in range(rounds):
                async with sem as lease:
                    fences.append(lease.fence)
                    await asyncio.sleep(0.005)
            return fences

        try:
            return list(await asyncio.gather(*(task() for _ in range(4))))
        finally:
            await store.aclose()

    try:
        results.put(asyncio.run(main()))
    except BaseException as exc:
        results.put(("error", repr(exc)))


def _hold_until_killed(dsn: str, results: Any) -> None:
    async def main() -> None:
        store = Postgres(dsn, timeout=1)
        sem = adm.Semaphore(LIMIT, name="kill", store=store, lease="6s")  # >= 6 timeouts
        lease = await sem.acquire(timeout=10)
        results.put(("holding", lease.fence))
        await asyncio.sleep(600)  # killed long before

    asyncio.run(main())


def test_a_semaphore_of_five_across_four_processes(pg: PostgresServer) -> None:
    start = SPAWN.Barrier(4)
    results = SPAWN.Queue()
    procs = [_start(_hold_permits, pg.app_dsn(), start, results, 15) for _ in range(4)]

    async def watch(stop: Callable[[], bool]) -> int:
        conn = await asyncpg.connect(pg.dsn())
        most = 0
        try:
            await wait_until(_has_table(conn), "the schema", within=60)
            while not stop():
                valid = await conn.fetchval(
                    "SELECT count(*) FROM admission.leases WHERE name = 'db' AND "
                    "expires > (extract(epoch FROM clock_timestamp()) * 1000000)::bigint"
                )
                most = max(most, valid)
                await asyncio.sleep(0.001)
        finally:
            await conn.close()
        return most

    async def main() -> tuple[int, list[Any]]:
        loop = asyncio.get_running_loop()
        collected: list[Any] = []
        collecting = loop.run_in_executor(
            None, lambda: collected.extend(_collect(results, 4, procs))
        )
        most = await watch(collecting.done)
        await collecting
        return most, collected

    most, outcomes = run(main(), timeout=300)
    assert 0 < most <= LIMIT  # never more than 5 valid leases at once, as the server sees
    for per_task in outcomes:
        for fences in per_task:  # one task's grants, one after another: increasing tokens
            assert all(a < b for a, b in itertools.pairwise(fences)), fences
    every = [f for per_task in outcomes for fences in per_task for f in fences]
    assert len(set(every)) == len(every) == 4 * 4 * 15  # no token granted twice


def _has_table(conn: Any) -> Callable[[], Any]:
    async def check() -> bool:
        return bool(await conn.fetchval("SELECT to_regclass('admission.leases') IS NOT NULL"))

    return check


def test_a_killed_holders_lease_comes_back_after_lease(pg: PostgresServer) -> None:
    results = SPAWN.Queue()
    victim = _start(_hold_until_killed, pg.app_dsn(), results)
    try:
        kind, victim_fence = results.get(timeout=60)
        assert kind == "holding"

        async def main() -> None:
            store = Postgres(pg.app_dsn(), timeout=1)
            sem = adm.Semaphore(LIMIT, name="kill", store=store, lease="6s")
            try:
                others = [await sem.acquire(timeout=5) for _ in range(LIMIT - 1)]
                assert await sem.state() == (LIMIT, 0)
                with pytest.raises(adm.AcquireTimeout):
                    await sem.acquire(timeout=0)  # all five held, one by the victim
                os.kill(victim.pid, signal.SIGKILL)
                victim.join(10)
                # Its lease runs out on the server's clock (6 s), nobody releases it.
                last = await sem.acquire(timeout=30)
                assert last.fence > max(victim_fence, *(o.fence for o in others))
                for lease in [*others, last]:
                    assert await sem.release_and_wait(lease)
                assert await sem.state() == (0, 0)
            finally:
                await store.aclose()

        run(main())
    finally:
        if victim.is_alive():
            os.kill(victim.pid, signal.SIGKILL)
        victim.join(10)


# ------------------------------------------------------------------ restart under load


@pytest.fixture
def own_server() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server


@pytest.mark.parametrize("mode", ["closed", "open", "local"])
def test_a_store_restart_under_load(own_server: PostgresServer, mode: str) -> None:
    """Tasks keep acquiring while the server stops and starts again: nothing hangs, every
    attempt ends in exactly one outcome, and each mode does what it says meanwhile."""

    async def main() -> None:
        store = Postgres(own_server.app_dsn(), timeout=0.5)
        options: dict[str, Any] = {"on_store_error": mode}
        if mode == "local":
            options["instances"] = 2
        bucket = adm.TokenBucket(
            rate=1000, per=1, burst=50, name=f"r-{mode}", store=store, **options
        )
        attempts = admitted = timed_out = unavailable = 0
        stop = False

        async def task() -> None:
            nonlocal attempts, admitted, timed_out, unavailable
            while not stop:
                attempts += 1
                try:
                    await bucket.acquire(timeout=0.2)
                    admitted += 1
                    # The work admitted: a checkpoint (an admission made without the store
                    # returns without suspending, as an immediate one in-process does).
                    await asyncio.sleep(0)
                except adm.AcquireTimeout:
                    timed_out += 1
                except adm.StoreUnavailable:
                    unavailable += 1
                    await asyncio.sleep(0.01)

        try:
            await store.migrate()
            tasks = [asyncio.ensure_future(task()) for _ in range(8)]
            await wait_until(lambda: admitted >= 100, "admissions before the outage")
            await asyncio.to_thread(own_server.stop)
            during = (admitted, unavailable)
            await asyncio.sleep(1.0)
            # And until the mode's outcome was seen in the outage (a fixed 1 s assumed a task
            # had one by then, however loaded the host).
            await wait_until(
                lambda: unavailable > during[1] if mode == "closed" else admitted > during[0],
                "an outcome during the outage",
            )
            during = (admitted - during[0], unavailable - during[1])
            await asyncio.to_thread(own_server.start)
            before = admitted
            await wait_until(
                lambda: admitted >= before + 100 and bucket.stats().admitted > 0,
                "admissions after the restart",
                within=60,
            )
            stop = True
            await asyncio.wait_for(asyncio.gather(*tasks), 30)  # nothing hangs
        finally:
            await store.aclose()
        stats = bucket.stats()
        assert attempts == admitted + timed_out + unavailable
        assert stats.admitted == admitted
        assert stats.timed_out == timed_out
        assert stats.rejected == unavailable
        if mode == "closed":
            assert during[1] > 0  # the outage raised StoreUnavailable...
            assert unavailable > 0
        else:
            assert unavailable == 0  # ...the other modes admitted through it
            assert during[0] > 0

    run(main(), timeout=120)


# ------------------------------------------------------------------ clocks


def _skewed_client(dsn: str, skew: float, start: Any, results: Any) -> None:
    # This process's clocks, faked far from the truth: the store must not read them.
    real_time, real_time_ns = time.time, time.time_ns
    time.time = lambda: real_time() + skew  # type: ignore[assignment]
    time.time_ns = lambda: real_time_ns() + int(skew * 1e9)  # type: ignore[assignment]

    async def main() -> list[int]:
        store = Postgres(dsn, timeout=5)
        bucket = adm.TokenBucket(rate=1, per=3600, burst=10, name="clock", store=store)
        await store.migrate()
        start.wait(60)
        admitted = 0
        try:
            for _ in range(10):
                try:
                    await bucket.acquire(timeout=0)
                    admitted += 1
                except adm.AcquireTimeout:
                    pass
            reply = await store.rate("probe", None, 1, 1, 1, 0)
            return [admitted, reply.now_us]
        finally:
            await store.aclose()

    try:
        results.put(asyncio.run(main()))
    except BaseException as exc:
        results.put(("error", repr(exc)))


def test_clients_with_skewed_clocks_agree_on_the_servers(pg: PostgresServer) -> None:
    start = SPAWN.Barrier(2)
    results = SPAWN.Queue()
    hour = 3600.0
    procs = [_start(_skewed_client, pg.app_dsn(), skew, start, results) for skew in (hour, -hour)]
    outcomes = _collect(results, 2, procs)
    assert sum(o[0] for o in outcomes) == 10  # one burst between them, not one each
    # Both read the same (server) clock: seconds apart at most, not two hours.
    assert abs(outcomes[0][1] - outcomes[1][1]) < 60 * 1_000_000
    assert abs(outcomes[0][1] / 1e6 - time.time()) < 60


# ------------------------------------------------------------------ a reply after the timeout


def test_a_decision_answered_after_the_timeout_is_given_back(own_server: PostgresServer) -> None:
    """The server hangs (SIGSTOP) past the store's timeout: the limiter's call fails at its
    deadline (StoreUnavailable; nothing cancels the caller's task) while its statement waits
    in the server; when the server answers, the charge it made is given back. (A timer of
    the store's own around the statement would cancel the caller's task, which began it,
    and cut the connection: the server still runs the statement it had received, and that
    charge would stay.)"""

    async def main() -> None:
        store = Postgres(own_server.app_dsn(), timeout=0.3, sweep_interval=None)
        bucket = adm.TokenBucket(rate=1, per=3600, burst=5, name="late", store=store)
        monitor = await asyncpg.connect(own_server.app_dsn())

        async def row() -> tuple[int, int]:
            tat, at = await monitor.fetchrow(
                "SELECT tat, at FROM admission.buckets WHERE name = 'late'"
            )
            return tat, at

        try:
            await bucket.acquire(timeout=0)  # connected, registered, one token taken
            tat_before, at_before = await row()
            own_server.pause()
            try:
                with pytest.raises(adm.StoreUnavailable, match=r"no answer within 0\.3 s"):
                    await bucket.acquire(timeout=0)
                await asyncio.sleep(0.5)  # past any timer the call may have started
            finally:
                own_server.resume()
            me = asyncio.current_task()
            assert me is not None
            assert me.cancelling() == 0  # nothing cancelled the caller's task

            async def decided_then_given_back() -> bool:
                tat, at = await row()
                return at != at_before and tat == tat_before  # `at`: its decision ran

            await wait_until(decided_then_given_back, "the late charge to be given back", 10.0)
            assert bucket._counts.store_errors == 1
        finally:
            await monitor.close()
            await store.aclose()

    run(main())


# ------------------------------------------------------------------ a caller's mistakes


def test_a_callers_mistakes_never_count_against_the_store(pg: PostgresServer) -> None:
    """A timeout past bigint's range in µs, a key with any bytes, a name the server cannot
    hold: each is admitted or refused as the caller's own error, and the store's breaker,
    which all its limiters share, stays closed (five such calls used to open it: every
    other limiter of the store then failed, or admitted all, for a second)."""
    from admission.stores.remote import store_breaker

    async def main() -> None:
        store = Postgres(pg.app_dsn(), timeout=5, sweep_interval=None)
        bucket = adm.TokenBucket(rate=100, name="mistakes", store=store)
        per_user = adm.KeyedTokenBucket(rate=100, name="mistakes-keyed", store=store)
        try:
            for _ in range(6):
                await bucket.acquire(1, timeout=1e20)  # as good as no timeout
                await per_user.acquire(b"\x00\xff", 1, timeout=1e20)
                with pytest.raises(ValueError, match="name must be"):
                    adm.TokenBucket(rate=100, name="a\x00b", store=store)
            assert store_breaker(store).state == "closed"
            assert bucket.stats().admitted == per_user.stats().admitted == 6
            assert bucket._counts.store_errors == per_user._counts.store_errors == 0
        finally:
            await store.aclose()

    run(main())
