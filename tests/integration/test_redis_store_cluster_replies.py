"""The Redis store on a ``RedisCluster`` client against fake nodes on loopback
(fake_redis_cluster.py): the replies a real cluster gives only at awkward moments, given on
demand. ``TRYAGAIN`` (a slot mid-migration) is retried through the client within the
caller's deadline; ``CLUSTERDOWN`` fails the call at once as `StoreUnavailable`, counted by
its node's breaker; a node that leaves the slot map has its connections closed and its
breaker dropped. The store on a URL (one node) fails both as `StoreUnavailable` at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import redis.asyncio
from fake_redis_cluster import SLOTS, FakeCluster, FakeNode
from postgres import run, wait_until
from redis.crc import key_slot

import admission as adm
from admission.stores.redis import Redis
from admission.stores.remote import _breakers, store_breaker

TRYAGAIN = Exception("TRYAGAIN Multiple keys request during rehashing of slot")
CLUSTERDOWN = Exception("CLUSTERDOWN The cluster is down")
#: What a caller's StoreUnavailable says of each (redis-py's exception for the reply).
SAID = {TRYAGAIN: "TryAgainError: Multiple keys", CLUSTERDOWN: "ClusterDownError: The cluster"}


@asynccontextmanager
async def fake_cluster(nodes: int, **options: Any) -> AsyncIterator[tuple[FakeCluster, Redis]]:
    """A started `FakeCluster` of ``nodes`` and a store (timeout 0.1 s) on a RedisCluster
    client of it (``options``: the client's); all closed after."""
    cluster = FakeCluster(nodes)
    await cluster.start()
    client = redis.asyncio.RedisCluster(host="127.0.0.1", port=cluster.nodes[0].port, **options)
    store = Redis(client=client, timeout=0.1)
    try:
        yield cluster, store
    finally:
        await store.aclose()
        await client.aclose()
        await cluster.stop()


def name_on(store: Redis, cluster: FakeCluster, node: int) -> str:
    """A bucket name whose key's slot is in ``node``'s share of the slots."""
    share = SLOTS // len(cluster.nodes)
    return next(
        name
        for name in (f"bucket-{i}" for i in range(10_000))
        if key_slot(store._bucket_key(name, None)) // share == node
    )


async def warm(bucket: Any, node: FakeNode) -> None:
    """Two decisions: the first through the client (which learns the map), the second on
    the store's own connection to ``node``."""
    for _ in range(2):
        await bucket.acquire(timeout=0)
    assert node.scripts == 2


def test_tryagain_then_success_is_retried_within_the_deadline() -> None:
    async def main() -> None:
        async with fake_cluster(1) as (cluster, store):
            node = cluster.nodes[0]
            bucket = adm.TokenBucket(rate=1000, name=name_on(store, cluster, 0), store=store)
            await warm(bucket, node)
            node.replies.append(TRYAGAIN)
            await bucket.acquire(timeout=0)  # the client's retry answered
            assert node.scripts == 4
            stats = bucket.stats()
            assert (stats.admitted, stats.rejected) == (3, 0)
            breaker = store_breaker(store, node.name)
            assert breaker.state == "closed"
            assert breaker.stats().failure == 0

    run(main())


def test_clusterdown_fails_at_once_and_opens_the_nodes_breaker() -> None:
    """The node's own answer, at once (not "no answer within 0.1 s" after the client slept
    0.25 s and asked again in the background, several times per call: 17 script calls for
    3 callers before); 3 failures of 5 open that node's breaker: then nothing is sent."""

    async def main() -> None:
        async with fake_cluster(1) as (cluster, store):
            node = cluster.nodes[0]
            bucket = adm.TokenBucket(rate=1000, name=name_on(store, cluster, 0), store=store)
            await warm(bucket, node)
            node.default = CLUSTERDOWN
            for _ in range(3):
                started = time.monotonic()
                with pytest.raises(
                    adm.StoreUnavailable, match="ClusterDownError: The cluster is down"
                ):
                    await bucket.acquire(timeout=0)
                assert time.monotonic() - started < 0.1  # the node's answer, not the timeout
            breaker = store_breaker(store, node.name)
            assert breaker.state == "open"
            with pytest.raises(adm.StoreUnavailable, match="is open after repeated failures"):
                await bucket.acquire(timeout=0)
            await asyncio.sleep(0.3)  # no call goes on in the background
            assert node.scripts == 2 + 3
            assert bucket.stats().rejected == 4

    run(main())


def test_a_node_that_leaves_the_map_has_its_connections_closed() -> None:
    """Two nodes, node 1's slots moved to node 0: node 1 answers MOVED, which the client
    follows (the slot in place), then the client refreshes its map (as it does after
    ``reinitialize_steps`` redirections, or a connection error, on any of its commands, the
    application's too): the store's next call closes its connections to
    node 1 (kept open until aclose before) and drops node 1's breaker; node 1 sees every
    connection closed (the client closes its own)."""

    async def main() -> None:
        async with fake_cluster(2) as (cluster, store):
            staying, leaving = cluster.nodes
            buckets = [
                adm.TokenBucket(rate=1000, name=name_on(store, cluster, i), store=store)
                for i in (0, 1)
            ]
            for bucket in buckets:
                for _ in range(2):  # on the store's own connection the second time
                    await bucket.acquire(timeout=0)
            assert set(store._nodes) == {staying.name, leaving.name}
            breaker = store_breaker(store, leaving.name)
            own = store._nodes[leaving.name]
            assert own.open == 1
            slot = key_slot(store._bucket_key(buckets[1].name, None))
            cluster.owner = [0, 0]
            moved = Exception(f"MOVED {slot} {staying.name}")
            leaving.replies.extend([moved, moved])  # the store's call, then the client's
            await buckets[1].acquire(timeout=0)  # answered by node 0
            assert staying.scripts == 3
            await store._client.nodes_manager.initialize()  # the client refreshes its map
            assert leaving.name not in {n.name for n in store._client.get_primaries()}
            await buckets[0].acquire(timeout=0)  # the store's next call notices
            assert list(store._nodes) == [staying.name]
            assert own.closed
            assert own.open == 0
            assert store_breaker(store, leaving.name) is not breaker  # a new one if asked
            await wait_until(_no_connections(leaving), "node 1's connections closed", within=5)
            assert leaving.scripts == 4  # nothing more sent there
            await buckets[1].acquire(timeout=0)  # node 0's, on the store's connection
            assert staying.scripts == 5

    run(main())


def test_a_node_that_dies_and_leaves_the_map_has_its_pool_closed() -> None:
    """Node 1 stops (its slots now node 0's): the store cannot connect, the client's call
    fails too and makes it refresh its map and retry on node 0, and the store closes its
    pool to node 1 and drops node 1's breaker as that call returns (the client's backoff
    outlasts the caller's timeout: the call ends in the background)."""

    async def main() -> None:
        async with fake_cluster(2) as (cluster, store):
            staying, leaving = cluster.nodes
            bucket = adm.TokenBucket(rate=1000, name=name_on(store, cluster, 1), store=store)
            for _ in range(2):
                await bucket.acquire(timeout=0)
            own = store._nodes[leaving.name]
            breaker = store_breaker(store, leaving.name)
            cluster.owner = [0, 0]
            await leaving.stop()
            await asyncio.sleep(0.05)  # the store's idle connection sees the end: not used
            # Through the client, which retries with backoff (past the caller's 0.1 s, then
            # in the background): refreshed, and answered by node 0.
            with contextlib.suppress(adm.StoreUnavailable):
                await bucket.acquire(timeout=0)
            await wait_until(lambda: staying.scripts >= 1, "node 0's answer", within=10)
            await wait_until(
                lambda: leaving.name not in store._nodes, "the pool to node 1 closed", within=5
            )
            assert own.closed
            assert own.open == 0
            assert leaving.name not in _breakers[store]
            assert store_breaker(store, leaving.name) is not breaker

    run(main())


def _no_connections(node: FakeNode) -> Any:
    async def check() -> bool:
        return not node.connections

    return check


@pytest.mark.parametrize("error", [TRYAGAIN, CLUSTERDOWN], ids=["TRYAGAIN", "CLUSTERDOWN"])
def test_on_a_url_the_reply_is_a_store_failure_at_once(error: Exception) -> None:
    """A store on one node (a URL) does not retry: the node's answer is `StoreUnavailable`
    at once, counted by the store's breaker; the connection stays in use."""

    async def main() -> None:
        cluster = FakeCluster(1)
        await cluster.start()
        node = cluster.nodes[0]
        store = adm.stores.Redis(f"redis://127.0.0.1:{node.port}/0", timeout=0.1)
        try:
            bucket = adm.TokenBucket(rate=1000, name="url", store=store)
            await bucket.acquire(timeout=0)
            node.replies.append(error)
            with pytest.raises(adm.StoreUnavailable, match=SAID[error]):
                await bucket.acquire(timeout=0)
            assert store_breaker(store).stats().failure == 1
            await bucket.acquire(timeout=0)
            assert node.scripts == 3
            assert len(node.connections) == 1
        finally:
            await store.aclose()
            await cluster.stop()

    run(main())
