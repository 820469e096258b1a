"""Decisions per second through the Redis store (issue 17), against the raw commands it is
built on and the peers' Redis limiters, at the same concurrency, in one run, on one
throwaway redis-server on loopback (tests/integration/redis_server.py).

Rows, each a decision that admits (the limits are far above what the run takes):

- ``Redis.rate``: the store's GCRA, one EVALSHA (the round trip every limiter decision is);
- ``TokenBucket(store=Redis)``: ``await bucket.acquire(timeout=0)`` of admission's limiter in
  that store (the round trip plus the limiter's breaker, shielding and counters; at c=16 the
  decisions asked for while one is in flight go together as one ``rate_many`` script call);
- the same limiter deciding one round trip per decision, as before coalescing (the "before"
  row of the same run: `bench_remote_layer.OneByOne`);
- ``KeyedTokenBucket(store=Redis), 1,000 keys``: the decisions spread over 1,000 keys in
  turn (at c=16, 16 different keys at a time), where the rows above all decide on one hot
  bucket (the best case for coalescing): the decisions asked for while one is in flight go
  as one ``rate_batch`` script call over their keys; and the same limiter deciding one round
  trip per decision (`bench_remote_layer.OneByOneKeyed`);
- the keyed row on a one-node Redis Cluster (``RedisServer(cluster=True)``), where each key
  is its own hash slot and so its own round trips (decisions coalesce per key, not across
  keys): through redis-py's ``RedisCluster`` client (what a cluster of several nodes needs),
  and through the store's own connections to the node's URL;
- raw ``PING`` and ``SET`` through the same client (the floors: one round trip doing nothing,
  one writing a key);
- raw ``PING`` on redis-py connections used directly, one per task from an idle list (the
  kind of connection a store made from a URL uses: no client layers, no pool lock), sent and
  read by the connection's ``send_packed_command`` and ``read_response``; and the same
  written and read on the connection's stream directly (as the store has done since
  store17h: no redis-py code per call);
- limits (``limits.aio``, its Redis storage on redis-py): moving window and fixed window
  ``hit``;
- throttled-py (``throttled.asyncio``, its Redis store): token bucket ``limit``.

c=1: one task, one decision after the other; c=16: 16 tasks at once (each client's pool
opens a connection per task). Target: the store >= 0.5 x raw PING/SET, ahead of both peers.
Run::

    .venv/bin/python -m pytest benches/bench_redis_store.py -q --benchmark-only \\
        --benchmark-json=/tmp/redis.json
    .venv/bin/python benches/report.py /tmp/redis.json --no-targets

or, on a shared machine, with every row's rounds interleaved (a neighbour's load hits every
row alike; medians of the rounds, µs per decision)::

    .venv/bin/python benches/bench_redis_store.py [ROUNDS=15]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

import admission as adm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "integration"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from redis_server import RedisServer

from bench_remote_layer import one_by_one

ROUNDS = 30
CALLS = {1: 200, 16: 400}  # decisions per round, at each concurrency
SECOND = 1_000_000
KEYS_SPREAD = 1_000  # the keys the keyed row's decisions go round

Decide = Callable[[], Awaitable[object]]


class Row(NamedTuple):
    key: str
    impl: str
    role: str
    baseline: bool
    make: Callable[[str], Awaitable[tuple[Decide, Callable[[], Awaitable[None]]]]]
    on_cluster: bool = False  # made with the URL of the one-node cluster, not the server's


async def _store_rate(url: str) -> tuple[Decide, Callable[[], Awaitable[None]]]:
    store = adm.stores.Redis(url, timeout=5.0)
    rate = store.rate

    def decide() -> Awaitable[object]:
        return rate("bench", None, 1, 10**9, 1, 0)

    return decide, store.aclose


def _token_bucket(
    coalesce: bool,
) -> Callable[[str], Awaitable[tuple[Decide, Callable[[], Awaitable[None]]]]]:
    async def make(url: str) -> tuple[Decide, Callable[[], Awaitable[None]]]:
        store = adm.stores.Redis(url, timeout=5.0)
        bucket = adm.TokenBucket(rate=1e6, per=1, burst=10**6, name="bench-bucket", store=store)
        acquire = (bucket if coalesce else one_by_one(bucket)).acquire

        def decide() -> Awaitable[object]:
            return acquire(1, 0)

        return decide, store.aclose

    return make


def _keyed(
    coalesce: bool,
) -> Callable[[str], Awaitable[tuple[Decide, Callable[[], Awaitable[None]]]]]:
    async def make(url: str) -> tuple[Decide, Callable[[], Awaitable[None]]]:
        store = adm.stores.Redis(url, timeout=5.0)
        name = "bench-keyed" if coalesce else "bench-keyed-1by1"
        keyed = adm.KeyedTokenBucket(rate=1e6, per=1, burst=10**6, name=name, store=store)
        acquire = (keyed if coalesce else one_by_one(keyed)).acquire
        turn = [0]

        def decide() -> Awaitable[object]:
            turn[0] = key = (turn[0] + 1) % KEYS_SPREAD
            return acquire(key, 1, 0)

        return decide, store.aclose

    return make


PING = b"*1\r\n$4\r\nPING\r\n"


async def _ping_on_idle_connections(
    url: str, exchange: Callable[[Any], Awaitable[object]]
) -> tuple[Decide, Callable[[], Awaitable[None]]]:
    """A PING per decision by ``exchange(conn)`` on a redis-py connection taken from an idle
    list (one per task) and given back."""
    import redis.asyncio

    pool = redis.asyncio.ConnectionPool.from_url(url)
    idle = []
    for _ in range(max(CALLS)):
        conn = pool.make_connection()
        await conn.connect()
        idle.append(conn)

    async def decide() -> object:
        conn = idle.pop()
        try:
            return await exchange(conn)
        finally:
            idle.append(conn)

    async def close() -> None:
        for conn in idle:
            await conn.disconnect()

    return decide, close


def _keyed_on_cluster(
    cluster_client: bool,
) -> Callable[[str], Awaitable[tuple[Decide, Callable[[], Awaitable[None]]]]]:
    """The keyed row on a Redis Cluster, where each key is its own hash slot: the limiter
    decides each key in round trips of its own (its decisions coalesce per key, not across
    keys). Through redis-py's ``RedisCluster`` client (what a cluster of several nodes
    needs), or the store's own connections to the node's URL (the store learns from the
    first batch's CROSSSLOT)."""

    async def make(url: str) -> tuple[Decide, Callable[[], Awaitable[None]]]:
        import redis.asyncio

        client = redis.asyncio.RedisCluster.from_url(url) if cluster_client else None
        store = adm.stores.Redis(url, client=client, timeout=5.0)
        name = "bench-keyed-cluster-client" if cluster_client else "bench-keyed-cluster-url"
        keyed = adm.KeyedTokenBucket(rate=1e6, per=1, burst=10**6, name=name, store=store)
        turn = [0]

        def decide() -> Awaitable[object]:
            turn[0] = key = (turn[0] + 1) % KEYS_SPREAD
            return keyed.acquire(key, 1, 0)

        async def close() -> None:
            await store.aclose()
            if client is not None:
                await client.aclose()

        return decide, close

    return make


async def _raw_direct(url: str) -> tuple[Decide, Callable[[], Awaitable[None]]]:
    async def exchange(conn: Any) -> object:
        await conn.send_packed_command(PING, check_health=False)
        return await conn.read_response()

    return await _ping_on_idle_connections(url, exchange)


async def _raw_stream(url: str) -> tuple[Decide, Callable[[], Awaitable[None]]]:
    async def exchange(conn: Any) -> object:
        conn._writer.write(PING)
        return await conn._reader.readuntil(b"\r\n")

    return await _ping_on_idle_connections(url, exchange)


def _raw(command: str) -> Callable[[str], Awaitable[tuple[Decide, Callable[[], Awaitable[None]]]]]:
    async def make(url: str) -> tuple[Decide, Callable[[], Awaitable[None]]]:
        # The store's own client: the same pool and options as the rows above.
        store = adm.stores.Redis(url, timeout=5.0)
        client = store._client
        if command == "PING":
            return client.ping, store.aclose

        def decide() -> Awaitable[object]:
            return client.set("bench-set", "1")

        return decide, store.aclose

    return make


def _limits(
    strategy: str,
) -> Callable[[str], Awaitable[tuple[Decide, Callable[[], Awaitable[None]]]]]:
    async def make(url: str) -> tuple[Decide, Callable[[], Awaitable[None]]]:
        import limits
        from limits.aio import storage, strategies

        backend = storage.RedisStorage(
            "async+" + url, implementation="redispy", key_prefix="bench-limits"
        )
        limiter_class = (
            strategies.MovingWindowRateLimiter
            if strategy == "moving"
            else strategies.FixedWindowRateLimiter
        )
        limiter = limiter_class(backend)
        item = limits.RateLimitItemPerHour(10**9)
        hit = limiter.hit

        def decide() -> Awaitable[object]:
            return hit(item, f"bench-{strategy}")

        async def close() -> None:
            await backend.bridge.storage.aclose()

        return decide, close

    return make


async def _throttled(url: str) -> tuple[Decide, Callable[[], Awaitable[None]]]:
    import throttled.asyncio as throttled

    store = throttled.RedisStore(server=url)
    throttle = throttled.Throttled(
        key="bench",
        using="token_bucket",
        quota=throttled.per_sec(10**9, burst=10**9),
        store=store,
    )
    limit = throttle.limit

    def decide() -> Awaitable[object]:
        return limit()

    async def close() -> None:
        await store._backend.get_client().aclose()

    return decide, close


ROWS = [
    Row("redis.Redis.rate", "admission Redis.rate (one EVALSHA)", "admission", True, _store_rate),
    Row(
        "redis.TokenBucket",
        "admission TokenBucket(store=Redis).acquire(timeout=0)",
        "admission",
        False,
        _token_bucket(True),
    ),
    Row(
        "redis.TokenBucket.one_by_one",
        "admission TokenBucket(store=Redis), a round trip per decision (before coalescing)",
        "reference",
        False,
        _token_bucket(False),
    ),
    Row(
        "redis.Keyed",
        "admission KeyedTokenBucket(store=Redis), 1,000 keys",
        "admission",
        False,
        _keyed(True),
    ),
    Row(
        "redis.Keyed.one_by_one",
        "admission KeyedTokenBucket(store=Redis), 1,000 keys, a round trip per decision",
        "reference",
        False,
        _keyed(False),
    ),
    Row(
        "redis.Keyed.cluster_client",
        "admission KeyedTokenBucket(store=Redis), 1,000 keys, one-node Redis Cluster, "
        "RedisCluster client (a round trip per key)",
        "admission",
        False,
        _keyed_on_cluster(True),
        True,
    ),
    Row(
        "redis.Keyed.cluster_url",
        "admission KeyedTokenBucket(store=Redis), 1,000 keys, one-node Redis Cluster, "
        "the node's URL (a round trip per key)",
        "admission",
        False,
        _keyed_on_cluster(False),
        True,
    ),
    Row("redis.PING", "raw PING, same client (floor)", "floor", False, _raw("PING")),
    Row(
        "redis.PING.direct",
        "raw PING, a connection used directly (the kind the store uses)",
        "floor",
        False,
        _raw_direct,
    ),
    Row(
        "redis.PING.stream",
        "raw PING, written and read on a connection's stream (as the store does)",
        "floor",
        False,
        _raw_stream,
    ),
    Row("redis.SET", "raw SET, same client", "reference", False, _raw("SET")),
    Row("limits.moving", "limits moving window (aio, redis-py)", "peer", False, _limits("moving")),
    Row("limits.fixed", "limits fixed window (aio, redis-py)", "peer", False, _limits("fixed")),
    Row("throttled.token_bucket", "throttled-py token bucket (asyncio)", "peer", False, _throttled),
]


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with RedisServer() as s:
        yield s


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisServer]:
    with RedisServer(cluster=True) as s:
        yield s


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


