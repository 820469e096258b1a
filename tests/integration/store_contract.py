"""Checks every network store must pass, shared by the stores' test files."""

from __future__ import annotations

import random
from fractions import Fraction

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


async def rates_answer_as_the_reference(
    store: NetworkStore, name: str, rounds: int = 300, seed: int = 17
) -> None:
    """``rounds`` seeded random steps on one bucket and one key of a keyed bucket (100 µs
    interval, burst 5): a `rate_many` of 1 to 8 requests (random costs and max waits:
    none, 0, or up to 600 µs), a single `rate`, or a `rate_give_back` of the last admitted
    charge. Every reply equals `MemoryStore`'s (the contract's reference) for the same
    requests made **one after the other** at the server's now the reply reports: the
    coalesced decision is the sequential one, and the two kinds of call share one state."""
    rng = random.Random(seed)
    now_us = [0]
    # Exact: MemoryStore reads round(clock() * 10**6), which a float of seconds may miss.
    reference = adm.stores.MemoryStore(clock=lambda: Fraction(now_us[0], 1_000_000))
    interval, burst = 100, 5
    last: dict[bytes | None, tuple[int, int]] = {}  # key -> (cost, tat) of its last charge
    for _ in range(rounds):
        key = rng.choice((None, b"user:7"))
        step = rng.random()
        if step < 0.6:
            requests = [
                (rng.randint(1, burst), rng.choice((-1, 0, 0, 0, rng.randint(0, 6 * interval))))
                for _ in range(rng.randint(1, 8))
            ]
            got = await store.rate_many(name, key, interval, burst, requests)
            assert len(got) == len(requests)
            assert len({reply.now_us for reply in got}) == 1  # one reading of the clock
            now_us[0] = got[0].now_us
            want = [await reference.rate(name, key, interval, burst, c, w) for c, w in requests]
        elif step < 0.85:
            cost, max_wait = rng.randint(1, burst), rng.choice((-1, 0, 3 * interval))
            got = [await store.rate(name, key, interval, burst, cost, max_wait)]
            now_us[0] = got[0].now_us
            want = [await reference.rate(name, key, interval, burst, cost, max_wait)]
            requests = [(cost, max_wait)]
        else:
            if key in last:
                cost, tat = last.pop(key)
                given = await store.rate_give_back(name, key, interval, cost, tat)
                if given != await reference.rate_give_back(name, key, interval, cost, tat):
                    # Allowed one way only: the store dropped a TAT that had passed (the
                    # bucket was full again), which the reference keeps, to the same effect.
                    clock = await store.rate(name + "-clock", None, interval, burst, 1, 0)
                    assert not given, (key, cost, tat)
                    assert tat <= clock.now_us, (key, cost, tat)
            continue
        assert got == want, (key, requests)
        for (cost, _), reply in zip(requests, got, strict=True):
            if reply.admitted:
                last[key] = (cost, reply.tat_us)
