"""The wait-time histogram: native, written by waiters only, exact, and never going down.

Immediate admissions are never observed: a snapshot reports them as zero waits, so the
histogram's count equals the ``admitted`` counter without a write on the fast path.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import admission as adm
from admission import _native
from admission.stats import WaitHistogram

BOUNDS = _native.WAIT_BOUNDS


def bucket(seconds: float) -> int:
    """Index of the bucket a wait of ``seconds`` falls in (inclusive upper bounds)."""
    for i, b in enumerate(BOUNDS):
        if seconds <= b:
            return i
    return len(BOUNDS)


# ---------------------------------------------------------------------------------------------
# The buckets
# ---------------------------------------------------------------------------------------------


def test_bounds_are_zero_then_the_1_2_5_series_from_1us_to_100s() -> None:
    assert BOUNDS[0] == 0.0
    expected = [m * 10.0**e for e in range(-6, 2) for m in (1, 2, 5)] + [100.0]
    assert list(BOUNDS[1:]) == pytest.approx(expected, rel=1e-12)
    assert len(BOUNDS) == 26
    assert all(a < b for a, b in itertools.pairwise(BOUNDS))


def test_wait_histogram_value_object() -> None:
    counts = [0] * (len(BOUNDS) + 1)
    counts[0] = 3  # immediate
    counts[bucket(0.05)] = 2  # (0.02, 0.05]
    counts[bucket(1.5)] = 1  # (1, 2]
    counts[-1] = 1  # over 100 s
    h = WaitHistogram(BOUNDS, tuple(counts), 0.1 + 1.5 + 150.0)
    assert h.count == 7
    assert h.waited == 4
    assert h.mean == pytest.approx(151.6 / 7)
    cum = h.cumulative()
    assert cum[0] == 3
    assert cum[-1] == 7
    assert list(cum) == sorted(cum)
    assert h.quantile(0.0) == 0.0
    assert h.quantile(3 / 7) == 0.0
    assert h.quantile(0.5) == 0.05
    assert h.quantile(6 / 7) == 2.0
    assert h.quantile(1.0) == math.inf
    assert h.count_over(0.02) == 4  # whole buckets above 0.02
    assert h.count_over(0.03) == 2  # (0.02, 0.05] straddles 0.03: not counted
    assert h.count_over(100.0) == 1
    assert (h + h).count == 14
    assert (h + h).sum == pytest.approx(2 * h.sum)
    empty = WaitHistogram.empty()
    assert (empty.count, empty.mean, empty.quantile(0.99)) == (0, 0.0, 0.0)
    with pytest.raises(ValueError, match="q must be"):
        h.quantile(1.5)
    with pytest.raises(ValueError, match="different bounds"):
        _ = h + WaitHistogram((1.0,), (0, 0), 0.0)


# ---------------------------------------------------------------------------------------------
# Rate limiters
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["bucket", "window"])
def test_rate_limiter_records_waits_and_counts_immediate_as_zero(kind: str) -> None:
    clock = adm.testing.ManualClock()
    lim: adm.TokenBucket | adm.SlidingWindow = (
        adm.TokenBucket(rate=1, per=1.0, burst=2, clock=clock)
        if kind == "bucket"
        else adm.SlidingWindow(limit=2, window=1.0, clock=clock)
    )
    assert lim.try_acquire()
    assert lim.try_acquire()
    assert not lim.try_acquire()  # rejected: not an admission, not in the histogram
    lim.acquire_blocking()  # waits (virtually) for the next slot
    with pytest.raises(adm.AcquireTimeout):
        lim.acquire_blocking(cost=2, timeout=0.1)  # would wait too long: fails at once
    st = lim.stats()
    h = st.wait
    assert h.count == st.admitted == 3
    assert h.counts[0] == 2
    assert h.waited == 1
    assert h.counts[bucket(1.0)] == 1
    assert h.sum == pytest.approx(1.0)
    assert st.waiting == 0


def test_rate_limiter_immediate_paths_write_nothing() -> None:
    b = adm.TokenBucket(rate=1e9, burst=10**9)
    for _ in range(1000):
        assert b.try_acquire()
    with b:
        pass
    assert b.stats().wait == WaitHistogram(BOUNDS, (1001,) + (0,) * len(BOUNDS), 0.0)


def test_async_waits_follow_the_loop_clock(virtual: Any) -> None:
    """Under a virtual clock no real time passes: a bucket on the loop's clock records the
    virtual wait."""
    b = adm.TokenBucket(rate=1, per=2.0, burst=1, clock=adm.LoopClock())

    async def main() -> None:
        await b.acquire()
        await b.acquire()  # waits 2 s of virtual time

    virtual.run(main)
    h = b.stats().wait
    assert h.count == 2
    assert h.counts[0] == 1
    assert h.counts[bucket(2.0)] == 1
    assert h.sum == pytest.approx(2.0, abs=0.05)


@pytest.mark.anyio
async def test_cancelled_rate_waiter_is_not_observed_and_leaves_the_gauge() -> None:
    b = adm.TokenBucket(rate=1, per=60.0, burst=1)
    assert b.try_acquire()
    async with anyio.create_task_group() as tg:
        tg.start_soon(b.acquire)
        for _ in range(100):
            await anyio.sleep(0.001)
            if b.waiting == 1:
                break
        assert b.waiting == 1
        assert b.stats().waiting == 1
        tg.cancel_scope.cancel()
    st = b.stats()
    assert st.waiting == 0
    assert st.cancelled == 1
    assert st.wait.count == st.admitted == 1
    assert st.wait.waited == 0


def test_blocking_wait_is_real_time_and_the_gauge_shows_it() -> None:
    b = adm.TokenBucket(rate=20, per=1.0, burst=1)  # one token per 50 ms
    assert b.try_acquire()
    t = threading.Thread(target=b.acquire_blocking)
    t.start()
    deadline = time.monotonic() + 2.0
    while b.waiting == 0 and t.is_alive() and time.monotonic() < deadline:
        time.sleep(0.001)
    t.join()
    h = b.stats().wait
    assert h.count == 2
    assert h.waited == 1
    # Real time: at least the reserved wait (up to 50 ms), less than a second.
    assert 0.0 < h.sum < 1.0
    assert b.waiting == 0


def test_all_of_records_its_wait_in_each_limiter() -> None:
    rpm = adm.TokenBucket(rate=100, per=1.0, burst=1)
    tpm = adm.TokenBucket(rate=1000, per=1.0, burst=10)
    both = adm.all_of(rpm, tpm)
    assert both.try_acquire(costs=(1, 1))
    both.acquire_blocking(costs=(1, 1))  # rpm: one token per 10 ms
    for lim in (rpm, tpm):
        h = lim.stats().wait
        assert h.count == 2
        assert h.waited == 1


# ---------------------------------------------------------------------------------------------
# Semaphores (timed natively: from queueing to being granted)
# ---------------------------------------------------------------------------------------------


def test_semaphore_times_waiters_from_queueing_to_grant() -> None:
    s = adm.Semaphore(1)
    s.acquire_blocking()
    t = threading.Thread(target=lambda: (s.acquire_blocking(), s.release()))
    t.start()
    while s.waiting == 0:
        time.sleep(0.001)
    time.sleep(0.03)
    st = s.stats()
    assert st.oldest_wait >= 0.03
    s.release()
    t.join()
    st = s.stats()
    assert st.oldest_wait == 0.0
    h = st.wait
    assert h.count == st.admitted == 2
    assert h.counts[0] == 1
    assert h.waited == 1
    assert 0.03 <= h.sum < 2.0
    assert h.quantile(1.0) >= 0.05


def test_semaphore_refusals_are_not_observed() -> None:
    s = adm.Semaphore(1)
    assert s.try_acquire()
    assert not s.try_acquire()
    with pytest.raises(adm.AcquireTimeout):
        s.acquire_blocking(timeout=0.01)
    s.release()
    st = s.stats()
    assert (st.admitted, st.rejected, st.timed_out) == (1, 1, 1)
    assert st.wait.count == 1
    assert st.wait.waited == 0


@pytest.mark.anyio
async def test_semaphore_async_waiters_are_all_counted() -> None:
    s = adm.Semaphore(3)

    async def worker() -> None:
        async with s:
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        for _ in range(60):
            tg.start_soon(worker)
    st = s.stats()
    assert st.admitted == 60
    assert st.wait.count == 60
    assert st.wait.waited > 0  # 57 of them had to queue behind the first three
    assert st.waiting == 0
    assert st.oldest_wait == 0.0


def test_snapshots_never_go_down_under_threads() -> None:
    """A scraper reading while threads wait and commit never sees a bucket decrease."""
    s = adm.Semaphore(2)
    stop = threading.Event()

    def worker() -> None:
        while not stop.is_set():
            s.acquire_blocking()
            s.release()

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    last = s.stats().wait.cumulative()
    try:
        for _ in range(2000):
            cur = s.stats().wait.cumulative()
            assert all(c >= p for c, p in zip(cur, last, strict=False)), (last, cur)
            last = cur
    finally:
        stop.set()
        for t in threads:
            t.join()
    st = s.stats()
    assert st.wait.count == st.admitted
