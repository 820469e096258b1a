"""The worker processes of test_shared_memory_keyed.py: a module of its own, light to import,
because the spawn start method imports it in every worker."""

from __future__ import annotations

import os
from multiprocessing.connection import Connection

import admission as adm

KEYS = 10
BURST = 50


def per_user(store: adm.stores.SharedMemory) -> adm.stores.SharedKeyedTokenBucket:
    # One token an hour after the burst: nothing refills while a test runs.
    return adm.KeyedTokenBucket(
        rate=1, per=3600, burst=BURST, name="users", store=store, max_keys=1000
    )


def hammer_keys(store: adm.stores.SharedMemory, rounds: int, out: Connection) -> None:
    """Tries every key in turn, ``rounds`` times; sends what it got per key."""
    limiter = per_user(store)
    out.send("ready")
    out.recv()  # go
    admitted = [0] * KEYS
    for i in range(rounds * KEYS):
        key = f"user:{(i + os.getpid()) % KEYS}"
        if limiter.try_acquire(key):
            admitted[int(key[5:])] += 1
    out.send(admitted)


CHURN_KEYS = 1000


def churn(store: adm.stores.SharedMemory, out: Connection) -> None:
    """Takes tokens of ``CHURN_KEYS`` keys of its own in turn without end, until killed."""
    limiter = per_user(store)
    out.send(os.getpid())
    n = 0
    while True:
        limiter.try_acquire(f"churn:{n % CHURN_KEYS}")
        n += 1
