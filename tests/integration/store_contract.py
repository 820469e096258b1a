"""Checks every network store must pass, shared by the stores' test files."""

from __future__ import annotations

import random

import admission as adm
from admission.stores import NetworkStore


async def semaphores_answer_as_the_reference(
    store: NetworkStore, name: str, lease_us: int, requests: int = 2000, seed: int = 17
) -> None:
    """``requests`` seeded random requests on a semaphore of 2 (``lease_us`` too long to
    expire during the check): every reply is `MemoryStore`'s (the contract's reference),
    fences aside, which only have to increase (and stay a holder's own when it asks again)."""
    rng = random.Random(seed)
    holders = [f"h{i}" for i in range(6)]
    reference = adm.stores.MemoryStore()
    last_fence, fences = 0, {}
    ops = ("acquire", "acquire", "release", "renew", "state")
    for _ in range(requests):
        op, holder = rng.choice(ops), rng.choice(holders)
        if op == "acquire":
            queue = rng.random() < 0.7
            got = await store.semaphore_acquire(name, 2, holder, lease_us, queue)
            want = await reference.semaphore_acquire(name, 2, holder, lease_us, queue)
            assert got._replace(fence=0) == want._replace(fence=0), (holder, queue)
            if got.granted and holder in fences:  # asked again: its own fence
                assert got.fence == fences[holder]
            elif got.granted:
                assert got.fence > last_fence
                fences[holder] = last_fence = got.fence
        elif op == "release":
            assert await store.semaphore_release(name, holder) == (
                await reference.semaphore_release(name, holder)
            )
            fences.pop(holder, None)
        elif op == "renew":
            assert await store.semaphore_renew(name, [holder], lease_us) == (
                await reference.semaphore_renew(name, [holder], lease_us)
            )
        else:
            assert await store.semaphore_state(name) == await reference.semaphore_state(name)
