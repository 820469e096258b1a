"""Coalescing (admission.stores.remote): the decisions of a limiter asked for while one of
its round trips is in flight go together as ONE round trip when it returns: `rate_many` when
they are on one bucket, `rate_batch` when they are on several keys.

The store is `MemoryStore` with a gate: each round trip waits until the test opens it, so
what is in flight and what is queued is exact, without timing."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Sequence

import pytest

import admission as adm
from admission.errors import StoreUnavailable
from admission.stores import MemoryStore, NetworkStore, RateReply
from admission.stores.network import RATE_MANY_MAX, BatchContended

NOW = 1_000_000.0  # the server's clock (seconds), fixed: every decision is exact


class GatedStore(MemoryStore):
    """A `MemoryStore` whose round trips (after the first ``free``) wait for `open`; it
    records the requests of each `rate_many` and `rate_batch`."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(clock=lambda: NOW, **kwargs)  # type: ignore[arg-type]
        self.held: list[asyncio.Future[None]] = []
        self.batches: list[list[tuple[int, int]]] = []
        self.keyed_batches: list[list[tuple[bytes | None, int, int]]] = []

    async def _round_trip(self, method: str) -> int:
        if method != "register":
            gate = asyncio.get_running_loop().create_future()
            self.held.append(gate)
            await gate
        return await super()._round_trip(method)

    def open(self) -> int:
        """Lets every round trip waiting now go on; how many there were."""
        held, self.held = self.held, []
        for gate in held:
            if not gate.done():
                gate.set_result(None)
        return len(held)

    async def rate_many(
        self,
        name: str,
        key: bytes | None,
        interval_us: int,
        burst: int,
        requests: Sequence[tuple[int, int]],
    ) -> list[RateReply]:
        self.batches.append(list(requests))
        return await super().rate_many(name, key, interval_us, burst, requests)

    async def rate_batch(
        self,
        name: str,
        interval_us: int,
        burst: int,
        requests: Sequence[tuple[bytes | None, int, int]],
    ) -> list[RateReply]:
        self.keyed_batches.append(list(requests))
        return await super().rate_batch(name, interval_us, burst, requests)


async def until(condition: Callable[[], bool], turns: int = 1000) -> None:
    """Lets the loop run until ``condition`` holds (a bounded number of turns)."""
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached")


async def outcome(call: asyncio.Future[None]) -> str:
    try:
        await call
    except adm.AcquireTimeout:
        return "refused"
    except adm.StoreUnavailable:
        return "unavailable"
    return "admitted"


def test_alone_a_decision_goes_at_once_in_a_round_trip_of_its_own() -> None:
    store = MemoryStore(clock=lambda: NOW)
    bucket = adm.TokenBucket(rate=100, per=1, burst=1000, name="api", store=store)

    async def main() -> None:
        for _ in range(20):
            await bucket.acquire(timeout=0)

    asyncio.run(main())
    assert store.calls == {"register": 1, "rate": 20}  # never a batch, never a wait


def test_decisions_asked_during_a_round_trip_go_as_one_in_order_as_if_one_after_another() -> None:
    """A burst of 5 at 1/s: the first call is in flight, then 6 callers with various costs
    and timeouts queue; one rate_many decides them in their order, each as the sequential
    reference (MemoryStore, one `rate` after the other at the same now) does."""
    store = GatedStore()
    bucket = adm.TokenBucket(rate=1, per=1, burst=5, name="api", store=store)
    asks = [(1, 0), (2, 0), (3, 0), (1, 0), (1, 1.5), (2, None)]

    async def main() -> list[str]:
        first = asyncio.ensure_future(bucket.acquire(1, timeout=0))
        await until(lambda: len(store.held) == 1)
        queued = [asyncio.ensure_future(bucket.acquire(c, timeout=t)) for c, t in asks]
        await until(lambda: len(bucket._lanes[None].queued) == len(asks))
        assert store.open() == 1  # the first one's round trip only
        await first
        await until(lambda: len(store.held) == 1)  # the batch's
        assert store.open() == 1
        results = [await outcome(call) for call in queued[:4]]
        # The last two were charged for later turns (1 s and 3 s): not waited for here.
        for call in queued[4:]:
            call.cancel()
        await asyncio.gather(*queued[4:], return_exceptions=True)
        return results

    results = asyncio.run(main())
    assert store.calls["rate"] == 1
    assert store.calls["rate_many"] == 1
    assert store.batches == [[(1, 0), (2, 0), (3, 0), (1, 0), (1, 1_500_000), (2, -1)]]
    # The reference, one after the other: 1 + 1 + 2 = 4 of 5 taken, 3 does not fit now, 1
    # does (5), then the bucket is empty: 1 waits 1 s (within 1.5 s), 2 waits 3 s (no bound).
    assert results == ["admitted", "admitted", "refused", "admitted"]
    stats = bucket.stats()
    assert (stats.admitted, stats.timed_out, stats.cancelled) == (4, 1, 2)


