"""``try_acquire(key)`` of a keyed token bucket holding 1,000,000 keys, against its peers.

Every implementation is first given the same 1,000,000 keys (``"user:<n>"``, in a shuffled
order), then timed on calls, every one admitted (rate and burst far above one call per key
per run), in two workloads, each its own pytest-benchmark group (``UNIFORM``, ``ZIPF``):

- **uniform**: the calls cycle through all the keys, so each call finds its key's entry in
  a random place of a map far larger than the caches (the worst case: every call pays the
  memory latency of the map's index and entry). The key strings are visited in the order
  they were allocated, as a server's fresh key strings would be in cache;
- **zipf**: 1,000,000 calls drawn from a Zipf law (exponent 1.1) over the keys, the shape of
  per-user traffic, where popular keys stay in cache.

``benches/report.py --no-targets`` prints the per-call table with ratios.

- admission: ``KeyedTokenBucket.try_acquire(key)``; and the unkeyed ``TokenBucket`` with one
  key, for the price of the key;
- limits: ``FixedWindowRateLimiter(MemoryStorage()).hit(item, key)`` (its cheapest strategy);
- throttled-py: ``Throttled(using="token_bucket", store=MemoryStore())``'s
  ``limiter.limit(key)``. Its memory store keeps at most 1,024 keys (it drops the others
  and starts them afresh), so its figure is for a map that does not hold the keys;
- floor: ``next(keys)``, the cost of producing the key in the timed loop;
- memory: ``data[next(offsets)]``, one byte read at a random place of 64 MB (larger than the
  caches, as the map of a million keys is): what one cache miss costs from Python on this
  host, the least a call that must find its key in such a map can cost.

``KEYED_BENCH_KEYS`` (default 1,000,000) changes the key count.
"""

from __future__ import annotations

import itertools
import os
import random
from collections.abc import Callable
from typing import Any

import limits
import pytest
import throttled
from limits.storage import MemoryStorage
from limits.strategies import FixedWindowRateLimiter

import admission as adm

N = int(os.environ.get("KEYED_BENCH_KEYS", "1000000"))
KEYS = [f"user:{i}" for i in range(N)]


def _fill_order() -> list[str]:
    order = KEYS[:]
    random.Random(16).shuffle(order)
    return order


def _zipf_calls() -> list[str]:
    rng = random.Random(1)
    cum = list(itertools.accumulate(1 / (i + 1) ** 1.1 for i in range(N)))
    ranks = _fill_order()  # which key is the most popular is unrelated to its name
    return [ranks[i] for i in rng.choices(range(N), cum_weights=cum, k=1_000_000)]


WORKLOADS: dict[str, Callable[[], list[str]]] = {
    "uniform": lambda: KEYS,
    "zipf": _zipf_calls,
}


def _admission() -> tuple[str, dict[str, Any]]:
    limiter = adm.KeyedTokenBucket(rate=1e6, burst=10**6, max_keys=N)
    for key in _fill_order():
        assert limiter.try_acquire(key)
    assert len(limiter) == N
    return "acquire(next(keys))", {"acquire": limiter.try_acquire}


def _unkeyed() -> tuple[str, dict[str, Any]]:
    bucket = adm.TokenBucket(rate=1e9, burst=10**9)
    return "next(keys); acquire()", {"acquire": bucket.try_acquire}


def _limits() -> tuple[str, dict[str, Any]]:
    limiter = FixedWindowRateLimiter(MemoryStorage())
    item = limits.RateLimitItemPerHour(10**9)
    for key in _fill_order():
        assert limiter.hit(item, key)
    return "hit(item, next(keys))", {"hit": limiter.hit, "item": item}


def _throttled() -> tuple[str, dict[str, Any]]:
    throttle = throttled.Throttled(
        using="token_bucket",
        quota=throttled.per_sec(10**9, burst=10**9),
        store=throttled.MemoryStore(),
        timeout=-1,
    )
    return "limit(next(keys))", {"limit": throttle.limiter.limit}


def _floor() -> tuple[str, dict[str, Any]]:
    return "next(keys)", {}


def _memory() -> tuple[str, dict[str, Any]]:
    size = 64 << 20
    data = bytes(range(256)) * (size // 256)  # written, so every page is a real one
    rng = random.Random(7)
    offsets = [rng.randrange(size) for _ in range(1_000_000)]
    return "data[next(offsets)]", {"data": data, "offsets": itertools.cycle(offsets)}


CASES: list[tuple[str, str, str, Callable[[], tuple[str, dict[str, Any]]]]] = [
    ("admission.KeyedTokenBucket", "admission KeyedTokenBucket", "admission", _admission),
    ("admission.TokenBucket", "admission TokenBucket, one key", "reference", _unkeyed),
    ("limits.fixed", "limits FixedWindowRateLimiter", "peer", _limits),
    ("throttled.token_bucket", "throttled-py token bucket (1,024 keys kept)", "peer", _throttled),
    ("floor.next", "next(keys) (floor)", "floor", _floor),
    ("memory.random_read", "one read at a random place of 64 MB", "reference", _memory),
]


#: One pytest-benchmark group per workload (described in groups.py).
UNIFORM = "keyed try_acquire, keys held, uniform"
ZIPF = "keyed try_acquire, keys held, zipf"


@pytest.mark.parametrize(
    "workload",
    [
        pytest.param("uniform", marks=pytest.mark.benchmark(group=UNIFORM), id="uniform"),
        pytest.param("zipf", marks=pytest.mark.benchmark(group=ZIPF), id="zipf"),
    ],
)
@pytest.mark.parametrize(("key", "label", "role", "build"), CASES, ids=[c[0] for c in CASES])
def test_keyed_try_acquire(
    measure: Any,
    workload: str,
    key: str,
    label: str,
    role: str,
    build: Callable[[], tuple[str, dict[str, Any]]],
) -> None:
    stmt, env = build()
    env["keys"] = itertools.cycle(WORKLOADS[workload]())
    measure(key=key, impl=label, role=role, stmt=stmt, env=env, baseline=role == "admission")
