# pyright: strict
"""Calls a type checker must accept, and calls it must reject (each ending in ``# error``).

Checked by test_typing.py with mypy --strict and pyright (strict), for Python 3.10: the lines
either checker reports must be exactly the lines marked ``# error``, one mistake per line.
Nothing here runs: the cases are in functions no one calls.
"""

from __future__ import annotations

import functools

import admission as adm


def metadata() -> None:
    version: str = adm.__version__
    print(version)
    print(adm.RateLimited)  # error


def constructors() -> None:
    adm.Semaphore(10, name="llm")
    adm.TokenBucket(rate=50, per=60.0, burst=10, name="rpm")
    adm.TokenBucket("60/min")
    adm.TokenBucket(50, per="1m")
    adm.SlidingWindow(limit=60, window=60.0)
    adm.SlidingWindow(60, "1m", clock=adm.testing.ManualClock())
    adm.Semaphore("ten")  # error
    adm.Semaphore(10, bogus=1)  # error
    adm.Semaphore(10, "llm")  # error
    adm.Semaphore()  # error
    adm.TokenBucket(rate=50, bogus=1)  # error
    adm.TokenBucket(rate=50, burst=2.5)  # error
    adm.TokenBucket(rate=50, name=3)  # error
    adm.SlidingWindow("sixty", 60.0)  # error
    adm.SlidingWindow(60, 60.0, bogus=1)  # error
    adm.SlidingWindow(limit=60)  # error


def shared_memory_store() -> None:
    store = adm.stores.SharedMemory("myapp", capacity=64)
    bucket: adm.stores.SharedTokenBucket = adm.TokenBucket(rate=60, per=60, name="a", store=store)
    sem: adm.stores.SharedSemaphore = adm.Semaphore(5, name="db", store=store)
    held: int = sem.held
    taken: bool = bucket.try_acquire(2)
    limiters: list[adm.stores.SharedLimiter] = store.limiters()
    remove = store.export_metrics()
    remove()
    print(held, taken, limiters, store.unlink())
    adm.TokenBucket(rate=60, store=store)  # error
    adm.Semaphore(5, store=store)  # error
    adm.Semaphore(5, name="db", store="local")  # error
    adm.stores.SharedMemory("myapp", capacity="64")  # error
    local: adm.TokenBucket = adm.TokenBucket(rate=60, name="b", store=store)  # error
    print(local)


async def shared_keyed_bucket() -> None:
    store = adm.stores.SharedMemory("myapp")
    per_user: adm.stores.SharedKeyedTokenBucket = adm.KeyedTokenBucket(
        rate=10, name="users", store=store, max_keys=100_000
    )
    admitted: bool = per_user.try_acquire("user:42", cost=2)
    await per_user.acquire(b"user:42", timeout=1.0)
    per_user.acquire_blocking(42)
    with per_user("user:7"):
        pass
    stats: adm.KeyedStats = per_user.stats()
    print(admitted, stats, len(per_user), per_user.peek("user:42").retry_after)
    per_user.try_acquire(4.2)  # error
    adm.KeyedTokenBucket(rate=10, store=store)  # error


async def postgres_store() -> None:
    store = adm.stores.Postgres("postgresql://app@db/app", schema="admission", timeout="50ms")
    reply: adm.stores.RateReply = await store.rate("api", None, 1000, 10, 1, 0)
    removed: int = await store.sweep(batch=100)
    await store.migrate()
    await store.aclose()
    print(reply, removed, store.label)
    adm.stores.Postgres("postgresql://app@db/app", "admission")  # error
    adm.stores.Postgres(dsn="postgresql://app@db/app", create="yes")  # error


def widen(x: int) -> float:
    return x * 1.5


def scale(x: int, *, by: int) -> int:
    return x * by


async def threads(sem: adm.Semaphore, bucket: adm.TokenBucket) -> None:
    a: float = await adm.to_thread(widen, 2, limiter=sem)
    b: int = await adm.to_thread(sum, [1, 2, 3], limiter=bucket)
    c: int = await adm.to_thread(functools.partial(scale, 2, by=3), limiter=sem)
    d: int = await adm.to_thread(len, "abc")
    print(a, b, c, d)
    await adm.to_thread(widen, "2", limiter=sem)  # error
    await adm.to_thread(widen, 2, 3)  # error
    await adm.to_thread(scale, 2, by=3, limiter=sem)  # error
    await adm.to_thread(widen, 2, limiter=3)  # error
    e: str = await adm.to_thread(widen, 2)  # error
    print(e)


async def awidened(x: int) -> float:
    return x * 1.5