def test_a_caller_cancelled_while_queued_is_never_sent() -> None:
    store = GatedStore()
    bucket = adm.TokenBucket(rate=1, per=1, burst=10, name="api", store=store)

    async def main() -> None:
        first = asyncio.ensure_future(bucket.acquire(timeout=0))
        await until(lambda: len(store.held) == 1)
        gone = asyncio.ensure_future(bucket.acquire(3, timeout=0))
        stays = asyncio.ensure_future(bucket.acquire(2, timeout=0))
        await until(lambda: len(bucket._lanes[None].queued) == 2)
        gone.cancel()
        store.open()
        await first
        await until(lambda: len(store.held) == 1)
        store.open()
        await stays
        with pytest.raises(asyncio.CancelledError):
            await gone

    asyncio.run(main())
    assert store.batches == [[(2, 0)]]
    assert store.tat_us("api") == int(NOW * 1e6) + 3 * 1_000_000  # 1 + 2 charged, not 3
    assert bucket.stats().cancelled == 1


def test_callers_cancelled_while_their_batch_is_in_flight_get_their_charges_back() -> None:
    """The last two of a batch are cancelled while it is in flight: both charges are given
    back, as one (they follow each other in the bucket: one round trip, from the last); a
    cancelled one before a kept one stays charged (a later charge keeps its place)."""
    store = GatedStore()
    bucket = adm.TokenBucket(rate=1, per=1, burst=10, name="api", store=store)

    async def main() -> None:
        first = asyncio.ensure_future(bucket.acquire(timeout=0))
        await until(lambda: len(store.held) == 1)
        calls = [asyncio.ensure_future(bucket.acquire(c, timeout=0)) for c in (1, 2, 1, 3)]
        await until(lambda: len(bucket._lanes[None].queued) == 4)
        store.open()
        await first
        await until(lambda: len(store.held) == 1)  # the batch is in flight
        for i in (0, 2, 3):
            calls[i].cancel()
        store.open()
        await calls[1]
        await until(lambda: len(store.held) == 1)  # the give-back of the last two (1 + 3)
        store.open()
        await until(lambda: store.calls.get("rate_give_back") == 1)
        await asyncio.gather(*calls, return_exceptions=True)

    asyncio.run(main())
    assert store.batches == [[(1, 0), (2, 0), (1, 0), (3, 0)]]
    # Charged: the first (1), the cancelled 1 before the kept 2 (stays), the kept 2.
    assert store.tat_us("api") == int(NOW * 1e6) + (1 + 1 + 2) * 1_000_000
    assert store.calls["rate_give_back"] == 1
    assert bucket.stats().cancelled == 3


def test_a_failed_batch_fails_each_caller_as_its_on_store_error_says() -> None:
    for mode, expected in (("closed", "unavailable"), ("open", "admitted")):
        store = GatedStore()
        bucket = adm.TokenBucket(
            rate=1, per=1, burst=10, name="api", store=store, on_store_error=mode
        )

        async def main(store: GatedStore = store, bucket: object = bucket) -> list[str]:
            first = asyncio.ensure_future(bucket.acquire(timeout=0))  # type: ignore[attr-defined]
            await until(lambda: len(store.held) == 1)
            calls = [
                asyncio.ensure_future(bucket.acquire(timeout=0))  # type: ignore[attr-defined]
                for _ in range(3)
            ]
            await until(lambda: len(bucket._lanes[None].queued) == 3)  # type: ignore[attr-defined]
            store.open()
            await first
            await until(lambda: len(store.held) == 1)
            store.fail()  # the batch's round trip fails
            store.open()
            return [await outcome(call) for call in calls]

        assert asyncio.run(main()) == [expected] * 3
        stats = bucket.stats()
        assert bucket._counts.store_errors == 3  # one per caller, as without coalescing
        assert stats.admitted == (1 if mode == "closed" else 4)
        assert stats.rejected == (3 if mode == "closed" else 0)


