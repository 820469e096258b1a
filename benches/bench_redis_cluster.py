"""Decisions per second through the Redis store on a Redis Cluster of three masters (three
throwaway redis-server processes on loopback, tests/integration/redis_server.py), against
`limits` on the same cluster and the raw round trips of the same client, at the same
concurrency, rounds interleaved (a neighbour's load hits every row alike).

Rows, each a decision that admits (the limits are far above what the run takes), each
spreading its decisions over 1,000 keys in turn (at c=16, 16 different keys at a time), so
that they go to all three nodes:

- ``KeyedTokenBucket(store=Redis(client=RedisCluster))``: admission's keyed limiter, one
  EVALSHA per key's round trip (its decisions coalesce per key, never across keys: each key
  is its own hash slot), on the store's own connections to the key's node;
- limits (``limits.aio``, ``async+redis+cluster://``, redis-py): fixed window and moving
  window ``hit`` of the same 1,000 keys;
- raw ``GET`` of 1,000 keys through the same ``RedisCluster`` client (the floor: one round
  trip to a key's node, doing nothing), and raw ``PING`` through it sent to one node
  (``target_nodes=RANDOM``: its default sends a PING to every node).

Run::

    .venv/bin/python benches/bench_redis_cluster.py [ROUNDS=15]
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import NamedTuple

import admission as adm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "integration"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from redis_server import RedisCluster

from bench_redis_store import CALLS, Decide, interleave

KEYS_SPREAD = 1_000

Opened = tuple[Decide, Callable[[], Awaitable[None]]]


class Row(NamedTuple):
    key: str
    impl: str
    make: Callable[[str, int], Awaitable[Opened]]


def _turns() -> Callable[[], int]:
    """The next of the 1,000 keys, in turn."""
    turn = [0]

    def next_key() -> int:
        turn[0] = (turn[0] + 1) % KEYS_SPREAD
        return turn[0]

    return next_key


async def _keyed(host: str, port: int) -> Opened:
    import redis.asyncio

    client = redis.asyncio.RedisCluster(host=host, port=port)
    store = adm.stores.Redis(client=client, timeout=5.0)
    keyed = adm.KeyedTokenBucket(rate=1e6, per=1, burst=10**6, name="bench-keyed", store=store)
    next_key = _turns()

    def decide() -> Awaitable[object]:
        return keyed.acquire(next_key(), 1, 0)

    async def close() -> None:
        await store.aclose()  # its own connections to the nodes
        await client.aclose()

    return decide, close


def _limits(strategy: str) -> Callable[[str, int], Awaitable[Opened]]:
    async def make(host: str, port: int) -> Opened:
        import limits
        from limits.aio import storage, strategies

        backend = storage.RedisClusterStorage(
            f"async+redis+cluster://{host}:{port}", implementation="redispy"
        )
        limiter_class = (
            strategies.MovingWindowRateLimiter
            if strategy == "moving"
            else strategies.FixedWindowRateLimiter
        )
        hit = limiter_class(backend).hit
        item = limits.RateLimitItemPerHour(10**9)
        next_key = _turns()

        def decide() -> Awaitable[object]:
            return hit(item, f"bench-{strategy}", str(next_key()))

        async def close() -> None:
            await backend.bridge.storage.aclose()

        return decide, close

    return make


async def _raw_get(host: str, port: int) -> Opened:
    import redis.asyncio

    client = redis.asyncio.RedisCluster(host=host, port=port)
    next_key = _turns()

    def decide() -> Awaitable[object]:
        return client.get(f"bench-get:{next_key()}")

    return decide, client.aclose


async def _raw_ping(host: str, port: int) -> Opened:
    import redis.asyncio

    client = redis.asyncio.RedisCluster(host=host, port=port)

    def decide() -> Awaitable[object]:
        return client.ping(target_nodes=redis.asyncio.RedisCluster.RANDOM)

    return decide, client.aclose


ROWS = [
    Row(
        "keyed",
        "admission KeyedTokenBucket(store=Redis(client=RedisCluster)), 1,000 keys",
        _keyed,
    ),
    Row("limits.fixed", "limits fixed window (aio, redis+cluster, redis-py)", _limits("fixed")),
    Row("limits.moving", "limits moving window (aio, redis+cluster, redis-py)", _limits("moving")),
    Row("GET", "raw GET of the 1,000 keys, same RedisCluster client (floor)", _raw_get),
    Row("PING", "raw PING to one node, same RedisCluster client", _raw_ping),
]


async def _interleaved(host: str, port: int, rounds: int) -> dict[tuple[str, int], list[float]]:
    """µs per decision of each round of each row at each concurrency."""
    opened = [(row, await row.make(host, port)) for row in ROWS]
    try:
        # Three warm-up rounds: connections, scripts and the clients' slot maps.
        decides = [(row.key, decide) for row, (decide, _) in opened]
        return await interleave(decides, rounds, warm_ups=3)
    finally:
        for _, (_, close) in opened:
            await close()


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    before = os.getloadavg()
    with RedisCluster(masters=3) as cluster:
        times = asyncio.run(_interleaved(cluster.host, cluster.port, rounds))
    after = os.getloadavg()
    medians = {key: statistics.median(values) for key, values in times.items()}
    print(
        f"{rounds} interleaved rounds on a 3-master cluster; µs per decision (median of "
        f"rounds); load average {before[0]:.2f} before, {after[0]:.2f} after\n"
    )
    head = " | ".join(f"c={c} µs | vs GET | vs limits fixed" for c in CALLS)
    print(f"| row | {head} |")
    print("| --- |" + " ---: | ---: | ---: |" * len(CALLS))
    for row in ROWS:
        cells = []
        for c in CALLS:
            value = medians[(row.key, c)]
            floor, fixed = medians[("GET", c)], medians[("limits.fixed", c)]
            cells.append(f"{value:.1f} | {value / floor:.2f} | {value / fixed:.2f}")
        print(f"| {row.impl} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
