"""Checks every network store must pass, shared by the stores' test files."""

from __future__ import annotations

import asyncio
import random
from fractions import Fraction

import pytest

import admission as adm
from admission.stores import NetworkStore, RateReply
from admission.stores.network import MAX_SPAN_US, QUEUE_ENTRY_US, RATE_MANY_MAX


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


async def a_dead_waiters_entry_expires_before_its_lease(store: NetworkStore, name: str) -> None:
    """A waiter queued with a lease of an hour that never asks again (its process died)
    drops out of the queue `QUEUE_ENTRY_US` after it last asked: the waiter behind it is
    then granted the permit freed meanwhile, and the queue is empty."""
    hour = 3600 * 1_000_000
    assert (await store.semaphore_acquire(name, 1, "holder", hour, True)).granted
    dead = await store.semaphore_acquire(name, 1, "dead", hour, True)
    assert (dead.granted, dead.ahead) == (False, 0)
    assert await store.semaphore_release(name, "holder")
    live = await store.semaphore_acquire(name, 1, "live", hour, True)
    assert (live.granted, live.ahead) == (False, 1)  # behind the dead one, a permit free
    await asyncio.sleep(QUEUE_ENTRY_US / 1_000_000 + 0.2)
    assert (await store.semaphore_acquire(name, 1, "live", hour, True)).granted
    assert await store.semaphore_state(name) == (1, 0)


async def rates_answer_as_the_reference(
    store: NetworkStore, name: str, rounds: int = 300, seed: int = 17
) -> None:
    """``rounds`` seeded random steps on one bucket and a few keys of a keyed bucket (100 µs
    interval, burst 5): a `rate_many` of 1 to 8 requests on one bucket (random costs and max
    waits: none, 0, or up to 600 µs), a `rate_batch` of 1 to 12 requests on buckets drawn
    from seven (so some repeat, in any order), of one request on each of 2 to 7 of them
    with one max wait (the batch a keyed limiter's callers on many keys make: PostgreSQL
    decides it with a statement of its own), or of 2 to 12 requests on 1 to 4 of them, each
    bucket's at one cost, with one max wait (hot keys: PostgreSQL's statement decides
    those too when a full bucket holds them), a single `rate`, or a `rate_give_back` of a
    bucket's last admitted charge. Every reply equals `MemoryStore`'s (the contract's
    reference) for the same requests made **one after the other** at the server's now the
    reply reports: the coalesced decision is the sequential one, and the three kinds of call
    share one state."""
    rng = random.Random(seed)
    now_us = [0]
    # Exact: MemoryStore reads round(clock() * 10**6), which a float of seconds may miss.
    reference = adm.stores.MemoryStore(clock=lambda: Fraction(now_us[0], 1_000_000))
    interval, burst = 100, 5
    # A key and its prefix, the empty key and no key, bytes of either end of the range.
    buckets: tuple[bytes | None, ...] = (
        None,
        b"user:7",
        b"user:8",
        b"",
        b"\xff{x}",
        b"user",
        b"\x00",
    )
    last: dict[bytes | None, tuple[int, int]] = {}  # key -> (cost, tat) of its last charge

    def request() -> tuple[int, int]:
        return rng.randint(1, burst), rng.choice((-1, 0, 0, 0, rng.randint(0, 6 * interval)))

    for _ in range(rounds):
        step = rng.random()
        if step < 0.3:
            key = rng.choice(buckets[:2])
            asked = [request() for _ in range(rng.randint(1, 8))]
            got = await store.rate_many(name, key, interval, burst, asked)
            requests = [(key, cost, max_wait) for cost, max_wait in asked]
        elif step < 0.5:
            requests = [(rng.choice(buckets), *request()) for _ in range(rng.randint(1, 12))]
            got = await store.rate_batch(name, interval, burst, requests)
        elif step < 0.65:  # the common batch: each bucket once, one max wait for all
            _, max_wait = request()
            drawn = rng.sample(buckets, rng.randint(2, len(buckets)))
            requests = [(key, rng.randint(1, burst), max_wait) for key in drawn]
            got = await store.rate_batch(name, interval, burst, requests)
        elif step < 0.75:  # hot keys: buckets repeated, each at one cost, one max wait
            _, max_wait = request()
            cost_of = {key: rng.randint(1, 2) for key in rng.sample(buckets, rng.randint(1, 4))}
            drawn = rng.choices(list(cost_of), k=rng.randint(2, 12))
            requests = [(key, cost_of[key], max_wait) for key in drawn]
            got = await store.rate_batch(name, interval, burst, requests)
        elif step < 0.88:
            key = rng.choice(buckets)
            cost, max_wait = rng.randint(1, burst), rng.choice((-1, 0, 3 * interval))
            got = [await store.rate(name, key, interval, burst, cost, max_wait)]
            requests = [(key, cost, max_wait)]
        else:
            key = rng.choice(buckets)
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
        assert len(got) == len(requests)
        for key in {key for key, _, _ in requests}:  # each bucket on one reading of the clock
            assert len({r.now_us for r, q in zip(got, requests, strict=True) if q[0] == key}) == 1
        want = []
        for (key, cost, max_wait), reply in zip(requests, got, strict=True):
            now_us[0] = reply.now_us
            want.append(await reference.rate(name, key, interval, burst, cost, max_wait))
        assert got == want, requests
        for (key, cost, _), reply in zip(requests, got, strict=True):
            if reply.admitted:
                last[key] = (cost, reply.tat_us)