def test_a_queued_caller_is_bounded_from_when_its_batch_is_sent_never_unbounded() -> None:
    """The round trip in flight never answers: past the store's timeout its caller fails and
    the queue goes at once (not dropped: alone, it would have been sent); the batch never
    answers either: past the timeout from its sending, each queued caller fails with a
    `StoreUnavailable` of its own, caused by the batch's. Late replies are given back."""
    store = GatedStore(timeout=0.01)
    bucket = adm.TokenBucket(rate=1, per=1, burst=10, name="api", store=store)

    async def main() -> list[BaseException]:
        await store.register("TokenBucket", "api", {"rate": 1.0, "per": 1.0, "burst": 10.0})
        bucket._registered = True
        first = asyncio.ensure_future(bucket.acquire(timeout=0))
        await until(lambda: len(store.held) == 1)
        queued = [asyncio.ensure_future(bucket.acquire(2, timeout=0)) for _ in range(2)]
        with pytest.raises(adm.StoreUnavailable):
            await asyncio.wait_for(first, 5)
        errors = []
        for call in queued:
            with pytest.raises(adm.StoreUnavailable, match=r"no answer within 0\.01 s") as info:
                await asyncio.wait_for(call, 5)
            errors.append(info.value)
        # The first's round trip and the batch's, both unanswered. Their late replies are
        # given back, the batch's first (its two charges, which follow each other, as one
        # from the last), then the first's, the last again.
        rate_gate, batch_gate = store.held
        store.held = []
        batch_gate.set_result(None)
        await until(lambda: len(store.held) == 1)
        store.open()
        await until(lambda: store.calls.get("rate_give_back") == 1)
        rate_gate.set_result(None)
        await until(lambda: len(store.held) == 1)
        store.open()
        await until(lambda: store.calls.get("rate_give_back") == 2)
        return errors

    errors = asyncio.run(main())
    assert store.batches == [[(2, 0), (2, 0)]]
    assert store.tat_us("api") == int(NOW * 1e6)
    assert bucket._counts.store_errors == 3
    # Each caller its own error (raised in its own task), caused by the round trip's.
    assert errors[0] is not errors[1]
    assert errors[0].__cause__ is errors[1].__cause__
    assert isinstance(errors[0].__cause__, adm.StoreUnavailable)


def test_a_queued_caller_never_fails_where_its_round_trip_alone_would_have_succeeded() -> None:
    """Timeout 0.5 s. The round trip in flight takes 0.3 s, the batch behind it 0.3 s: each
    within the timeout, so each caller succeeds, as it would have alone (the queued one's
    deadline runs from its batch's sending, not from its queueing: 0.6 s > 0.5 s)."""
    store = GatedStore(timeout=0.5)
    bucket = adm.TokenBucket(rate=1, per=1, burst=10, name="api", store=store)

    async def main() -> list[str]:
        await store.register("TokenBucket", "api", {"rate": 1.0, "per": 1.0, "burst": 10.0})
        bucket._registered = True
        first = asyncio.ensure_future(bucket.acquire(timeout=0))
        await until(lambda: len(store.held) == 1)
        queued = [asyncio.ensure_future(bucket.acquire(timeout=0)) for _ in range(3)]
        await until(lambda: len(bucket._lanes[None].queued) == 3)
        await asyncio.sleep(0.3)
        store.open()
        await until(lambda: len(store.held) == 1)  # the batch, in flight
        await asyncio.sleep(0.3)
        store.open()
        return [await outcome(call) for call in (first, *queued)]

    assert asyncio.run(main()) == ["admitted"] * 4
    assert store.batches == [[(1, 0)] * 3]
    assert bucket._counts.store_errors == 0


class CancelAtDelivery(GatedStore):
    """Cancels ``victim`` in the loop turn its round trip's reply is delivered, before its
    task resumes."""

    victim: asyncio.Future[None] | None = None

    async def _round_trip(self, method: str) -> int:
        served = await super()._round_trip(method)
        victim = self.victim
        if victim is not None and method in ("rate", "rate_many"):
            asyncio.get_running_loop().call_soon(victim.cancel)
        return served


