"""The shared-memory store's surface in one process: waiting on asyncio and trio, what is
counted when a wait ends without admission, argument errors, pickling."""

from __future__ import annotations

import asyncio
import pickle
import uuid
from collections.abc import Iterator

import pytest
import trio

import admission as adm


@pytest.fixture
def store() -> Iterator[adm.stores.SharedMemory]:
    store = adm.stores.SharedMemory(f"api-{uuid.uuid4().hex}", capacity=16)
    yield store
    store.unlink()


def test_a_bucket_waits_on_asyncio_and_trio_and_fails_at_once_past_the_timeout(
    store: adm.stores.SharedMemory,
) -> None:
    bucket = adm.TokenBucket(rate=50, per=1, burst=1, name="b", store=store)

    async def twice() -> None:
        await bucket.acquire()
        await bucket.acquire(timeout=1.0)  # the next token is 20 ms away

    asyncio.run(twice())
    trio.run(twice)
    with pytest.raises(adm.AcquireTimeout) as failed:
        bucket.acquire_blocking(cost=1, timeout=0.0001)
    assert failed.value.needed is not None
    assert 0 < failed.value.needed <= 0.02
    stats = bucket.stats()
    assert (stats.admitted, stats.timed_out, stats.rejected) == (4, 1, 0)


def test_a_cancelled_wait_is_counted_and_takes_nothing(store: adm.stores.SharedMemory) -> None:
    sem = adm.Semaphore(1, name="s", store=store)
    assert sem.try_acquire()

    async def cancelled() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(sem.acquire(n=1), 0.05)

    asyncio.run(cancelled())
    with pytest.raises(adm.AcquireTimeout):
        sem.acquire_blocking(n=1, timeout=0.02)
    sem.release()
    assert sem.in_use == 0
    stats = sem.stats()
    assert (stats.admitted, stats.cancelled, stats.timed_out, stats.rejected) == (1, 1, 1, 0)
    assert stats.attempts == 3


def test_semaphore_errors(store: adm.stores.SharedMemory) -> None:
    sem = adm.Semaphore(3, name="e", store=store)
    with pytest.raises(adm.CapacityError):
        sem.try_acquire(4)
    with pytest.raises(ValueError, match="release of 1 permits but only 0"):
        sem.release()
    with pytest.raises(TypeError):
        sem.try_acquire(None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="limit must be between 1 and"):
        adm.Semaphore(0, name="zero", store=store)
    assert sem.locked() is False
    assert sem.try_acquire(3)
    assert sem.locked() is True
    assert (sem.in_use, sem.available, sem.held) == (3, 0, 3)
    sem.release(3)


def test_bucket_errors(store: adm.stores.SharedMemory) -> None:
    with pytest.raises(ValueError, match="do not pass clock="):
        adm.TokenBucket(rate=1, name="c", store=store, clock=adm.testing.ManualClock())  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="rate"):
        adm.TokenBucket(rate=0, name="c", store=store)
    with pytest.raises(TypeError, match="store must be"):
        adm.TokenBucket(rate=1, name="c", store="local")  # type: ignore[call-overload]
    bucket = adm.TokenBucket(rate="10/s", burst=2, name="c", store=store)
    assert (bucket.rate, bucket.per, bucket.burst) == (10.0, 1.0, 2)
    with pytest.raises(adm.CapacityError):
        bucket.try_acquire(3)
    with pytest.raises(ValueError, match="name of 1 to 128 bytes"):
        adm.TokenBucket(rate=1, name="x" * 129, store=store)
    with pytest.raises(ValueError, match="store's name is"):
        adm.stores.SharedMemory("a/b")


def test_a_store_pickles_as_its_name_and_reopens_the_same_segment(
    store: adm.stores.SharedMemory,
) -> None:
    bucket = adm.TokenBucket(rate=1, per=60, burst=1, name="p", store=store)
    copy = pickle.loads(pickle.dumps(store))
    assert (copy.path, copy.capacity, copy.name) == (store.path, 16, store.name)
    assert bucket.try_acquire()
    again = adm.TokenBucket(rate=1, per=60, burst=1, name="p", store=copy)
    assert not again.try_acquire()  # the same word: the token is gone
    assert [(s.kind, s.name, s.admitted, s.rejected) for s in copy.limiters()] == [
        ("TokenBucket", "p", 1, 1)
    ]
