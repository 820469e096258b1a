"""1,000 tasks through a limit of 10, timed in interleaved rounds.

The pytest-benchmark group "1,000 tasks through a limit of 10, sleep(0) body" times each
implementation's rounds back to back, so the rows are measured a second or two apart. On a
shared host, a burst of load from another tenant can then slow one row and not the others,
and the ratio between rows is skewed. Here the rounds alternate: one round of the baseline,
one of admission, one of asyncio.Semaphore, one of anyio, and again. A burst then hits all
of them alike. Each row is summarised by its median round and by the mean of its fastest
quarter of rounds.

The workload is the benchmark's own (``_tasks_round`` from bench_async.py): each task does
``async with limiter: await asyncio.sleep(0)`` (the baseline: just the sleep), under
``asyncio.gather``, each round in one ``run_until_complete``. The limiter is made once per
implementation and reused for every round, as in the benchmark.

Usage: .venv/bin/python benches/contended_interleaved.py [ROUNDS]   (default 200, ~15 s)
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

# The timed benchmark's own round and rows (bench_async.py is next to this file).
from bench_async import CONTENDED, TASKS, _make_in_loop, _tasks_round

WARMUP_ROUNDS = 5


def measure(rounds: int) -> dict[str, list[float]]:
    """Seconds per round of each row of CONTENDED, rounds interleaved."""
    loop = asyncio.new_event_loop()
    try:
        makers: dict[str, Callable[[], Awaitable[None]]] = {}
        for key, _impl, _role, _baseline, make in CONTENDED:
            limiter: Any = loop.run_until_complete(_make_in_loop(make))
            makers[key] = _tasks_round(limiter)
        times: dict[str, list[float]] = {key: [] for key in makers}
        for i in range(WARMUP_ROUNDS + rounds):
            for key, one_round in makers.items():
                start = time.perf_counter()
                loop.run_until_complete(one_round())
                elapsed = time.perf_counter() - start
                if i >= WARMUP_ROUNDS:
                    times[key].append(elapsed)
        return times
    finally:
        loop.close()


def fastest_quarter(xs: list[float]) -> float:
    return statistics.mean(sorted(xs)[: max(1, len(xs) // 4)])


def report(times: dict[str, list[float]]) -> str:
    base_key = "no limit"
    lines = [
        f"{TASKS:,} tasks through a limit of 10, sleep(0) body; "
        f"{len(times[base_key])} interleaved rounds per row; ns per task",
        "",
        "| implementation | median | fastest quarter | overhead (median)"
        " | overhead (fastest quarter)"
        " | overhead vs asyncio.Semaphore's (median / fastest quarter) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    per_task = {
        key: (statistics.median(xs) / TASKS * 1e9, fastest_quarter(xs) / TASKS * 1e9)
        for key, xs in times.items()
    }
    base = per_task[base_key]
    peer = per_task["asyncio.Semaphore"]
    peer_overhead = (peer[0] - base[0], peer[1] - base[1])
    for key, (median, quarter) in per_task.items():
        overhead = (median - base[0], quarter - base[1])
        ratio = "-"
        if key != base_key:
            ratio = f"{overhead[0] / peer_overhead[0]:.2f}x / {overhead[1] / peer_overhead[1]:.2f}x"
        lines.append(
            f"| {key} | {median:,.0f} | {quarter:,.0f} | {overhead[0]:+,.0f}"
            f" | {overhead[1]:+,.0f} | {ratio} |"
        )
    return "\n".join(lines)


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    print(report(measure(rounds)))


if __name__ == "__main__":
    main()