@pytest.mark.parametrize("victim", ["in flight", "queued"])
def test_a_caller_cancelled_as_its_reply_is_delivered_gives_its_charge_back(victim: str) -> None:
    """The one whose round trip is in flight, or one of a batch, cancelled in the very turn
    its admitted reply reaches it: either it returns (admitted, charged) or it raises
    CancelledError and its charge is given back: never cancelled and still charged."""
    store = CancelAtDelivery()
    bucket = adm.TokenBucket(rate=1, per=1, burst=10, name="api", store=store)

    async def main() -> list[object]:
        first = asyncio.ensure_future(bucket.acquire(timeout=0))
        await until(lambda: len(store.held) == 1)
        second = asyncio.ensure_future(bucket.acquire(2, timeout=0))
        await until(lambda: len(bucket._lanes[None].queued) == 1)
        store.victim = first if victim == "in flight" else None
        store.open()
        await until(lambda: first.done())
        await until(lambda: len(store.held) == 1)  # the batch
        store.victim = second if victim == "queued" else None
        store.open()
        results = await asyncio.gather(first, second, return_exceptions=True)
        for _ in range(100):  # the give-back, if any
            store.open()
            await asyncio.sleep(0)
        return results

    results = asyncio.run(main())
    charged = {"first": 1, "second": 2}
    kept = sum(
        charged[name]
        for name, result in zip(charged, results, strict=True)
        if not isinstance(result, BaseException)
    )
    if victim == "queued":  # (in flight, the caller resumes in the same turn: admitted)
        assert isinstance(results[1], asyncio.CancelledError)
    assert store.tat_us("api") == int(NOW * 1e6) + kept * 1_000_000


def test_more_than_rate_many_max_queued_go_side_by_side_each_one_round_trip_after_the_first() -> (
    None
):
    """RATE_MANY_MAX + 10 queued: two batches sent at once (not one after the other), so
    each decision waits for the round trip in flight and then one of its own."""
    store = GatedStore()
    bucket = adm.TokenBucket(rate=1, per=1, burst=2 * RATE_MANY_MAX, name="api", store=store)
    asked = RATE_MANY_MAX + 10

    async def main() -> None:
        first = asyncio.ensure_future(bucket.acquire(timeout=0))
        await until(lambda: len(store.held) == 1)
        calls = [asyncio.ensure_future(bucket.acquire(timeout=0)) for _ in range(asked)]
        await until(lambda: len(bucket._lanes[None].queued) == asked)
        store.open()
        await first
        await until(lambda: len(store.held) == 2)  # both batches in flight together
        store.open()
        await asyncio.gather(*calls)

    asyncio.run(main())
    assert sorted(len(b) for b in store.batches) == [10, RATE_MANY_MAX]
    assert bucket.stats().admitted == asked + 1
    assert store.tat_us("api") == int(NOW * 1e6) + (asked + 1) * 1_000_000
    assert not bucket._lanes[None].busy


def test_keys_coalesce_into_one_round_trip_each_key_in_its_order() -> None:
    """While one key's decision is in flight, the decisions asked for on every key queue and
    go as ONE `rate_batch`: each key's decided in their order, as one after the other would
    (burst 2: a key's third request is refused), the keys independent of each other."""
    store = GatedStore()
    per_user = adm.KeyedTokenBucket(rate=1, per=3600, burst=2, name="users", store=store)

    async def main() -> list[str]:
        first = asyncio.ensure_future(per_user.acquire("a", timeout=0))
        await until(lambda: len(store.held) == 1)
        calls = [asyncio.ensure_future(per_user.acquire(k, timeout=0)) for k in "bababc"]
        await until(lambda: len(per_user._lanes[None].queued) == 6)
        assert store.open() == 1  # the first one's round trip only: the keys wait behind it
        await first
        await until(lambda: len(store.held) == 1)  # the batch's
        assert store.open() == 1
        return [await outcome(call) for call in calls]

    results = asyncio.run(main())
    assert results == ["admitted", "admitted", "admitted", "refused", "refused", "admitted"]
    assert store.calls == {"register": 1, "rate": 1, "rate_batch": 1}
    assert store.keyed_batches == [[(key.encode(), 1, 0) for key in "bababc"]]
    start = int(NOW * 1e6)
    assert store.tat_us("users", b"a") == store.tat_us("users", b"b") == start + 2 * 3600 * 10**6
    assert store.tat_us("users", b"c") == start + 3600 * 10**6
    assert not per_user._lanes[None].busy
    assert not per_user._lanes[None].queued


