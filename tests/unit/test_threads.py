"""Many threads on one primitive: exact budgets, exact counters, limits never exceeded.

Every thread is joined with a bounded timeout; a thread that hangs fails the test.
"""

from __future__ import annotations

import random
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from reference import NS, Worker, emission_interval_ns, run_threads, wait_until

import admission as adm

THREADS = 8


@pytest.fixture(autouse=True)
def frequent_thread_switches() -> Iterator[None]:
    """Make the interpreter switch threads far more often, to interleave calls densely."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


def hammer(calls: int, attempt: Callable[[], Any]) -> list[Any]:
    """Runs ``attempt()`` ``calls`` times in each of THREADS threads started together."""
    barrier = threading.Barrier(THREADS)

    def work() -> list[object]:
        barrier.wait(timeout=10)
        return [attempt() for _ in range(calls)]

    return run_threads([work] * THREADS)


# --------------------------------------------------------------------------------------------
# Rate limiters on a clock that never moves: the budget is exactly the capacity
# --------------------------------------------------------------------------------------------


def test_token_bucket_admits_exactly_the_budget() -> None:
    bucket = adm.TokenBucket(rate=1, per=3600.0, burst=1_000, clock=adm.testing.ManualClock())
    results = hammer(400, bucket.try_acquire)
    admitted = sum(sum(r) for r in results)
    assert admitted == 1_000
    s = bucket.stats()
    assert (s.admitted, s.admitted_cost, s.rejected) == (1_000, 1_000, THREADS * 400 - 1_000)
    assert s.attempts == THREADS * 400
    assert (s.timed_out, s.cancelled) == (0, 0)


def test_token_bucket_mixed_costs_never_overspend() -> None:
    bucket = adm.TokenBucket(rate=1, per=3600.0, burst=999, clock=adm.testing.ManualClock())
    barrier = threading.Barrier(THREADS)

    def work(seed: int) -> tuple[int, int, int]:
        rng = random.Random(seed)
        barrier.wait(timeout=10)
        admitted = cost_sum = rejected = 0
        for _ in range(300):
            cost = rng.randint(1, 3)
            if bucket.try_acquire(cost):
                admitted += 1
                cost_sum += cost
            else:
                rejected += 1
        return admitted, cost_sum, rejected

    results = run_threads([lambda seed=seed: work(seed) for seed in range(THREADS)])
    admitted = sum(r[0] for r in results)
    cost_sum = sum(r[1] for r in results)
    rejected = sum(r[2] for r in results)
    assert 999 - 2 <= cost_sum <= 999, "everything that fitted was taken, nothing more"
    s = bucket.stats()
    assert (s.admitted, s.admitted_cost, s.rejected) == (admitted, cost_sum, rejected)
    assert bucket.peek(0).remaining == 999 - cost_sum


def test_sliding_window_admits_exactly_the_budget() -> None:
    window = adm.SlidingWindow(limit=1_000, window=60.0, clock=adm.testing.ManualClock())
    results = hammer(400, window.try_acquire)
    admitted = sum(sum(r) for r in results)
    assert admitted == 1_000
    s = window.stats()
    assert (s.admitted, s.admitted_cost, s.rejected) == (1_000, 1_000, THREADS * 400 - 1_000)
    assert window._log_len() == 1, "one timestamp, one log entry"


def test_blocking_threads_on_a_manual_clock_respect_the_rate() -> None:
    """Each waiter advances the shared virtual clock by its own wait; together they must
    have moved it at least as far as the admitted cost requires: N <= burst + elapsed / T."""
    clock = adm.testing.ManualClock()
    bucket = adm.TokenBucket(rate=100, per=1.0, burst=5, clock=clock)
    T = emission_interval_ns(100, 1.0)
    per_thread = 100

    def work() -> None:
        for _ in range(per_thread):
            with bucket:
                pass

    run_threads([work] * THREADS)
    total = THREADS * per_thread
    assert clock.now_ns() >= (total - 5) * T
    s = bucket.stats()
    assert (s.admitted, s.rejected, s.timed_out, s.cancelled) == (total, 0, 0, 0)
    assert clock.now_ns() < 10 * 60 * NS, "virtual time only, and not absurdly much of it"


@pytest.mark.parametrize("kind", ["bucket", "window"])
def test_rate_limiter_counters_add_up_under_threads(kind: str) -> None:
    """try_acquire, blocking acquires and deadline misses from many threads at once: every
    call ends in exactly one counted outcome."""
    clock = adm.testing.ManualClock()
    limiter: Any
    if kind == "bucket":
        limiter = adm.TokenBucket(rate=1_000, per=1.0, burst=10, clock=clock)
    else:
        limiter = adm.SlidingWindow(limit=10, window=0.01, clock=clock)
    barrier = threading.Barrier(THREADS)

    def work(seed: int) -> tuple[int, int, int, int]:
        rng = random.Random(seed)
        barrier.wait(timeout=10)
        admitted = cost_sum = rejected = timed_out = 0
        for _ in range(300):
            cost = rng.randint(0, 3)
            if rng.random() < 0.5:
                ok = limiter.try_acquire(cost)
            else:
                try:
                    limiter.acquire_blocking(cost, timeout=rng.choice((None, 0, 0.001, 0.003)))
                    ok = True
                except adm.AcquireTimeout:
                    timed_out += 1
                    continue
            if ok:
                admitted += 1
                cost_sum += cost
            else:
                rejected += 1
        return admitted, cost_sum, rejected, timed_out

    results = run_threads([lambda seed=seed: work(seed) for seed in range(THREADS)])
    totals = tuple(sum(r[i] for r in results) for i in range(4))
    s = limiter.stats()
    assert (s.admitted, s.admitted_cost, s.rejected, s.timed_out) == totals
    assert s.cancelled == 0
    assert s.attempts == THREADS * 300


# --------------------------------------------------------------------------------------------
# Semaphore: the limit is never exceeded, nothing is lost, counters add up
# --------------------------------------------------------------------------------------------


class Occupancy:
    """Lock-protected count of permits held inside critical sections, with its peak."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.peak = 0

    def enter(self, n: int) -> None:
        with self.lock:
            self.now += n
            self.peak = max(self.peak, self.now)

    def leave(self, n: int) -> None:
        with self.lock:
            self.now -= n


