"""Long opt-in soak runs (``make stress``): many threads and event loops on one limiter.

Each run is bounded in time (``STRESS_SECONDS``, default 20 s per test) and checks the same
invariants as the unit tests, under far more interleavings.
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time

import pytest

import admission as adm

pytestmark = pytest.mark.stress

SECONDS = float(os.environ.get("STRESS_SECONDS", "20"))


class Occupancy:
    """Permits held right now, as seen by the holders; fails on exceeding the limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self.peak = 0
        self.lock = threading.Lock()
        self.violations = 0

    def enter(self, n: int) -> None:
        with self.lock:
            self.held += n
            self.peak = max(self.peak, self.held)
            if self.held > self.limit:
                self.violations += 1

    def leave(self, n: int) -> None:
        with self.lock:
            self.held -= n


def test_semaphore_under_threads_and_two_loops() -> None:
    limit = 7
    sem = adm.Semaphore(limit, name="soak")
    occ = Occupancy(limit)
    deadline = time.monotonic() + SECONDS
    attempts = [0]
    count_lock = threading.Lock()

    def count() -> None:
        with count_lock:
            attempts[0] += 1

    def thread_worker(seed: int) -> None:
        rng = random.Random(seed)
        while time.monotonic() < deadline:
            n = rng.randint(1, 3)
            count()
            try:
                sem.acquire_blocking(n, timeout=rng.choice([None, 0.0005, 0.01]))
            except adm.AcquireTimeout:
                continue
            occ.enter(n)
            time.sleep(rng.random() / 5000)
            occ.leave(n)
            sem.release(n)

    async def task_worker(rng: random.Random) -> None:
        while time.monotonic() < deadline:
            n = rng.randint(1, 3)
            count()
            try:
                await sem.acquire(n, timeout=rng.choice([None, 0.001, 0.02]))
            except adm.AcquireTimeout:
                continue
            occ.enter(n)
            await asyncio.sleep(rng.random() / 5000)
            occ.leave(n)
            sem.release(n)

    async def loop_main(seed: int) -> None:
        rng = random.Random(seed)
        workers = [task_worker(random.Random(rng.random())) for _ in range(20)]
        await asyncio.gather(*workers, canceller_with_size(rng))

    async def canceller_with_size(rng: random.Random) -> None:
        while time.monotonic() < deadline:
            n = rng.randint(1, 2)
            count()
            task = asyncio.ensure_future(sem.acquire(n))
            await asyncio.sleep(rng.random() / 2000)
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                continue
            sem.release(n)  # granted before the cancel landed: ours to give back

    threads = [threading.Thread(target=thread_worker, args=(i,)) for i in range(6)]
    threads += [threading.Thread(target=asyncio.run, args=(loop_main(100 + i),)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=SECONDS + 60)
        assert not t.is_alive(), "a worker hung"
    stats = sem.stats()
    assert occ.violations == 0
    assert occ.peak <= limit
    assert (stats.in_use, stats.waiting) == (0, 0)
    assert stats.attempts == attempts[0], (stats, attempts[0])
    assert stats.high_water <= limit


def test_bucket_rate_holds_under_many_blocking_threads() -> None:
    rate, burst = 2_000.0, 20
    bucket = adm.TokenBucket(rate, burst=burst, name="soak")
    stamps: list[float] = []
    lock = threading.Lock()
    seconds = min(SECONDS, 10.0)
    start = time.monotonic()
    deadline = start + seconds

    def worker() -> None:
        while True:
            bucket.acquire_blocking()
            now = time.monotonic()
            if now > deadline:
                return
            with lock:
                stamps.append(now)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + 30)
        assert not t.is_alive()
    elapsed = stamps[-1] - start
    # Never more than the bound (a small allowance for the clock read after admission)...
    assert len(stamps) <= burst + rate * elapsed + 2
    # ...and close to the rate: blocking waiters keep the bucket busy.
    assert len(stamps) >= 0.97 * rate * elapsed