def _bench(
    benchmark: Any,
    loop: asyncio.AbstractEventLoop,
    servers: tuple[RedisServer, RedisServer],
    row: Row,
    tasks: int,
) -> None:
    server, cluster = servers
    url = cluster.url() if row.on_cluster else server.url()
    decide, close = loop.run_until_complete(row.make(url))
    calls = CALLS[tasks]
    per_task = calls // tasks

    async def worker() -> None:
        for _ in range(per_task):
            await decide()

    async def one_round() -> None:
        if tasks == 1:
            await worker()
        else:
            await asyncio.gather(*(worker() for _ in range(tasks)))

    benchmark.extra_info.update(
        key=row.key, impl=row.impl, role=row.role, baseline=row.baseline, calls=calls
    )
    try:
        benchmark.pedantic(
            lambda: loop.run_until_complete(one_round()),
            rounds=ROUNDS,
            iterations=1,
            warmup_rounds=2,
        )
    finally:
        loop.run_until_complete(close())


@pytest.mark.benchmark(group="redis store decision, c=1")
@pytest.mark.parametrize("row", ROWS, ids=[r.key for r in ROWS])
def test_redis_decision_c1(
    benchmark: Any,
    loop: asyncio.AbstractEventLoop,
    server: RedisServer,
    cluster: RedisServer,
    row: Row,
) -> None:
    _bench(benchmark, loop, (server, cluster), row, 1)


