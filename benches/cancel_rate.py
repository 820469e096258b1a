"""The admitted rate while callers give up (issue 11, case 1), admission against aiolimiter.

200 tasks each doing ``await asyncio.wait_for(limiter.acquire(), 0.05)`` in a loop for
``SECONDS`` on limiters of 1,000 per second with bursts of 10, on the real clock and loop;
rows run in alternating rounds (robust to a noisy host). Prints the admitted rate of each.

    .venv/bin/python benches/cancel_rate.py [SECONDS] [ROUNDS]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import aiolimiter

import admission as adm

ROWS: list[tuple[str, Callable[[], Any]]] = [
    ("admission TokenBucket(rate=1000, burst=10)", lambda: adm.TokenBucket(rate=1000, burst=10)),
    ("admission SlidingWindow(100, 0.1)", lambda: adm.SlidingWindow(100, 0.1)),
    ("aiolimiter.AsyncLimiter(10, 0.01)", lambda: aiolimiter.AsyncLimiter(10, 0.01)),
]


async def callers(lim: Any, seconds: float) -> int:
    admitted = 0
    deadline = time.monotonic() + seconds

    async def caller() -> None:
        nonlocal admitted
        while time.monotonic() < deadline:
            try:
                await asyncio.wait_for(lim.acquire(), 0.05)
            except asyncio.TimeoutError:
                continue
            if time.monotonic() < deadline:
                admitted += 1

    await asyncio.gather(*(caller() for _ in range(200)))
    return admitted


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 3.0
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    rates: dict[str, list[float]] = {name: [] for name, _ in ROWS}
    for _ in range(rounds):
        for name, make in ROWS:
            rates[name].append(asyncio.run(callers(make(), seconds)) / seconds)
    print(
        f"| limiter (1,000/s, 200 tasks, wait_for 50 ms, {seconds:g} s x {rounds}) "
        "| admitted per second (median) | min | max | of the rate |"
    )
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, values in rates.items():
        med = statistics.median(values)
        print(
            f"| {name} | {med:,.0f} | {min(values):,.0f} | {max(values):,.0f} | {med / 1000:.1%} |"
        )


if __name__ == "__main__":
    main()