def test_a_batch_on_one_key_of_a_keyed_limiter_is_a_rate_many() -> None:
    store = GatedStore()
    per_user = adm.KeyedTokenBucket(rate=1, per=3600, burst=5, name="users", store=store)

    async def main() -> None:
        first = asyncio.ensure_future(per_user.acquire("a", timeout=0))
        await until(lambda: len(store.held) == 1)
        calls = [asyncio.ensure_future(per_user.acquire("b", 2, timeout=0)) for _ in range(2)]
        await until(lambda: len(per_user._lanes[None].queued) == 2)
        store.open()
        await first
        await until(lambda: len(store.held) == 1)
        store.open()
        await asyncio.gather(*calls)

    asyncio.run(main())
    assert store.batches == [[(2, 0), (2, 0)]]
    assert store.keyed_batches == []
    assert store.tat_us("users", b"b") == int(NOW * 1e6) + 4 * 3600 * 10**6


def test_callers_cancelled_in_a_keyed_batch_in_flight_give_back_each_key_its_own() -> None:
    """Three keys in one batch in flight, the callers on two of them cancelled: each of those
    keys gets its charges back (the last first), the third key keeps its own."""
    store = GatedStore()
    per_user = adm.KeyedTokenBucket(rate=1, per=3600, burst=6, name="users", store=store)

    async def main() -> None:
        first = asyncio.ensure_future(per_user.acquire("z", timeout=0))
        await until(lambda: len(store.held) == 1)
        calls = [asyncio.ensure_future(per_user.acquire(k, timeout=0)) for k in "ababc"]
        await until(lambda: len(per_user._lanes[None].queued) == 5)
        store.open()
        await first
        await until(lambda: len(store.held) == 1)  # the batch, in flight
        for call in calls[:4]:
            call.cancel()
        store.open()
        assert await outcome(calls[4]) == "admitted"
        for _ in range(100):  # the give-backs are round trips of their own
            store.open()
            await asyncio.sleep(0)
        await asyncio.gather(*calls[:4], return_exceptions=True)

    asyncio.run(main())
    assert store.tat_us("users", b"a") == store.tat_us("users", b"b") == int(NOW * 1e6)
    assert store.tat_us("users", b"c") == int(NOW * 1e6) + 3600 * 10**6
    assert per_user.stats().cancelled == 4


async def _given_up(style: str, call: Callable[[], object]) -> asyncio.Future[object]:
    """Runs ``call()`` (a bucket's acquire) as a task that gives up in ``style``: by
    `asyncio.wait_for` or `asyncio.timeout` expiring, or by `Task.cancel` (``cancel``)."""

    async def wait_for() -> object:
        return await asyncio.wait_for(call(), 0.05)  # type: ignore[arg-type]

    async def timeout() -> object:
        async with asyncio.timeout(0.05):
            return await call()  # type: ignore[misc]

    runner = {"wait_for": wait_for, "timeout": timeout, "cancel": call}[style]
    return asyncio.ensure_future(runner())  # type: ignore[arg-type]


@pytest.mark.parametrize("phase", ["queued", "in flight"])
@pytest.mark.parametrize("style", ["wait_for", "timeout", "cancel"])
def test_every_way_of_giving_up_leaves_the_bucket_exact(style: str, phase: str) -> None:
    """A caller that gives up (wait_for, asyncio.timeout, cancel) while its request waits in
    the queue or rides in a batch in flight takes nothing: the bucket (burst 6, no refill
    within the test) afterwards admits exactly what the others left. (Its charge is the
    batch's last: a give-back is a compare-and-set that never undoes a charge followed by a
    later one, as `test_a_give_back_never_takes_a_turn_already_given_to_a_later_charge`
    says for single calls.)"""
    if style == "timeout" and sys.version_info < (3, 11):
        pytest.skip("asyncio.timeout: 3.11+")
    store = GatedStore()
    bucket = adm.TokenBucket(rate=1, per=3600, burst=6, name="api", store=store)

    async def main() -> int:
        first = asyncio.ensure_future(bucket.acquire(1, timeout=0))
        await until(lambda: len(store.held) == 1)
        survivor = asyncio.ensure_future(bucket.acquire(1, timeout=0))
        await asyncio.sleep(0)  # queued first: the victim's charge is the batch's last
        victim = await _given_up(style, lambda: bucket.acquire(3))
        await until(lambda: len(bucket._lanes[None].queued) == 2)
        if phase == "in flight":
            store.open()  # the first's reply: the batch of two is sent, and held
            await first
            await until(lambda: len(store.held) == 1)
        if style == "cancel":
            victim.cancel()
        with pytest.raises((asyncio.CancelledError, asyncio.TimeoutError)):  # (3.10: not builtin)
            await asyncio.wait_for(victim, 5)
        store.open()
        if phase == "queued":
            await first
            await until(lambda: len(store.held) == 1)
            store.open()
        await survivor
        for _ in range(100):  # a give-back is a round trip of its own: let them all land
            store.open()
            await asyncio.sleep(0)
        left = 0
        while True:
            probe = asyncio.ensure_future(bucket.acquire(1, timeout=0))
            await until(lambda probe=probe: bool(store.held) or probe.done())
            store.open()
            if await outcome(probe) != "admitted":
                return left
            left += 1

    assert asyncio.run(main()) == 6 - 1 - 1  # the first's and the survivor's tokens only


