"""The shared-memory store's surface in one process: waiting on asyncio and trio, what is
counted when a wait ends without admission, argument errors, pickling."""

from __future__ import annotations

import asyncio
import pickle
import time
import uuid
from collections.abc import Iterator

import pytest
import trio
import trio.testing

import admission as adm


@pytest.fixture
def store() -> Iterator[adm.stores.SharedMemory]:
    store = adm.stores.SharedMemory(f"api-{uuid.uuid4().hex}", capacity=16)
    yield store
    store.unlink()


def test_a_bucket_waits_on_asyncio_and_trio_and_fails_at_once_past_the_timeout(
    store: adm.stores.SharedMemory,
) -> None:
    # A token every 200 ms: the refusal below must come within one (on a heavily loaded host,
    # trio's run ended more than the 20 ms of a rate of 50/s after its last admission).
    bucket = adm.TokenBucket(rate=5, per=1, burst=1, name="b", store=store)

    async def twice() -> None:
        await bucket.acquire()
        await bucket.acquire(timeout=1.0)  # the next token is 200 ms away

    asyncio.run(twice())
    trio.run(twice)
    with pytest.raises(adm.AcquireTimeout) as failed:
        bucket.acquire_blocking(cost=1, timeout=0.0001)
    assert failed.value.needed is not None
    assert 0 < failed.value.needed <= 0.2
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


@pytest.mark.parametrize("runner", ["asyncio", "trio", "thread"])
def test_a_waiter_that_gives_up_takes_its_turn_back_when_it_is_the_last(
    store: adm.stores.SharedMemory, runner: str
) -> None:
    # A turn five seconds away: the waiter gives up long before it (with a turn a second
    # away, a loaded host once let it come before the interrupt 50 ms in: DID NOT RAISE).
    bucket = adm.TokenBucket(rate=1, per=5, burst=1, name=f"gb-{runner}", store=store)
    assert bucket.try_acquire()  # the next token is five seconds away
    before = bucket.peek().retry_after
    if runner == "asyncio":

        async def gives_up() -> None:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(bucket.acquire(timeout=10), 0.05)

        asyncio.run(gives_up())
    elif runner == "trio":

        async def cancelled() -> None:
            with trio.move_on_after(0.05):
                await bucket.acquire(timeout=10)

        trio.run(cancelled)
    else:
        import signal
        import threading

        # The main thread is interrupted in its sleep (KeyboardInterrupt) as Ctrl-C would.
        main = threading.main_thread().ident
        assert main is not None
        timer = threading.Timer(0.05, signal.pthread_kill, (main, signal.SIGINT))
        # Python's own handler, whatever an earlier test left (an event loop's takes the
        # first Ctrl-C to cancel its main task and raises nothing).
        handler = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            timer.start()
            with pytest.raises(KeyboardInterrupt):
                bucket.acquire_blocking(timeout=10)
            timer.join()
        finally:
            signal.signal(signal.SIGINT, handler)
    # Its charge is back: the next turn is as far as before the waiter came, not a turn later.
    assert bucket.peek().retry_after <= before
    stats = bucket.stats()
    assert (stats.admitted, stats.cancelled, stats.timed_out) == (1, 1, 0)


@pytest.mark.parametrize("how", ["never awaited", "cancelled before it starts", "asyncio.timeout"])
def test_a_turn_never_taken_or_given_up_leaves_the_bucket_as_it_was(
    store: adm.stores.SharedMemory, how: str
) -> None:
    bucket = adm.TokenBucket(rate=1, per=5, burst=1, name=f"nt-{how[:5]}", store=store)
    assert bucket.try_acquire()  # the next token is five seconds away
    before = bucket.peek().retry_after

    async def main() -> None:
        if how == "never awaited":
            bucket.acquire(timeout=10).close()
        elif how == "cancelled before it starts":
            task = asyncio.ensure_future(bucket.acquire(timeout=10))
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        else:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.05):
                    await bucket.acquire(timeout=10)

    asyncio.run(main())
    assert bucket.peek().retry_after <= before
    assert bucket.stats().admitted == 1


def test_turns_are_kept_in_order_and_a_turn_given_up_behind_another_stays_charged(
    store: adm.stores.SharedMemory,
) -> None:
    # Turns 250 ms apart: the checks below must run within one of them (a heavily loaded
    # host took more than the 50 ms of a rate of 20/s now and then).
    bucket = adm.TokenBucket(rate=4, per=1, burst=1, name="order", store=store)
    assert bucket.try_acquire()
    done: list[int] = []

    async def main() -> None:
        async def waiter(n: int, cost: int) -> None:
            await bucket.acquire(cost=cost, timeout=5)
            done.append(n)

        first = asyncio.ensure_future(waiter(1, 1))  # 250 ms
        await asyncio.sleep(0)
        second = asyncio.ensure_future(waiter(2, 1))  # 500 ms, behind the first
        await asyncio.sleep(0)
        third = asyncio.ensure_future(waiter(3, 1))  # 750 ms
        await asyncio.sleep(0)
        second.cancel()  # not the last turn: its charge stays, the third's turn keeps its place
        await asyncio.gather(first, third, return_exceptions=True)
        assert bucket.try_acquire() is False  # no barging after the last turn either

    asyncio.run(main())
    assert done == [1, 3]
    stats = bucket.stats()
    assert (stats.admitted, stats.cancelled) == (3, 1)
    # No turn is pending any more and the tokens refill from the third's turn.
    assert bucket.peek().retry_after <= 0.25


def test_a_turn_is_not_taken_before_the_host_says_it_has_come_under_a_virtual_clock(
    store: adm.stores.SharedMemory,
) -> None:
    """trio's MockClock jumps its own time: a waiter must still wait for the host's."""
    bucket = adm.TokenBucket(rate=20, per=1, burst=1, name="mock", store=store)
    assert bucket.try_acquire()
    start = time.monotonic()

    async def three() -> None:
        for _ in range(3):
            await bucket.acquire(timeout=5)

    trio.run(three, clock=trio.testing.MockClock(autojump_threshold=0))
    # Three turns of 50 ms each after the spent burst: at least 150 ms of the host's time.
    assert time.monotonic() - start >= 0.15 - 0.005
    assert bucket.stats().admitted == 4


def test_a_turn_beyond_the_timeout_fails_at_once_and_charges_nothing(
    store: adm.stores.SharedMemory,
) -> None:
    bucket = adm.TokenBucket(rate=1, per=1, burst=2, name="late", store=store)
    assert bucket.try_acquire(cost=2)
    before = bucket.peek(cost=2).retry_after
    with pytest.raises(adm.AcquireTimeout) as failed:
        bucket.acquire_blocking(cost=2, timeout=0.5)
    assert failed.value.needed is not None
    assert failed.value.needed > 0.5
    assert bucket.peek(cost=2).retry_after <= before
    with pytest.raises(adm.CapacityError):
        bucket.acquire_blocking(cost=3)
    assert bucket.stats().timed_out == 1


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
