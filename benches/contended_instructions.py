"""Instructions per task for 1,000 tasks through a limit of 10, counted by callgrind.

The machines are shared and their timings noisy; instruction counts are not. This runs the
same workload as the "1,000 tasks through a limit of 10, sleep(0) body" benchmark under
``valgrind --tool=callgrind`` twice per implementation (few and more rounds) and reports the
difference per task, so start-up and import costs cancel out. Instructions are not time
(cache misses, system calls and locked instructions cost more than they count), so this is
a noise-free companion to the timed benchmark, not a replacement.

Usage: .venv/bin/python benches/contended_instructions.py [ROUNDS_FEW ROUNDS_MORE]
Needs valgrind. Takes about two minutes.
"""

from __future__ import annotations

import asyncio
import gc
import sys

# The timed benchmark's own round (bench_async.py is next to this file, on sys.path).
from bench_async import CONTENDED, TASKS, _make_in_loop, _tasks_round
from callgrind import per_call

LIMIT = 10

#: This script's names for the rows of the timed benchmark it counts.
ROWS = {"none": "no limit", "admission": "admission.Semaphore", "asyncio": "asyncio.Semaphore"}
IMPLEMENTATIONS = tuple(ROWS)


def workload(which: str, rounds: int) -> None:
    [make] = [row[4] for row in CONTENDED if row[0] == ROWS[which]]
    loop = asyncio.new_event_loop()
    limiter = loop.run_until_complete(_make_in_loop(make))
    one_round = _tasks_round(limiter)
    # The modules imported so far (pytest, anyio, ...) are a large heap that every full
    # collection would traverse; a full collection is a rare, discrete event, so whether one
    # or two fall within the counted rounds would move the per-task figure by a thousand
    # instructions. Frozen, they are left out and only the workload's own objects count.
    gc.collect()
    gc.freeze()
    for _ in range(rounds):
        loop.run_until_complete(one_round())
    loop.close()


def main() -> None:
    few, more = (int(a) for a in sys.argv[1:3]) if len(sys.argv) >= 3 else (10, 30)
    per_task = {which: per_call(__file__, which, TASKS, few, more) for which in IMPLEMENTATIONS}
    base = per_task["none"]
    print(f"instructions per task, {TASKS} tasks through a limit of {LIMIT}, sleep(0) body")
    print(f"(callgrind, rounds {few} and {more}; the difference per task)\n")
    print("| implementation | instructions per task | over no limit |")
    print("| --- | ---: | ---: |")
    for which, n in per_task.items():
        print(f"| {which} | {n:,.0f} | {n - base:,.0f} |")
    ours, theirs = per_task["admission"] - base, per_task["asyncio"] - base
    print(f"\nadmission's overhead / asyncio.Semaphore's: {ours / theirs:.2f}")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--workload":
        workload(sys.argv[2], int(sys.argv[3]))
    else:
        main()
