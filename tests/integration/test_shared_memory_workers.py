"""The worker processes of test_shared_memory.py: a module of its own, light to import,
because the spawn start method imports it in every worker."""

from __future__ import annotations

import os
import time
from multiprocessing.connection import Connection
from typing import Any

import admission as adm

BOUND = 30.0  # every wait of these tests ends within this many seconds


def hammer_bucket(store: adm.stores.SharedMemory, out: Connection) -> None:
    bucket = adm.TokenBucket(rate=1000, per=1, burst=100, name="api", store=store)
    out.send("ready")
    start, end = out.recv()
    while time.monotonic() < start:
        pass
    admitted = 0
    last = start
    while time.monotonic() < end:
        if bucket.try_acquire():
            admitted += 1
            last = time.monotonic()  # not before the admission's own clock read
    out.send((admitted, last))


def hammer_semaphore(store: adm.stores.SharedMemory, holding: Any, out: Connection) -> None:
    sem = adm.Semaphore(5, name="db", store=store)
    out.send("ready")
    end = out.recv()
    most = rounds = 0
    while time.monotonic() < end:
        with sem:
            # The test's own count of holders, under its own lock: what really runs at once.
            with holding.get_lock():
                holding.value += 1
                most = max(most, holding.value)
            time.sleep(0.0005)
            with holding.get_lock():
                holding.value -= 1
        rounds += 1
    out.send((most, rounds))


def hold_three(store: adm.stores.SharedMemory, ready: Connection) -> None:
    sem = adm.Semaphore(3, name="held", store=store)
    sem.acquire_blocking(3, timeout=BOUND)
    ready.send(os.getpid())
    time.sleep(BOUND)  # killed long before this


def wait_for_one(store: adm.stores.SharedMemory, out: Connection, asynchronous: bool) -> None:
    sem = adm.Semaphore(3, name="held", store=store)
    out.send("waiting")
    if asynchronous:
        import asyncio

        asyncio.run(sem.acquire(timeout=BOUND))
    else:
        sem.acquire_blocking(timeout=BOUND)
    out.send(time.monotonic())
    sem.release()


def take_every_token(store: adm.stores.SharedMemory, out: Connection) -> None:
    """Takes a token of the "turns" bucket whenever one comes back, until told to stop."""
    bucket = adm.TokenBucket(rate=20, per=1, burst=5, name="turns", store=store)
    while bucket.try_acquire():
        pass  # the burst, spent
    out.send("hammering")
    taken = 0
    while not out.poll():
        if bucket.try_acquire():
            taken += 1
    out.recv()
    out.send(taken)