async def absurd_waits_and_buckets_stay_exact(store: NetworkStore, name: str) -> None:
    """The stores' range (`MAX_SPAN_US`). On the widest bucket a store takes (burst x
    interval = `MAX_SPAN_US`), `RATE_MANY_MAX` requests of a whole burst each, with a
    thousand-year max wait, then with no bound (-1), then through `rate_batch` and `rate`:
    every reply is `MemoryStore`'s at the same server now (the reference's exact ints; a
    Redis script's doubles rounded past 2**53 µs, and its ``%d`` wrote -2**63 past 2**63),
    a wait past `MAX_SPAN_US` is refused whatever the bound asked, and no wait nor TAT is
    negative or further ahead than three spans. A wider bucket, a longer lease or a cost
    x interval past the range is a `ValueError` before any round trip (PostgreSQL's
    bigint raised ``out of range`` there, which reached the caller as the driver's
    exception)."""
    thousand_years = 1000 * 365 * 86_400 * 1_000_000
    interval, burst = MAX_SPAN_US // 1024, 1024
    now_us = [0]
    reference = adm.stores.MemoryStore(clock=lambda: Fraction(now_us[0], 1_000_000))

    async def same_as_the_reference(
        key: bytes | None, waits: list[int], got: list[RateReply]
    ) -> None:
        want = []
        for wait, reply in zip(waits, got, strict=True):
            now_us[0] = reply.now_us
            want.append(await reference.rate(name, key, interval, burst, burst, wait))
        assert got == want
        for reply in got:
            assert 0 <= reply.wait_us <= 3 * MAX_SPAN_US
            assert reply.now_us <= reply.tat_us <= reply.now_us + 3 * MAX_SPAN_US

    for key, wait in ((None, thousand_years), (b"u", -1)):
        waits = [wait] * RATE_MANY_MAX
        got = await store.rate_many(name, key, interval, burst, [(burst, w) for w in waits])
        await same_as_the_reference(key, waits, got)
        assert [r.admitted for r in got[:2]] == [True, True]  # a span at most ahead
        assert not any(r.admitted for r in got[2:])
        assert got[1].wait_us == MAX_SPAN_US
    waits = [thousand_years, -1, 2**62]
    got = await store.rate_batch(name, interval, burst, [(b"k", burst, w) for w in waits])
    await same_as_the_reference(b"k", waits, got)
    assert [r.admitted for r in got] == [True, True, False]
    got = [await store.rate(name, b"k", interval, burst, burst, -1)]
    await same_as_the_reference(b"k", [-1], got)
    for refused in (
        store.rate_many(name, None, interval + 1, burst, [(1, -1)]),
        store.rate_many(name, None, 2**43, burst, [(burst, -1)] * RATE_MANY_MAX),
        store.rate_batch(name, interval + 1, burst, [(None, 1, 0)]),
        store.rate(name, None, interval + 1, burst, 1, 0),
        store.rate_give_back(name, None, MAX_SPAN_US + 1, 1, 1),
    ):
        with pytest.raises(ValueError, match="burst x interval_us must be at most"):
            await refused
    for lease in (MAX_SPAN_US + 1, 2**62):
        with pytest.raises(ValueError, match="lease_us must be an int from 1 to"):
            await store.semaphore_acquire(name, 1, "h", lease, True)
        with pytest.raises(ValueError, match="lease_us must be an int from 1 to"):
            await store.semaphore_renew(name, ["h"], lease)


async def one_event_loop_per_store(store: NetworkStore, name: str) -> None:
    """A limiter on ``store`` works on this loop, and its call from another loop (a second
    ``asyncio.run`` in a thread, bounded) raises the `RuntimeError` that says a store
    serves the loop it was first used on. Closes the store."""
    bucket = adm.TokenBucket(rate=1000, name=name, store=store)
    try:
        await bucket.acquire()
        on_another_loop = asyncio.wait_for(bucket.acquire(), 5)
        with pytest.raises(RuntimeError, match="event loop it was first used on"):
            await asyncio.to_thread(asyncio.run, on_another_loop)
    finally:
        await store.aclose()
