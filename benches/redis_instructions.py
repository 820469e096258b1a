"""Client instructions per decision through the Redis store, counted by callgrind (noise-free),
beside a bare round trip and the peers' limiters: c=1, one decision after the other on an
asyncio loop, against a throwaway redis-server on loopback (tests/integration/redis_server.py;
the server is a child process, not counted: callgrind follows only the Python process).

The client's CPU is half of what a c=1 decision costs on a host where client and server share
the cores (the server's own is in ``INFO commandstats``), and the half that the time of an
interleaved run (``bench_redis_store.py``) is too noisy to split. Workloads:

- ``PING direct``: a ``PING`` on a redis-py connection used directly, by its
  ``send_packed_command`` and ``read_response`` (``bench_redis_store.py``'s "direct" floor,
  with redis-py's default socket timeouts of 5 s: a timer per read);
- ``EVALSHA direct, redis-py``: the store's rate script sent and read by that connection's own
  ``send_packed_command`` and ``read_response`` (what the store did before it read its
  replies itself);
- ``EVALSHA direct, own reader``: the same, written on the connection's stream and read by
  the store's own reader (`admission.stores._resp`): the floor of the store's call;
- ``Redis.rate``: the store called directly (its own ``timeout`` around the call);
- ``Redis.rate, bounded by its caller``: the store's call as a limiter makes it (no timer of
  the store's: see `admission.stores.network.caller_bounds`), without the limiter;
- ``TokenBucket``, ``KeyedTokenBucket 1,000 keys``: ``await bucket.acquire(1, 0)`` of the
  limiters in the store (the rows of ``bench_redis_store.py``);
- ``limits fixed``, ``throttled-py``: the peers' limiters, each on its own redis-py client.

Usage: .venv/bin/python benches/redis_instructions.py [WORKLOAD ...]
Needs valgrind, redis-server and requirements/bench.txt; about a minute per workload.
"""

from __future__ import annotations

import asyncio
import atexit
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from callgrind import script_main

CALLS = 2_000
#: Rounds of CALLS at the two sizes counted.
FEW, MORE = 1, 3
KEYS_SPREAD = 1_000


def workloads() -> dict[str, Callable[[], None]]:
    """Name -> one round of CALLS decisions (each workload made lazily: only the one run)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "integration"))
    from redis_server import RedisServer

    import admission as adm
    from admission.stores import redis as store_module

    server = RedisServer()
    started: list[bool] = []
    loop = asyncio.new_event_loop()

    def url() -> str:
        if not started:
            server.start()
            atexit.register(server.cleanup)
            started.append(True)
        return server.url()

    def rounds(
        make: Callable[[], Awaitable[Callable[[], Awaitable[object]]]],
    ) -> Callable[[], None]:
        decide: list[Callable[[], Awaitable[object]]] = []

        async def one_round() -> None:
            if not decide:
                decide.append(await make())
                for _ in range(100):  # connections, scripts, registration
                    await decide[0]()
            once = decide[0]
            for _ in range(CALLS):
                await once()

        return lambda: loop.run_until_complete(one_round())

    async def direct(command: bytes, **options: Any) -> Callable[[], Awaitable[object]]:
        import redis.asyncio

        conn = redis.asyncio.ConnectionPool.from_url(url(), **options).make_connection()
        await conn.connect()

        async def decide() -> object:
            await conn.send_packed_command(command, check_health=False)
            return await conn.read_response()

        return decide

    async def evalsha_direct() -> Callable[[], Awaitable[object]]:
        store = adm.stores.Redis(url(), timeout=5.0)
        await store.rate("bench", None, 1, 10**9, 1, 0)  # loads the script
        script = store_module.RATE
        key = b"admission:{b:bench}"
        command = store_module.pack(b"EVALSHA", script.sha, 1, key, 1, 10**9, 1, 0)
        # No socket timeouts, as the store's own connections (redis-py's default is 5 s).
        return await direct(command, socket_timeout=None, socket_connect_timeout=None)

    async def evalsha_own_reader() -> Callable[[], Awaitable[object]]:
        import redis.asyncio
        from redis._parsers import BaseParser

        from admission.stores._resp import read_reply

        store = adm.stores.Redis(url(), timeout=5.0)
        await store.rate("bench", None, 1, 10**9, 1, 0)  # loads the script
        script = store_module.RATE
        key = b"admission:{b:bench}"
        command = store_module.pack(b"EVALSHA", script.sha, 1, key, 1, 10**9, 1, 0)
        conn = redis.asyncio.ConnectionPool.from_url(url()).make_connection()
        await conn.connect()

        async def decide() -> object:
            conn._writer.write(command)
            return await read_reply(conn._reader, BaseParser.parse_error)

        return decide

    async def store_rate_bounded() -> Callable[[], Awaitable[object]]:
        from admission.stores.network import caller_bounds

        store = adm.stores.Redis(url(), timeout=5.0)

        async def decide() -> object:
            token = caller_bounds.set(True)  # read by the call's first step
            try:
                return await store.rate("bench", None, 1, 10**9, 1, 0)
            finally:
                caller_bounds.reset(token)

        return decide

    async def store_rate() -> Callable[[], Awaitable[object]]:
        store = adm.stores.Redis(url(), timeout=5.0)
        return lambda: store.rate("bench", None, 1, 10**9, 1, 0)

    async def bucket() -> Callable[[], Awaitable[object]]:
        store = adm.stores.Redis(url(), timeout=5.0)
        limiter = adm.TokenBucket(rate=1e6, per=1, burst=10**6, name="bench", store=store)
        return lambda: limiter.acquire(1, 0)

    async def keyed() -> Callable[[], Awaitable[object]]:
        store = adm.stores.Redis(url(), timeout=5.0)
        limiter = adm.KeyedTokenBucket(rate=1e6, per=1, burst=10**6, name="keyed", store=store)
        turn = [0]

        def decide() -> Awaitable[object]:
            turn[0] = key = (turn[0] + 1) % KEYS_SPREAD
            return limiter.acquire(key, 1, 0)

        return decide

    async def limits_fixed() -> Callable[[], Awaitable[object]]:
        import limits
        from limits.aio import storage, strategies

        backend = storage.RedisStorage("async+" + url(), implementation="redispy")
        limiter = strategies.FixedWindowRateLimiter(backend)
        item = limits.RateLimitItemPerHour(10**9)
        return lambda: limiter.hit(item, "bench-fixed")

    async def throttled_bucket() -> Callable[[], Awaitable[object]]:
        import throttled.asyncio as throttled

        throttle = throttled.Throttled(
            key="bench",
            using="token_bucket",
            quota=throttled.per_sec(10**9, burst=10**9),
            store=throttled.RedisStore(server=url()),
        )
        return throttle.limit

    return {
        "PING direct": rounds(lambda: direct(b"*1\r\n$4\r\nPING\r\n")),
        "EVALSHA direct, redis-py": rounds(evalsha_direct),
        "EVALSHA direct, own reader": rounds(evalsha_own_reader),
        "Redis.rate": rounds(store_rate),
        "Redis.rate, bounded by its caller": rounds(store_rate_bounded),
        "TokenBucket": rounds(bucket),
        "KeyedTokenBucket 1,000 keys": rounds(keyed),
        "limits fixed": rounds(limits_fixed),
        "throttled-py": rounds(throttled_bucket),
    }


if __name__ == "__main__":
    script_main(__file__, workloads, CALLS, FEW, MORE)
