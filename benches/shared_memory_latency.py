"""Wake-up latency of a shared semaphore's waiter in another process (issue 16).

Three cases, each repeated ``ROUNDS`` times, median and 95th percentile printed:

- ``release``: a process releases the only permit while another process waits for it in a
  thread (``acquire_blocking``: asleep on the futex of the shared word);
- ``release, async``: the same with an asyncio waiter (``await acquire()``: polls);
- ``kill -9``: the holder is killed; the waiting thread finds its lease dead.

Times are ``time.monotonic()`` (CLOCK_MONOTONIC, one clock for every process of the host),
from just before the release (or the kill) to just after the waiter was admitted.

    .venv/bin/python benches/shared_memory_latency.py
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import statistics
import sys
import time
import uuid
from multiprocessing.connection import Connection

import admission as adm

ROUNDS = int(os.environ.get("ROUNDS", "30"))
SPAWN = multiprocessing.get_context("spawn")


def _waiter(store: adm.stores.SharedMemory, conn: Connection, asynchronous: bool) -> None:
    sem = adm.Semaphore(1, name="latency", store=store)
    while conn.recv() == "wait":
        conn.send("waiting")
        if asynchronous:
            asyncio.run(sem.acquire(timeout=30))
        else:
            sem.acquire_blocking(timeout=30)
        conn.send(time.monotonic())
        sem.release()


def _holder(store: adm.stores.SharedMemory, conn: Connection) -> None:
    sem = adm.Semaphore(1, name="latency", store=store)
    sem.acquire_blocking(timeout=30)
    conn.send("holding")
    time.sleep(60)


def _release_rounds(store: adm.stores.SharedMemory, asynchronous: bool) -> list[float]:
    sem = adm.Semaphore(1, name="latency", store=store)
    here, there = SPAWN.Pipe()
    waiter = SPAWN.Process(target=_waiter, args=(store, there, asynchronous))
    waiter.start()
    out = []
    for _ in range(ROUNDS):
        sem.acquire_blocking(timeout=30)
        here.send("wait")
        assert here.recv() == "waiting"
        time.sleep(0.05)  # asleep now
        released = time.monotonic()
        sem.release()
        out.append(here.recv() - released)
    here.send("stop")
    waiter.join(30)
    return out


def _kill_rounds(store: adm.stores.SharedMemory) -> list[float]:
    here, there = SPAWN.Pipe()
    waiter = SPAWN.Process(target=_waiter, args=(store, there, False))
    waiter.start()
    out = []
    for _ in range(ROUNDS):
        mine, theirs = SPAWN.Pipe()
        holder = SPAWN.Process(target=_holder, args=(store, theirs))
        holder.start()
        assert mine.recv() == "holding"
        here.send("wait")
        assert here.recv() == "waiting"
        time.sleep(0.05)
        assert holder.pid is not None
        killed = time.monotonic()
        os.kill(holder.pid, signal.SIGKILL)
        out.append(here.recv() - killed)
        holder.join(30)
    here.send("stop")
    waiter.join(30)
    return out


def main() -> None:
    store = adm.stores.SharedMemory(f"latency-{uuid.uuid4().hex}")
    try:
        cases = {
            "release (thread, futex)": _release_rounds(store, False),
            "release (asyncio, polling)": _release_rounds(store, True),
            "kill -9 (thread)": _kill_rounds(store),
        }
    finally:
        store.unlink()
    print(f"CPython {sys.version.split()[0]}, {ROUNDS} rounds; ms from release/kill to admission")
    print("| case | median | p95 | max |")
    print("| --- | ---: | ---: | ---: |")
    for name, times in cases.items():
        ms = sorted(t * 1e3 for t in times)
        p95 = ms[int(0.95 * (len(ms) - 1))]
        print(f"| {name} | {statistics.median(ms):.2f} | {p95:.2f} | {ms[-1]:.2f} |")


if __name__ == "__main__":
    main()
