"""Worker threads sharing a token bucket and a semaphore, printed as it happens."""

from __future__ import annotations

import threading
import time

import admission as adm

__all__ = ["run"]


def run(*, threads: int, calls: int, rate: float, burst: int, limit: int, work: float) -> int:
    """Runs the demo; returns a process exit code (0 when every invariant held)."""
    bucket = adm.TokenBucket(rate=rate, per=1.0, burst=burst, name="api-rate")
    sem = adm.Semaphore(limit, name="api-concurrency")
    start = time.monotonic()
    lock = threading.Lock()
    in_flight = 0
    peak = 0
    admitted_at: list[float] = []

    print(
        f"{threads} threads x {calls} calls through TokenBucket(rate={rate}/s, burst={burst}) "
        f"and Semaphore({limit}); each call takes {work * 1000:.0f} ms\n"
    )
    print(f"{'time':>8}  {'thread':<10} {'event':<9} {'in flight':>9}")

    def worker(index: int) -> None:
        nonlocal in_flight, peak
        for _ in range(calls):
            with bucket, sem:
                now = time.monotonic() - start
                with lock:
                    in_flight += 1
                    peak = max(peak, in_flight)
                    admitted_at.append(now)
                    print(f"{now:8.3f}s  worker-{index:<3} admitted  {in_flight:>5}/{limit}")
                time.sleep(work)
                with lock:
                    in_flight -= 1

    pool = [threading.Thread(target=worker, args=(i,), name=f"worker-{i}") for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    elapsed = time.monotonic() - start

    total = threads * calls
    # The bucket's bound: over any span t, at most burst + rate * t admissions.
    worst = 0.0
    admitted_at.sort()
    for i, a in enumerate(admitted_at):
        for j in range(i, len(admitted_at)):
            worst = max(worst, (j - i + 1) - (burst + rate * (admitted_at[j] - a)))
    b, s = bucket.stats(), sem.stats()
    print(
        f"\n{total} calls in {elapsed:.2f} s "
        f"(ideal at {rate:g}/s after a burst of {burst}: {(total - burst) / rate:.2f} s)"
    )
    print(f"peak in flight: {peak} (limit {limit}); semaphore high-water: {s.high_water}")
    print(f"rate bound burst + rate*t held: {'yes' if worst <= 1e-3 else 'NO'}")
    print(f"\n{'limiter':<16} {'admitted':>8} {'rejected':>8} {'timed out':>9} {'cancelled':>9}")
    for st in (b, s):
        print(
            f"{st.name or '-':<16} {st.admitted:>8} {st.rejected:>8} {st.timed_out:>9} "
            f"{st.cancelled:>9}"
        )
    ok = peak <= limit and worst <= 1e-3 and b.admitted == total and s.admitted == total
    return 0 if ok else 1
