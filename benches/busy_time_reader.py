"""The cost of the network-store deadlines' busy-time reading (`remote._busy_time`), A/B in
one process: a limiter's decision on `MemoryStore` (no I/O; its ``latency`` makes each round
trip suspend, so that its deadline is watched) with the reading by ``time.thread_time``
against the ``/proc/thread-self/schedstat`` reader, in interleaved rounds (the order
alternating each round); then how often the reading is taken, and what one reading costs.

Usage: .venv/bin/python benches/busy_time_reader.py [ROUNDS [LATENCY_S [CALLS]]]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
import timeit
from collections.abc import Callable

import admission as adm
from admission.stores import MemoryStore, RemoteTokenBucket, remote

READERS: dict[str, Callable[[], float]] = {
    "thread_time": time.thread_time,
    "schedstat": remote._time_on_or_waiting_for_a_cpu,
}
ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 11
LATENCY = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0001
CALLS = int(sys.argv[3]) if len(sys.argv) > 3 else 2_000


def _bucket(name: str) -> RemoteTokenBucket:
    return adm.TokenBucket(
        rate=1e9, per=1, burst=10**6, name=name, store=MemoryStore(latency=LATENCY)
    )


async def _per_call(bucket: RemoteTokenBucket) -> float:
    start = time.perf_counter()
    for _ in range(CALLS):
        await bucket.acquire(timeout=0)
    return (time.perf_counter() - start) / CALLS * 1e6


async def main() -> None:
    bucket = _bucket("ab")
    await bucket.acquire(timeout=0)
    times: dict[str, list[float]] = {name: [] for name in READERS}
    for i in range(ROUNDS):
        for name in list(READERS)[:: 1 if i % 2 == 0 else -1]:
            remote._busy_time = READERS[name]
            times[name].append(await _per_call(bucket))
    base = statistics.median(times["thread_time"])
    print("| reader | median µs per decision | best | vs thread_time |")
    print("| --- | ---: | ---: | ---: |")
    for name, taken in times.items():
        median = statistics.median(taken)
        print(f"| {name} | {median:.1f} | {min(taken):.1f} | {median / base:.3f} |")

    readings = 0

    def counted() -> float:
        nonlocal readings
        readings += 1
        return time.thread_time()

    remote._busy_time = counted
    start = time.perf_counter()
    per_call = await _per_call(_bucket("count"))
    per_second = readings / (time.perf_counter() - start)
    print(
        f"readings: {readings / CALLS:.3f} per decision, {per_second:.0f} a second "
        f"({per_call:.0f} µs a decision)"
    )
    for name, read in READERS.items():
        cost = min(timeit.repeat(read, number=20_000, repeat=3)) / 20_000 * 1e6
        print(f"one reading, {name}: {cost:.2f} µs")


if __name__ == "__main__":
    asyncio.run(main())