@pytest.mark.benchmark(group="redis store decision, c=16")
@pytest.mark.parametrize("row", ROWS, ids=[r.key for r in ROWS])
def test_redis_decision_c16(
    benchmark: Any,
    loop: asyncio.AbstractEventLoop,
    server: RedisServer,
    cluster: RedisServer,
    row: Row,
) -> None:
    _bench(benchmark, loop, (server, cluster), row, 16)


# ------------------------------------------------------------------ standalone: interleaved


async def interleave(
    decides: list[tuple[str, Decide]], rounds: int, warm_ups: int = 1
) -> dict[tuple[str, int], list[float]]:
    """µs per decision of each round of each ``(row key, decide)`` at each concurrency of
    `CALLS`, rows interleaved within a round (after ``warm_ups`` rounds of each)."""
    times: dict[tuple[str, int], list[float]] = {}
    for tasks, calls in CALLS.items():

        async def one_round(decide: Decide, tasks: int = tasks, calls: int = calls) -> float:
            async def worker() -> None:
                for _ in range(calls // tasks):
                    await decide()

            start = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(tasks)))
            return (time.perf_counter() - start) / calls * SECOND

        for _, decide in decides:  # warm-up: connections, scripts, registrations
            for _ in range(warm_ups):
                await one_round(decide)
        for _ in range(rounds):
            for key, decide in decides:
                times.setdefault((key, tasks), []).append(await one_round(decide))
    return times


