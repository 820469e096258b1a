"""The cost of the limiters in a network store themselves (issue 17), without a network.

The store is `MemoryStore` (the contract in memory, no I/O), so a row's time is the
limiter's own work around one decision: ``await bucket.acquire(timeout=0)`` of a
`TokenBucket(store=MemoryStore())` against the store's decision called bare
(``MemoryStore.rate``), and the in-process `TokenBucket`'s ``acquire`` as the floor of an
admission. Against a real server this work adds to each round trip (RESULTS.md, "Redis
store" and "PostgreSQL store", show it there).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, NamedTuple

import pytest

import admission as adm
from admission.stores import RateReply, RemoteKeyedTokenBucket, RemoteTokenBucket

GROUP = "network-store limiter, no network"
CALLS = 10_000
ROUNDS = 20


class OneByOne(RemoteTokenBucket):  # type: ignore[misc]
    """The limiter as it was before coalescing, for the network benches' "before" rows in the
    same run: every decision a round trip of its own, however many are in flight."""

    __slots__ = ()

    async def _decide(self, key: bytes | None, cost: int, max_wait_us: int) -> RateReply:
        return await self._call(
            lambda: self.store.rate(
                self.name, key, self._interval_us, self._burst, cost, max_wait_us
            ),
            lambda late: self._give_back(key, cost, late),
        )


class OneByOneKeyed(RemoteKeyedTokenBucket):  # type: ignore[misc]
    """`OneByOne` for a keyed limiter: every decision a round trip of its own."""

    __slots__ = ()

    _decide = OneByOne._decide


def one_by_one(bucket: RemoteTokenBucket | RemoteKeyedTokenBucket) -> Any:
    """``bucket``, made to decide one round trip per decision (`OneByOne`, `OneByOneKeyed`)."""
    keyed = isinstance(bucket, RemoteKeyedTokenBucket)
    bucket.__class__ = OneByOneKeyed if keyed else OneByOne
    return bucket


class Row(NamedTuple):
    key: str
    impl: str
    role: str
    baseline: bool
    make: Callable[[], Callable[[], Awaitable[Any]]]


def _bucket_in_store() -> Callable[[], Awaitable[Any]]:
    store = adm.stores.MemoryStore()
    bucket = adm.TokenBucket(rate=1e9, per=1, burst=10**9, name="bench", store=store)
    return lambda: bucket.acquire(timeout=0)


def _store_rate() -> Callable[[], Awaitable[Any]]:
    store = adm.stores.MemoryStore()
    return lambda: store.rate("bench", None, 1, 10**9, 1, 0)


def _in_process() -> Callable[[], Awaitable[Any]]:
    bucket = adm.TokenBucket(rate=1e9, per=1, burst=10**9)
    return lambda: bucket.acquire(timeout=0)


ROWS = [
    Row(
        "remote.TokenBucket",
        "admission TokenBucket(store=MemoryStore()).acquire(timeout=0)",
        "admission",
        True,
        _bucket_in_store,
    ),
    Row(
        "memory.rate",
        "MemoryStore.rate, bare (the decision alone)",
        "reference",
        False,
        _store_rate,
    ),
    Row("inprocess.acquire", "in-process TokenBucket.acquire (floor)", "floor", False, _in_process),
]


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


@pytest.mark.benchmark(group=GROUP)
@pytest.mark.parametrize("row", ROWS, ids=[r.key for r in ROWS])
def test_network_store_limiter_overhead(
    benchmark: Any, loop: asyncio.AbstractEventLoop, row: Row
) -> None:
    decide = row.make()

    async def one_round() -> None:
        for _ in range(CALLS):
            await decide()

    loop.run_until_complete(one_round())  # registered, warm
    benchmark.extra_info.update(
        key=row.key, impl=row.impl, role=row.role, baseline=row.baseline, calls=CALLS
    )
    benchmark.pedantic(
        lambda: loop.run_until_complete(one_round()), rounds=ROUNDS, iterations=1, warmup_rounds=1
    )
