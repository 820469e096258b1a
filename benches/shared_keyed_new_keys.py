"""What a new key costs in a keyed token bucket, in-process and in the shared-memory store
(issue 16): ``try_acquire`` of 200,000 keys never seen, ``"user:<n>"``, on a fresh limiter
with ``max_keys=200_000``, best of 3 runs each; ns per new key.

    .venv/bin/python benches/shared_keyed_new_keys.py

A shared table's new key is a claim (a CAS, the key's hash written, a fence, a scan of its
16 slots for another claim of the same key); every later call is `bench_shared_keyed.py`'s.
"""

from __future__ import annotations

import time
import uuid

import admission as adm

N = 200_000


def main() -> None:
    keys = [f"user:{i}" for i in range(N)]
    store = adm.stores.SharedMemory(f"bench-{uuid.uuid4().hex}")
    try:
        for label in ("in-process", "shared"):
            best = float("inf")
            for _ in range(3):
                if label == "shared":
                    name = f"k{uuid.uuid4().hex}"
                    limiter = adm.KeyedTokenBucket(
                        rate=1, burst=10**6, max_keys=N, name=name, store=store
                    )
                    acquire = limiter.try_acquire
                else:
                    acquire = adm.KeyedTokenBucket(rate=1, burst=10**6, max_keys=N).try_acquire
                start = time.perf_counter_ns()
                for key in keys:
                    acquire(key)
                best = min(best, (time.perf_counter_ns() - start) / N)
            print(f"{label}: {best:,.0f} ns per new key (best of 3 runs of {N:,} new keys)")
    finally:
        store.unlink()


if __name__ == "__main__":
    main()
