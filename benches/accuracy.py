"""Async accuracy (issue 3): how close to the rate, and how late, do waiters get in?

A 1,000/s bucket (burst 1 by default) and 50 tasks that acquire one token each, as fast as
they can, for 2 s, on asyncio. Reported, for admission and for aiolimiter (peer) in the same
run:

- admitted vs ideal (``burst + rate * elapsed``), and the relative error;
- lateness of each admission: its time minus the ideal time of the k-th admission on the
  schedule the first admission starts (``first + (k - burst + 1) / rate``), p50 / p99 / max
  (a limiter that lags builds up lateness; one that runs on time shows only wake-up jitter);
- the loop's own overshoot on ``asyncio.sleep(0.001)`` (p99), the floor any timer-based
  wait sits on.

This is a measurement, not a test: nothing here asserts. Run: ``python benches/accuracy.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

import aiolimiter

import admission as adm


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def drive(
    acquire: Callable[[], Awaitable[None]], *, tasks: int, seconds: float
) -> tuple[list[float], float]:
    times: list[float] = []
    start = time.monotonic()
    deadline = start + seconds

    async def worker() -> None:
        while True:
            await acquire()
            now = time.monotonic()
            if now > deadline:
                return
            times.append(now)

    await asyncio.gather(*(worker() for _ in range(tasks)))
    return times, start


async def sleep_overshoot(samples: int = 500) -> list[float]:
    out = []
    for _ in range(samples):
        t = time.monotonic()
        await asyncio.sleep(0.001)
        out.append(time.monotonic() - t - 0.001)
    return out


def summarize(
    name: str, times: list[float], start: float, rate: float, burst: int, seconds: float
) -> str:
    times.sort()
    ideal = burst + rate * seconds
    first = times[0]
    late = [t - (first + max(0, k + 1 - burst) / rate) for k, t in enumerate(times)]
    error = 100 * (len(times) - ideal) / ideal
    return (
        f"| {name} | {burst} | {len(times)} | {ideal:.0f} | {error:+.2f} % | "
        f"{1000 * statistics.median(late):.3f} | {1000 * percentile(late, 0.99):.3f} | "
        f"{1000 * max(late):.3f} |"
    )


async def main(rate: float, bursts: list[int], tasks: int, seconds: float) -> None:
    over = await sleep_overshoot()
    print(
        f"asyncio.sleep(0.001) overshoot: p50 {1000 * statistics.median(over):.3f} ms, "
        f"p99 {1000 * percentile(over, 0.99):.3f} ms\n"
    )
    print(f"{tasks} tasks, {rate:g}/s, {seconds:g} s\n")
    print(
        "| limiter | burst | admitted | ideal | error | lateness p50 (ms) | p99 (ms) | max (ms) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for burst in bursts:
        await one(rate, burst, tasks, seconds)


async def one(rate: float, burst: int, tasks: int, seconds: float) -> None:
    bucket = adm.TokenBucket(rate=rate, per=1.0, burst=burst)
    times, start = await drive(bucket.acquire, tasks=tasks, seconds=seconds)
    print(summarize("admission TokenBucket", times, start, rate, burst, seconds))
    limiter = aiolimiter.AsyncLimiter(max_rate=burst, time_period=burst / rate)
    times, start = await drive(limiter.acquire, tasks=tasks, seconds=seconds)
    print(summarize("aiolimiter AsyncLimiter", times, start, rate, burst, seconds))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--burst", type=int, action="append", help="repeatable; default 1 and 10")
    parser.add_argument("--tasks", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=2.0)
    a = parser.parse_args()
    asyncio.run(main(a.rate, a.burst or [1, 10], a.tasks, a.seconds))