def test_semaphore_with_blocks_never_exceed_the_limit() -> None:
    s = adm.Semaphore(3)
    inside = Occupancy()
    iterations = 500

    barrier = threading.Barrier(THREADS)
    # The first holders keep their permits until three are held at once: the threads
    # contend for certain (left to time.sleep(0), a loaded host saw at most two at once).
    full = threading.Event()

    def work() -> None:
        barrier.wait(timeout=10)
        for i in range(iterations):
            with s:
                inside.enter(1)
                if s.in_use == 3:
                    full.set()
                if i == 0:
                    full.wait(timeout=10)
                time.sleep(0)  # let the others in while this permit is held
                inside.leave(1)

    run_threads([work] * THREADS)
    assert full.is_set()
    assert inside.peak <= 3
    assert s.high_water == 3, "the threads really did contend"
    assert (s.in_use, s.waiting) == (0, 0)
    assert s.high_water <= 3
    st_ = s.stats()
    assert st_.admitted == THREADS * iterations
    assert (st_.rejected, st_.timed_out, st_.cancelled) == (0, 0, 0)


def test_semaphore_multi_permit_waiters_never_exceed_the_limit() -> None:
    s = adm.Semaphore(4)
    inside = Occupancy()

    def work(seed: int) -> int:
        rng = random.Random(seed)
        held = 0
        for _ in range(200):
            n = rng.randint(1, 4)
            s.acquire_blocking(n)
            inside.enter(n)
            time.sleep(0)
            held += n
            inside.leave(n)
            s.release(n)
        return held

    held = run_threads([lambda seed=seed: work(seed) for seed in range(THREADS)])
    assert inside.peak <= 4
    assert (s.in_use, s.waiting) == (0, 0)
    st_ = s.stats()
    assert st_.admitted == THREADS * 200
    assert st_.admitted_cost == sum(held)
    assert st_.high_water <= 4


def test_semaphore_counters_add_up_with_timeouts_racing_grants() -> None:
    """Timeouts that race with hand-offs: every attempt ends in exactly one outcome, and a
    permit granted at the instant of a timeout is kept (admitted), never lost."""
    s = adm.Semaphore(2)
    inside = Occupancy()

    def work(seed: int) -> tuple[int, int, int]:
        rng = random.Random(seed)
        ok = timed_out = fast = 0
        for _ in range(150):
            if rng.random() < 0.3:
                fast += 1
                if s.try_acquire():
                    inside.enter(1)
                    inside.leave(1)
                    s.release()
                continue
            n = rng.randint(1, 2)
            try:
                s.acquire_blocking(n, timeout=rng.choice((0.0, 0.0001, 0.001)))
            except adm.AcquireTimeout:
                timed_out += 1
                continue
            ok += 1
            inside.enter(n)
            time.sleep(0)
            inside.leave(n)
            s.release(n)
        return ok, timed_out, fast

    results = run_threads([lambda seed=seed: work(seed) for seed in range(THREADS)])
    blocking_ok = sum(r[0] for r in results)
    timed_out = sum(r[1] for r in results)
    fast = sum(r[2] for r in results)
    assert inside.peak <= 2
    assert (s.in_use, s.waiting) == (0, 0), "no permit lost or leaked"
    st_ = s.stats()
    assert st_.timed_out == timed_out
    assert st_.cancelled == 0
    assert st_.attempts == blocking_ok + timed_out + fast
    assert st_.admitted - blocking_ok == fast - st_.rejected


def test_semaphore_close_under_load_releases_everyone() -> None:
    s = adm.Semaphore(2)
    started = threading.Barrier(THREADS + 1)

    def work() -> int:
        started.wait(timeout=10)
        entered = 0
        while True:
            try:
                with s:
                    entered += 1
            except adm.Closed:
                return entered

    workers = [Worker(work) for _ in range(THREADS)]
    for w in workers:
        w.start()
    started.wait(timeout=10)
    wait_until(lambda: s.stats().admitted >= 200, timeout=10)
    s.close()
    entered = sum(w.finish() for w in workers)
    assert (s.in_use, s.waiting) == (0, 0)
    assert s.stats().admitted == entered