@pytest.mark.parametrize("how", ["cancelled before it starts", "never awaited"])
def test_a_call_that_never_runs_queues_nothing_and_takes_nothing(how: str) -> None:
    store = GatedStore()
    bucket = adm.TokenBucket(rate=1, per=3600, burst=6, name="api", store=store)

    async def main() -> None:
        first = asyncio.ensure_future(bucket.acquire(1, timeout=0))
        await until(lambda: len(store.held) == 1)
        if how == "never awaited":
            bucket.acquire(3).close()  # type: ignore[attr-defined]
        else:
            task = asyncio.ensure_future(bucket.acquire(3))
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        assert not bucket._lanes[None].queued
        store.open()
        await first

    asyncio.run(main())
    assert store.calls.get("rate_many", 0) == 0
    assert bucket.stats().admitted == 1


def test_the_default_rate_batch_is_one_rate_many_per_bucket_side_by_side() -> None:
    """A store that does not override `rate_batch` gets `NetworkStore`'s: one `rate_many`
    per bucket (the limiter's own first, then the keys by their bytes), all in flight at
    once, each with that bucket's requests in their order; the replies in the requests'
    order. It says it is not one round trip, so the limiters never send it a batch."""

    class PerBucket(GatedStore):
        rate_batch = NetworkStore.rate_batch  # type: ignore[assignment]

    store = PerBucket()
    assert not NetworkStore.rate_batch_is_one_round_trip.fget(store)  # type: ignore[attr-defined]
    batch = [(b"b", 1, 0), (None, 2, 0), (b"a", 3, 0), (b"b", 2, 0), (b"b", 1, 0)]

    async def main() -> list[RateReply]:
        call = asyncio.ensure_future(store.rate_batch("n", 1_000_000, 3, batch))
        await until(lambda: len(store.held) == 3)  # side by side, not one after the other
        store.open()
        return await call

    replies = asyncio.run(main())
    assert store.batches == [[(2, 0)], [(3, 0)], [(1, 0), (2, 0), (1, 0)]]
    assert [r.admitted for r in replies] == [True, True, True, True, False]
    with pytest.raises(ValueError, match=f"1 to {RATE_MANY_MAX} requests"):
        asyncio.run(store.rate_batch("n", 1_000_000, 3, [(b"a", 1, 0)] * (RATE_MANY_MAX + 1)))


class ThirdParty(GatedStore):
    """A store written against the public ABC before `rate_batch`: it overrides `rate`
    and `rate_many` only (`NetworkStore`'s `rate_batch` and its answer, not one round
    trip); `rate` and `rate_many` on key ``bad`` fail."""

    rate_batch = NetworkStore.rate_batch  # type: ignore[assignment]

    @property
    def rate_batch_is_one_round_trip(self) -> bool:
        return False  # NetworkStore's

    async def rate(
        self,
        name: str,
        key: bytes | None,
        interval_us: int,
        burst: int,
        cost: int,
        max_wait_us: int,
    ) -> RateReply:
        if key == b"bad":
            await self._round_trip("rate")
            raise StoreUnavailable(self.label, "the node of key bad is down")
        return await super().rate(name, key, interval_us, burst, cost, max_wait_us)

    async def rate_many(
        self,
        name: str,
        key: bytes | None,
        interval_us: int,
        burst: int,
        requests: Sequence[tuple[int, int]],
    ) -> list[RateReply]:
        if key == b"bad":
            self.batches.append(list(requests))
            await self._round_trip("rate_many")
            raise StoreUnavailable(self.label, "the node of key bad is down")
        return await super().rate_many(name, key, interval_us, burst, requests)


