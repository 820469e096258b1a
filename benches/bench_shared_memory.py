"""The shared-memory store (issue 16): ``try_acquire`` and ``with semaphore:`` through a
``SharedMemory`` store against the in-process limiters and the peers, in the same run.

Rows per group:

- ``admission.TokenBucket`` in-process: the baseline the target (<= 2x) is measured against;
- ``admission.TokenBucket(store=SharedMemory)``: the same GCRA word, in ``/dev/shm``;
- a ``multiprocessing.Lock`` bucket: what a user would write to share a limit between
  processes (token-bucket arithmetic on two ``multiprocessing.RawValue`` doubles under one
  ``multiprocessing.Lock``; never released if its holder is killed);
- limits ``MovingWindowRateLimiter`` over ``MemoryStorage`` (in-process only: it does not
  share, its storages that do are network servers);
- ``time.monotonic_ns()``: the floor of any decision (a clock read and a call).

The admitted path uses a limit never reached during the run; the rejected path an exhausted
one. Semaphores: ``with s: pass`` uncontended, in-process and shared.
"""

from __future__ import annotations

import multiprocessing
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from limits import RateLimitItemPerSecond
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

import admission as adm

BIG = 10**9
ADMITTED = "shared try_acquire admitted"
REJECTED = "shared try_acquire rejected"
SEMAPHORE = "shared with semaphore"


class LockedBucket:
    """A token bucket shared between processes the usual way: state in shared memory,
    guarded by a multiprocessing lock (the peer a user would write)."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.lock = multiprocessing.Lock()
        self.tokens = multiprocessing.RawValue("d", burst)
        self.stamp = multiprocessing.RawValue("d", time.monotonic())

    def try_acquire(self) -> bool:
        with self.lock:
            now = time.monotonic()
            tokens = min(self.burst, self.tokens.value + (now - self.stamp.value) * self.rate)
            self.stamp.value = now
            if tokens >= 1:
                self.tokens.value = tokens - 1
                return True
            self.tokens.value = tokens
            return False


@pytest.fixture(scope="module")
def store() -> Iterator[adm.stores.SharedMemory]:
    store = adm.stores.SharedMemory(f"bench-{uuid.uuid4().hex}")
    yield store
    store.unlink()


def _buckets(store: adm.stores.SharedMemory, admitted: bool) -> dict[str, Callable[[], Any]]:
    rate, burst = (BIG, BIG) if admitted else (0.001, 1)
    tag = "a" if admitted else "r"

    def limits_hit() -> Callable[[], bool]:
        limiter = MovingWindowRateLimiter(MemoryStorage())
        item = RateLimitItemPerSecond(BIG if admitted else 1, 1 if admitted else 1000)
        return lambda: limiter.hit(item, "bench")

    def own() -> Callable[[], bool]:
        return adm.TokenBucket(rate=rate, burst=burst).try_acquire

    def shared() -> Callable[[], bool]:
        bucket = adm.TokenBucket(rate=rate, burst=burst, name=f"b-{tag}", store=store)
        return bucket.try_acquire

    def locked() -> Callable[[], bool]:
        return LockedBucket(rate, burst).try_acquire

    return {
        "admission.TokenBucket": own,
        "admission.TokenBucket.shared": shared,
        "multiprocessing.Lock bucket": locked,
        "limits.moving": limits_hit,
        "time.monotonic_ns": lambda: time.monotonic_ns,
    }


ROLES = {
    "admission.TokenBucket": "admission",
    "admission.TokenBucket.shared": "admission",
    "multiprocessing.Lock bucket": "peer",
    "limits.moving": "peer",
    "time.monotonic_ns": "floor",
}


def _run(measure: Any, store: adm.stores.SharedMemory, key: str, admitted: bool) -> None:
    acquire = _buckets(store, admitted)[key]()
    if key != "time.monotonic_ns":
        acquire()  # the rejected path: exhausted before timing
    measure(
        key=key,
        impl=key,
        role=ROLES[key],
        baseline=key == "admission.TokenBucket",
        stmt="acquire()",
        env={"acquire": acquire},
    )
    if key != "time.monotonic_ns":
        assert bool(acquire()) is admitted


@pytest.mark.benchmark(group=ADMITTED)
@pytest.mark.parametrize("key", list(ROLES))
def test_admitted(measure: Any, store: adm.stores.SharedMemory, key: str) -> None:
    _run(measure, store, key, admitted=True)


@pytest.mark.benchmark(group=REJECTED)
@pytest.mark.parametrize("key", list(ROLES))
def test_rejected(measure: Any, store: adm.stores.SharedMemory, key: str) -> None:
    _run(measure, store, key, admitted=False)


@pytest.mark.benchmark(group=SEMAPHORE)
@pytest.mark.parametrize("shared", [False, True], ids=["in-process", "shared"])
def test_with_semaphore(measure: Any, store: adm.stores.SharedMemory, shared: bool) -> None:
    sem = adm.Semaphore(10, name="s", store=store) if shared else adm.Semaphore(10)
    measure(
        key="admission.Semaphore" + (".shared" if shared else ""),
        impl="admission.Semaphore" + (" (shared)" if shared else ""),
        role="admission",
        baseline=not shared,
        stmt="acquire(); release()",
        env={"acquire": sem.try_acquire, "release": sem.release},
    )
    assert sem.in_use == 0