async def _interleaved(
    url: str, cluster_url: str, rounds: int
) -> dict[tuple[str, int], list[float]]:
    """µs per decision of each round of each row at each concurrency."""
    opened = [(row, await row.make(cluster_url if row.on_cluster else url)) for row in ROWS]
    try:
        return await interleave([(row.key, decide) for row, (decide, _) in opened], rounds)
    finally:
        for _, (_, close) in opened:
            await close()


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    with RedisServer() as server, RedisServer(cluster=True) as cluster:
        times = asyncio.run(_interleaved(server.url(), cluster.url(), rounds))
    medians = {key: statistics.median(values) for key, values in times.items()}
    print(f"{rounds} interleaved rounds; µs per decision (median of rounds)\n")
    head = " | ".join(f"c={c} | vs PING | vs direct PING | vs limits fixed" for c in CALLS)
    print(f"| row | {head} |")
    print("| --- |" + " ---: | ---: | ---: | ---: |" * len(CALLS))
    for row in ROWS:
        cells = []
        for c in CALLS:
            value = medians[(row.key, c)]
            ping, direct = medians[("redis.PING", c)], medians[("redis.PING.direct", c)]
            fixed = medians[("limits.fixed", c)]
            cells.append(
                f"{value:.1f} | {value / ping:.2f} | {value / direct:.2f} | {value / fixed:.2f}"
            )
        print(f"| {row.impl} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
