"""The shared-memory store's keyed bucket (issue 16): ``try_acquire(key)`` of
``KeyedTokenBucket(store=SharedMemory(...))`` against the in-process ``KeyedTokenBucket`` in
the same run (target: at most 2 x the in-process figure).

Both hold the same ``SHARED_KEYED_BENCH_KEYS`` keys (default 100,000, the issue's
``max_keys``; ``"user:<n>"``, given in a shuffled order), every call admitted (rate and burst
far above one call per key per run; each key stays held: its bucket is not full again
for a second after each call), in two pytest-benchmark groups:

- **uniform**: the calls cycle through all the keys (each finds its key in a random place of
  a table larger than the caches);
- **one key**: the same key every call (the table's cost without the memory latency).

The floor is ``next(keys)``, the cost of producing the key in the timed loop.
"""

from __future__ import annotations

import itertools
import os
import random
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import admission as adm

N = int(os.environ.get("SHARED_KEYED_BENCH_KEYS", "100000"))
KEYS = [f"user:{i}" for i in range(N)]
UNIFORM = "shared keyed try_acquire, keys held, uniform"
ONE_KEY = "shared keyed try_acquire, one key"


@pytest.fixture(scope="module")
def store() -> Iterator[adm.stores.SharedMemory]:
    store = adm.stores.SharedMemory(f"bench-{uuid.uuid4().hex}")
    yield store
    store.unlink()


def _filled(limiter: Any) -> Callable[..., bool]:
    order = KEYS[:]
    random.Random(16).shuffle(order)
    for key in order:
        assert limiter.try_acquire(key)
    assert len(limiter) == N
    return limiter.try_acquire  # type: ignore[no-any-return]


def _cases(store: adm.stores.SharedMemory) -> dict[str, Callable[[], Callable[..., bool]]]:
    def own() -> Callable[..., bool]:
        return _filled(adm.KeyedTokenBucket(rate=1, burst=10**6, max_keys=N))

    def shared() -> Callable[..., bool]:
        limiter = adm.KeyedTokenBucket(
            rate=1, burst=10**6, name=f"users-{uuid.uuid4().hex}", store=store, max_keys=N
        )
        return _filled(limiter)

    return {"admission.KeyedTokenBucket": own, "admission.KeyedTokenBucket.shared": shared}


ROLES = {
    "admission.KeyedTokenBucket": "admission",
    "admission.KeyedTokenBucket.shared": "admission",
    "floor.next": "floor",
}


@pytest.mark.parametrize(
    "workload",
    [
        pytest.param("uniform", marks=pytest.mark.benchmark(group=UNIFORM), id="uniform"),
        pytest.param("one", marks=pytest.mark.benchmark(group=ONE_KEY), id="one-key"),
    ],
)
@pytest.mark.parametrize("key", list(ROLES))
def test_shared_keyed_try_acquire(
    measure: Any, store: adm.stores.SharedMemory, workload: str, key: str
) -> None:
    keys = itertools.cycle(KEYS if workload == "uniform" else KEYS[:1])
    if key == "floor.next":
        stmt, env = "next(keys)", {"keys": keys}
    else:
        stmt, env = "acquire(next(keys))", {"acquire": _cases(store)[key](), "keys": keys}
    measure(
        key=key,
        impl=key,
        role=ROLES[key],
        baseline=key == "admission.KeyedTokenBucket",
        stmt=stmt,
        env=env,
    )