def test_keys_on_a_store_without_one_round_trip_batches_go_each_on_its_own() -> None:
    """On such a store each key's decisions have their own round trip in flight and their
    own queue (as before coalescing across keys): a key never waits for another's round
    trip, nor goes in a call that decides other keys under one timeout."""
    store = ThirdParty()
    per_user = adm.KeyedTokenBucket(rate=1, per=3600, burst=10, name="u", store=store)

    async def main() -> None:
        first = [asyncio.ensure_future(per_user.acquire(k, timeout=0)) for k in ("a", "b", "c")]
        await until(lambda: len(store.held) == 3)  # all three in flight at once
        queued = [asyncio.ensure_future(per_user.acquire(k, timeout=0)) for k in "aabc"]
        await until(lambda: sum(len(lane.queued) for lane in per_user._lanes.values()) == 4)
        store.open()
        await asyncio.gather(*first)
        await until(lambda: len(store.held) == 3)  # a's two as one rate_many, b's, c's
        store.open()
        await asyncio.gather(*queued)

    asyncio.run(main())
    assert store.calls == {"register": 1, "rate": 3, "rate_many": 3}
    assert sorted(store.batches) == [[(1, 0)], [(1, 0)], [(1, 0), (1, 0)]]
    assert store.keyed_batches == []


def test_one_keys_failure_fails_only_its_own_callers_on_such_a_store() -> None:
    """One key's round trip failing (its node down) fails that key's callers only: the
    other keys' callers queued at the same time are decided and keep their charges."""
    store = ThirdParty()
    per_user = adm.KeyedTokenBucket(
        rate=1, per=3600, burst=10, name="u", store=store, on_store_error="closed"
    )

    async def main() -> list[str]:
        first = asyncio.ensure_future(per_user.acquire("a", timeout=0))
        await until(lambda: len(store.held) == 1)
        rest = [asyncio.ensure_future(per_user.acquire(k, timeout=0)) for k in ("a", "bad", "z")]
        for _ in range(1000):  # every round trip answered as it comes, until all are done
            if first.done() and all(call.done() for call in rest):
                break
            store.open()
            await asyncio.sleep(0)
        await first
        return [await outcome(call) for call in rest]

    assert asyncio.run(main()) == ["admitted", "unavailable", "admitted"]
    assert store.tat_us("u", b"a") is not None
    assert store.tat_us("u", b"z") is not None
    assert store.tat_us("u", b"bad") is None


def test_a_contended_batch_goes_again_each_key_on_its_own_and_is_no_store_error() -> None:
    """A store's `rate_batch` that decided nothing (`BatchContended`: a key held by another
    client): each key's requests go again as a `rate_many` of their own, every caller is
    answered, and the limiter counts no store error."""

    class Contended(GatedStore):
        async def rate_batch(
            self,
            name: str,
            interval_us: int,
            burst: int,
            requests: Sequence[tuple[bytes | None, int, int]],
        ) -> list[RateReply]:
            self.keyed_batches.append(list(requests))
            await self._round_trip("rate_batch")
            raise BatchContended("key b held")

    store = Contended()
    per_user = adm.KeyedTokenBucket(rate=1, per=3600, burst=10, name="u", store=store)

    async def main() -> None:
        first = asyncio.ensure_future(per_user.acquire("a", timeout=0))
        await until(lambda: len(store.held) == 1)
        queued = [asyncio.ensure_future(per_user.acquire(k, timeout=0)) for k in "abab"]
        await until(lambda: len(per_user._lanes[None].queued) == 4)
        store.open()
        await first
        await until(lambda: len(store.held) == 1)  # the batch
        store.open()
        await until(lambda: len(store.held) == 2)  # then a's and b's, side by side
        store.open()
        await asyncio.gather(*queued)

    asyncio.run(main())
    assert store.keyed_batches == [[(b"a", 1, 0), (b"b", 1, 0), (b"a", 1, 0), (b"b", 1, 0)]]
    assert sorted(store.batches) == [[(1, 0), (1, 0)], [(1, 0), (1, 0)]]
    assert per_user.stats().admitted == 5
    assert per_user._counts.store_errors == 0