async def mapping() -> None:
    # `adm.map` stays public (only `from admission import *` leaves it out).
    async for item in adm.map(awidened, [1, 2], limit=2):
        print(item + 1.0)
    adm.map(widen, [1, 2], limit=2)  # error


async def configured(manager: adm.ConcurrencyManager) -> None:
    # [breakers.NAME] and [retries.NAME] (issue 14).
    breaker: adm.CircuitBreaker = manager.breaker("openai")
    retry: adm.Retry = manager.retry("openai")
    answer: float = await retry.call(awidened, 2)
    print(breaker.state, answer)
    manager.breaker(1)  # error
    r: adm.RetryBudget = manager.retry("openai")  # error
    print(r)
    # [stores.NAME]: a limit's limiters may be a store's (same surface, other classes).
    store: adm.stores.SharedMemory | adm.stores.NetworkStore = manager.store("local")
    in_use: int = manager.semaphore("openai").in_use
    print(store, in_use, manager.rate("openai").stats().admitted)
    own: adm.Semaphore = manager.semaphore("openai")  # error
    print(own)


async def keyed(b: adm.KeyedTokenBucket, s: adm.KeyedSemaphore) -> None:
    adm.KeyedTokenBucket(rate=10, per=1.0, burst=20, max_keys=1_000_000, idle_ttl="10m")
    adm.KeyedTokenBucket("10/s", name="users")
    adm.KeyedSlidingWindow(60, "1m", max_keys=10)
    adm.KeyedSemaphore(5, idle_ttl=30.0)
    ok: bool = b.try_acquire("user:1", cost=2) and b.try_acquire(b"user:1") and b.try_acquire(42)
    await b.acquire("user:1", timeout="1s")
    async with b("user:1"):
        pass
    with s("tenant"):
        pass
    d: adm.Decision = b.peek("user:1")
    n: int = len(b) + s.in_use("tenant") + s.available("tenant")
    stats: adm.KeyedStats = s.stats()
    s.release("tenant")
    print(ok, d, n, stats)
    b.try_acquire(1.5)  # error
    b.try_acquire(("a", "b"))  # error
    adm.KeyedTokenBucket(rate=10, max_keys="many")  # error
    adm.KeyedSemaphore(5, bogus=1)  # error
    s.release()  # error


async def client_layer(tpm: adm.TokenBucket, rpm: adm.TokenBucket) -> None:
    async with tpm.reserve(800, timeout="10s", on_error="refund") as r:
        r.settle(300)
    with adm.all_of(rpm, tpm).reserve(costs=(1, 800)) as both:
        both.settle(costs=(1, 650))
    reservation: adm.Reservation = await tpm.reserve(5).acquire()
    reservation.refund()
    tpm.pause("2s")
    tpm.pause_until(1.5)
    tpm.sync(remaining=10, reset_after="1s")
    tpm.reserve(5, on_error="drop")  # error
    tpm.sync(remaining="ten")  # error
    r.settle("300")  # error
    transport = adm.httpx.AsyncTransport(
        limits={"api.openai.com": adm.presets.openai(rpm=500, tpm=200_000, concurrency=50)},
        default=adm.presets.host(concurrency=20),
        retry=adm.Retry(attempts=6),
        breaker="per-host",
        retry_post=True,
    )
    print(transport.stats()["api.openai.com"].rate_limited)
    adm.httpx.AsyncTransport(limits={"x": 3})  # error
    adm.httpx.Transport(breaker="sometimes")  # error


async def network_store() -> None:
    store = adm.stores.MemoryStore()
    bucket: adm.stores.RemoteTokenBucket = adm.TokenBucket(
        rate=500, per=60, name="openai", store=store, on_store_error="local", instances=4
    )
    await bucket.acquire(3, timeout=0)
    per_user: adm.stores.RemoteKeyedTokenBucket = adm.KeyedTokenBucket(
        rate=10, name="users", store=store
    )
    await per_user.acquire("user:42", timeout="1s")
    db: adm.stores.RemoteSemaphore = adm.Semaphore(20, name="db", store=store, lease="30s")
    lease: adm.stores.Lease = await db.acquire(timeout=1)
    fence: int = lease.fence
    db.release(lease)
    async with db as held:
        print(held.fence, fence)
    adm.TokenBucket(rate=5, name="x", store=store, on_store_error="maybe")  # error
    adm.TokenBucket(rate=5, name="x", store=store, lease="1s")  # error
    adm.TokenBucket(rate=5, on_store_error="open")  # error
    adm.KeyedTokenBucket(rate=5, store=store)  # error
    adm.Semaphore(5, name="db", store=store, batch=2)  # error
    plain: adm.KeyedTokenBucket = adm.KeyedTokenBucket(rate=5, name="k", store=store)  # error
    print(plain)
