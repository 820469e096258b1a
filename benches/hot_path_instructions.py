"""Instructions per call of the uncontended hot paths, counted by callgrind (noise-free).

Each workload is one operation called in a loop, run under ``valgrind --tool=callgrind`` at
two sizes; the difference per call cancels start-up and imports. The awaitables are driven by
hand (``send(None)``, no event loop): none of them suspends. Use it to compare two builds on
a noisy machine: run it once as is and once with ``PYTHONPATH`` pointing at the other build's
``admission`` package (a directory holding ``admission/`` with its ``_native`` extension).

Usage: .venv/bin/python benches/hot_path_instructions.py [WORKLOAD ...]
Needs valgrind; about a minute per workload.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import admission as adm

# The counter every *_instructions.py script shares (callgrind.py is next to this file).
from callgrind import print_table

CALLS = 200_000
#: Rounds of CALLS at the two sizes counted.
FEW, MORE = 1, 4


def _drive(awaitable: Awaitable[Any]) -> None:
    step = awaitable.__await__()
    try:
        step.send(None)
    except StopIteration:
        return
    raise AssertionError("the awaitable suspended: it needs a loop")


def workloads() -> dict[str, Callable[[], None]]:
    """Name -> one round of CALLS operations."""
    huge = 10**15  # never refuses within a run
    bucket = adm.TokenBucket(rate=1e9, burst=huge)
    window = adm.SlidingWindow(limit=2**32 - 1, window=1.0)
    sem = adm.Semaphore(10)
    both = adm.all_of(adm.TokenBucket(rate=1e9, burst=huge), adm.TokenBucket(rate=1e9, burst=huge))
    calls = range(CALLS)

    def bucket_try_acquire() -> None:
        f = bucket.try_acquire
        for _ in calls:
            f()

    def window_try_acquire() -> None:
        f = window.try_acquire
        for _ in calls:
            f()

    def bucket_await_acquire() -> None:
        f = bucket.acquire
        for _ in calls:
            _drive(f())

    def window_await_acquire() -> None:
        f = window.acquire
        for _ in calls:
            _drive(f())

    def semaphore_await_acquire_release() -> None:
        f, g = sem.acquire, sem.release
        for _ in calls:
            _drive(f())
            g()

    def semaphore_try_acquire_release() -> None:
        f, g = sem.try_acquire, sem.release
        for _ in calls:
            f()
            g()

    def semaphore_with() -> None:
        for _ in calls:
            with sem:
                pass

    def all_of_await_acquire() -> None:
        f = both.acquire
        for _ in calls:
            _drive(f(costs=(1, 850)))

    return {
        fn.__name__: fn
        for fn in (
            bucket_try_acquire,
            window_try_acquire,
            bucket_await_acquire,
            window_await_acquire,
            semaphore_try_acquire_release,
            semaphore_await_acquire_release,
            semaphore_with,
            all_of_await_acquire,
        )
    }


def run(which: str, rounds: int) -> None:
    fn = workloads()[which]
    gc.collect()
    gc.disable()  # a collection is a rare, discrete event: keep it out of the difference
    for _ in range(rounds):
        fn()


def main(names: list[str]) -> None:
    print_table(__file__, names or list(workloads()), CALLS, FEW, MORE)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--workload":
        run(sys.argv[2], int(sys.argv[3]))
    else:
        main(sys.argv[1:])
