"""``try_acquire(key)`` of a keyed token bucket holding 1,000,000 keys, against its peers.

Every implementation is first given the same 1,000,000 keys (``"user:<n>"``), then timed on
calls that cycle through all of them in a shuffled order (so the working set is the whole
map: no cache-friendly hot key), every call admitted (rate and burst far above one call per
key per run). One pytest-benchmark group; ``benches/report.py --no-targets`` prints the
per-call table with ratios.

- admission: ``KeyedTokenBucket.try_acquire(key)``; and the unkeyed ``TokenBucket`` with one
  key, for the price of the key;
- limits: ``FixedWindowRateLimiter(MemoryStorage()).hit(item, key)`` (its cheapest strategy);
- throttled-py: ``Throttled(using="token_bucket", store=MemoryStore())``'s
  ``limiter.limit(key)``. Its memory store keeps at most 1,024 keys (it drops the others
  and starts them afresh), so its figure is for a map that does not hold the keys;
- floor: ``next(keys)``, the cost of producing the key in the timed loop.

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
GROUP = f"keyed try_acquire, {N:,} keys"


def _keys() -> list[str]:
    keys = [f"user:{i}" for i in range(N)]
    random.Random(16).shuffle(keys)
    return keys


def _admission() -> tuple[str, dict[str, Any]]:
    limiter = adm.KeyedTokenBucket(rate=1e6, burst=10**6, max_keys=N)
    keys = _keys()
    for key in keys:
        assert limiter.try_acquire(key)
    assert len(limiter) == N
    return "acquire(next(keys))", {"acquire": limiter.try_acquire, "keys": itertools.cycle(keys)}


def _unkeyed() -> tuple[str, dict[str, Any]]:
    bucket = adm.TokenBucket(rate=1e9, burst=10**9)
    return "acquire()", {"acquire": bucket.try_acquire}


def _limits() -> tuple[str, dict[str, Any]]:
    limiter = FixedWindowRateLimiter(MemoryStorage())
    item = limits.RateLimitItemPerHour(10**9)
    keys = _keys()
    for key in keys:
        assert limiter.hit(item, key)
    return "hit(item, next(keys))", {
        "hit": limiter.hit,
        "item": item,
        "keys": itertools.cycle(keys),
    }


def _throttled() -> tuple[str, dict[str, Any]]:
    throttle = throttled.Throttled(
        using="token_bucket",
        quota=throttled.per_sec(10**9, burst=10**9),
        store=throttled.MemoryStore(),
        timeout=-1,
    )
    limit = throttle.limiter.limit
    return "limit(next(keys))", {"limit": limit, "keys": itertools.cycle(_keys())}


def _floor() -> tuple[str, dict[str, Any]]:
    return "next(keys)", {"keys": itertools.cycle(_keys())}


CASES: list[tuple[str, str, str, Callable[[], tuple[str, dict[str, Any]]]]] = [
    ("admission.KeyedTokenBucket", "admission KeyedTokenBucket", "admission", _admission),
    ("admission.TokenBucket", "admission TokenBucket, one key", "reference", _unkeyed),
    ("limits.fixed", "limits FixedWindowRateLimiter", "peer", _limits),
    ("throttled.token_bucket", "throttled-py token bucket (1,024 keys kept)", "peer", _throttled),
    ("floor.next", "next(keys) (floor)", "floor", _floor),
]


@pytest.mark.parametrize(("key", "label", "role", "build"), CASES, ids=[c[0] for c in CASES])
def test_keyed_try_acquire(
    benchmark: Any,
    measure: Any,
    key: str,
    label: str,
    role: str,
    build: Callable[[], tuple[str, dict[str, Any]]],
) -> None:
    benchmark.group = GROUP
    stmt, env = build()
    measure(key=key, impl=label, role=role, stmt=stmt, env=env, baseline=role == "admission")
