"""The child processes of test_redis_store_limiters.py and test_redis_store_cluster.py (spawn
start method: each imports this module by name and runs one function, talking to the test
over a Pipe). Each opens its own `admission.stores.Redis` on the test's server (or cluster)
and uses the limiters built on it."""

from __future__ import annotations

import asyncio
import time
from multiprocessing.connection import Connection

from spawned import BOUND

import admission as adm


def hammer_bucket(url: str, name: str, tasks: int, out: Connection) -> None:
    """``tasks`` tasks take one token at a time from one bucket (100/s, burst 10) from the
    wall-clock instant the test sends until the one after it; sends how many acquisitions
    returned within that window."""

    async def main() -> int:
        store = adm.stores.Redis(url, timeout=2.0)
        bucket = adm.TokenBucket(rate=100, per=1, burst=10, name=name, store=store)
        # A connection per task, and the bucket registered, now rather than in the window
        # (the one token taken is back long before it opens: 0.3 s later, at 100/s).
        await asyncio.gather(*(store.semaphore_state("warm-up") for _ in range(tasks)))
        await bucket.acquire()
        out.send("ready")
        start, end = out.recv()
        await asyncio.sleep(max(start - time.time(), 0))
        admitted = 0

        async def task() -> None:
            nonlocal admitted
            while time.time() < end:
                # Charged for its turn in the round trip, then asleep until it (80 tasks
                # keep the bucket booked 0.8 s ahead).
                await bucket.acquire(timeout=BOUND)
                if time.time() <= end:
                    admitted += 1

        workers = [asyncio.ensure_future(task()) for _ in range(tasks)]
        await asyncio.sleep(max(end - time.time(), 0))
        # Tasks asleep until a turn past the end are cancelled: their charges are given back.
        await asyncio.wait(workers, timeout=0.05)
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        await store.aclose()
        return admitted

    out.send(asyncio.run(main()))


def keyed_pass(url: str, name: str, keys: int, out: Connection) -> None:
    """Takes one token of every key once (50 at a time) without waiting; sends the count
    admitted and the count refused."""

    async def main() -> tuple[int, int]:
        store = adm.stores.Redis(url, timeout=5.0)
        admitted = await _keyed_pass(store, name, keys, 1, out)
        await store.aclose()
        return len(admitted), keys - len(admitted)

    out.send(asyncio.run(main()))


def keyed_pass_on_cluster(host: str, port: int, name: str, keys: int, out: Connection) -> None:
    """`keyed_pass` through a ``RedisCluster`` client of the cluster at ``host:port``,
    asking for every key twice (burst 3); sends the keys admitted (their numbers, a key
    once per admission)."""
    import redis.asyncio

    async def main() -> list[int]:
        client = redis.asyncio.RedisCluster(host=host, port=port)
        store = adm.stores.Redis(client=client, timeout=5.0)
        try:
            return await _keyed_pass(store, name, keys, 2, out)
        finally:
            await store.aclose()
            await client.aclose()

    out.send(asyncio.run(main()))


async def _keyed_pass(
    store: adm.stores.Redis, name: str, keys: int, times: int, out: Connection
) -> list[int]:
    """Once the test says go, 50 tasks ask for one token of each key ``times`` times (the
    same key's asks one after the other in the list: together in flight) without waiting;
    the keys admitted."""
    per_user = adm.KeyedTokenBucket(rate=1, per=3600, burst=times + 1, name=name, store=store)
    out.send("ready")
    out.recv()
    admitted: list[int] = []
    pending = iter([i for i in range(keys) for _ in range(times)])

    async def task() -> None:
        for i in pending:
            try:
                await per_user.acquire(f"user:{i}", timeout=0)
                admitted.append(i)
            except adm.AcquireTimeout:
                pass

    await asyncio.gather(*(task() for _ in range(50)))
    return admitted


def semaphore_load(url: str, name: str, rounds: int, out: Connection) -> None:
    """5 tasks each take a permit of a semaphore of 5 ``rounds`` times, holding it 5 ms; while
    holding, each counts itself in a key of its own (INCR/DECR) and notes the most it saw
    there. Sends (each task's fences in the order it got them, most holders seen)."""

    async def main() -> tuple[list[list[int]], int]:
        import redis.asyncio

        store = adm.stores.Redis(url, timeout=2.0)
        sem = adm.Semaphore(5, name=name, store=store, lease="12s")  # >= 6 timeouts
        counter = redis.asyncio.Redis.from_url(url)
        out.send("ready")
        out.recv()
        fences: list[list[int]] = [[] for _ in range(5)]
        most = 0

        async def task(mine: list[int]) -> None:
            nonlocal most
            for _ in range(rounds):
                async with sem as lease:
                    mine.append(lease.fence)
                    most = max(most, await counter.incr(f"{name}:holding"))
                    await asyncio.sleep(0.005)
                    await counter.decr(f"{name}:holding")

        await asyncio.gather(*(task(mine) for mine in fences))
        await counter.aclose()
        await store.aclose()
        return fences, most

    out.send(asyncio.run(main()))


def hold_and_die(url: str, name: str, out: Connection) -> None:
    """Takes 3 permits of a semaphore of 3 (lease 3 s), sends their fences, then sleeps
    until it is killed (its heartbeat keeps the leases while it lives)."""

    async def main() -> None:
        store = adm.stores.Redis(url, timeout=0.5)
        sem = adm.Semaphore(3, name=name, store=store, lease="3s")  # >= 6 timeouts
        leases = [await sem.acquire(timeout=BOUND) for _ in range(3)]
        out.send([lease.fence for lease in leases])
        await asyncio.sleep(BOUND)  # killed long before this

    asyncio.run(main())


def wait_for_one(url: str, name: str, out: Connection) -> None:
    """Waits (queued) for a permit of the semaphore of 3; sends its fence."""

    async def main() -> int:
        store = adm.stores.Redis(url, timeout=0.5)
        sem = adm.Semaphore(3, name=name, store=store, lease="3s")  # >= 6 timeouts
        out.send("ready")
        lease = await sem.acquire(timeout=BOUND)
        await sem.release_and_wait(lease)
        await store.aclose()
        return lease.fence

    out.send(asyncio.run(main()))


def with_a_skewed_clock(url: str, name: str, skew: float, takes: int, out: Connection) -> None:
    """This process's wall clock is ``skew`` seconds off (time.time and time.time_ns); it
    tries ``takes`` tokens of a bucket without waiting. Sends (admitted, each refusal's
    retry_after in seconds)."""
    real_time, real_ns = time.time, time.time_ns
    time.time = lambda: real_time() + skew  # type: ignore[assignment]
    time.time_ns = lambda: real_ns() + int(skew * 1e9)  # type: ignore[assignment]

    async def main() -> tuple[int, list[float]]:
        store = adm.stores.Redis(url, timeout=2.0)
        bucket = adm.TokenBucket(rate=1, per=3600, burst=10, name=name, store=store)
        out.send("ready")
        out.recv()
        admitted, needed = 0, []
        for _ in range(takes):
            try:
                await bucket.acquire(timeout=0)
                admitted += 1
            except adm.AcquireTimeout as refused:
                needed.append(refused.needed)
        await store.aclose()
        return admitted, needed

    out.send(asyncio.run(main()))
