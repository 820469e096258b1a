"""TokenBucket (GCRA) against the pure-Python reference model, decision by decision.

Time is a ManualClock moved in whole nanoseconds; the model's ``now`` is read back from the
clock, and each advance is checked to land exactly where asked.
"""

from __future__ import annotations

import asyncio
import math
import random
import re
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from reference import (
    NS,
    GcraModel,
    ModelDecision,
    Step,
    advance_ns,
    decision_tuple,
    emission_interval_ns,
    max_interval_excess,
    model_decision_tuple,
    run_against_model,
    stats_tuple,
)

import admission as adm

S = NS


def manual(
    rate: float, per: float, burst: int
) -> tuple[adm.testing.ManualClock, adm.TokenBucket, GcraModel]:
    clock = adm.testing.ManualClock()
    bucket = adm.TokenBucket(rate=rate, per=per, burst=burst, clock=clock)
    return clock, bucket, GcraModel(rate, per, burst)


# --------------------------------------------------------------------------------------------
# Emission interval
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "per", "T"),
    [
        (1, 1.0, S),
        (50, 60.0, 1_200_000_000),
        (3, 1.0, 333_333_334),  # rounded up: never faster than asked
        (7, 1.0, 142_857_143),
        (0.1, 1.0, 10 * S),
        (1000, 1.0, 1_000_000),
        (1e9, 1.0, 1),
    ],
)
def test_emission_interval_known_values(rate: float, per: float, T: int) -> None:
    assert emission_interval_ns(rate, per) == T
    assert adm.TokenBucket(rate=rate, per=per, burst=1).emission_interval == T / 1e9


@given(
    rate=st.floats(min_value=1e-9, max_value=1e10, allow_nan=False),
    per=st.floats(min_value=1e-6, max_value=1e6, allow_nan=False),
)
def test_emission_interval_matches_reference(rate: float, per: float) -> None:
    try:
        T = emission_interval_ns(rate, per)
    except ValueError:
        with pytest.raises(ValueError, match="rate"):
            adm.TokenBucket(rate=rate, per=per, burst=1)
        return
    bucket = adm.TokenBucket(rate=rate, per=per, burst=1)
    assert bucket.emission_interval == T / 1e9
    # Never faster than asked, and slower by less than 1 ns per token (up to float noise).
    exact = per * 1e9 / rate
    assert exact * (1 - 1e-12) <= T <= math.ceil(exact)


# --------------------------------------------------------------------------------------------
# Decision by decision against the reference model
# --------------------------------------------------------------------------------------------


@st.composite
def bucket_schedules(draw: st.DrawFn) -> tuple[float, float, int, list[Step]]:
    rate = draw(st.one_of(st.integers(1, 5_000), st.floats(min_value=0.05, max_value=5_000.0)))
    per = draw(
        st.one_of(
            st.sampled_from([1.0, 60.0, 0.25, 3600.0]),
            st.floats(min_value=1e-3, max_value=100.0),
        )
    )
    try:
        T = emission_interval_ns(rate, per)
    except ValueError:
        assume(False)
        raise
    assume(T <= 10**12)
    burst = draw(st.integers(1, 12))
    advance = st.one_of(
        st.just(0),
        st.integers(0, 3),
        st.integers(0, 2 * T),
        st.integers(1, 3).map(lambda k: k * T),
        st.integers(1, 3).map(lambda k: k * T - 1),
        st.integers(1, 3).map(lambda k: k * T + 1),
    )
    cost = st.one_of(st.integers(0, burst), st.just(burst), st.just(burst + 1))
    timeout = st.one_of(st.just(0), st.integers(0, 2 * T), st.integers(1, 3).map(lambda k: k * T))
    op = st.sampled_from(["try", "try", "peek", "block", "block_timeout"])
    steps = draw(st.lists(st.tuples(advance, op, cost, timeout), min_size=1, max_size=60))
    return rate, per, burst, steps


@given(bucket_schedules())
def test_matches_reference_model(
    schedule: tuple[float, float, int, list[Step]],
) -> None:
    rate, per, burst, steps = schedule
    clock, bucket, model = manual(rate, per, burst)
    run_against_model(clock, bucket, model, steps)


# --------------------------------------------------------------------------------------------
# Semantics users rely on
# --------------------------------------------------------------------------------------------


def test_a_new_bucket_starts_full_on_a_manual_clock() -> None:
    _, bucket, _ = manual(rate=1, per=3600.0, burst=10)
    assert [bucket.try_acquire() for _ in range(11)] == [True] * 10 + [False]


def test_a_new_bucket_starts_full_on_the_monotonic_clock() -> None:
    bucket = adm.TokenBucket(rate=1, per=3600.0, burst=5)
    assert [bucket.try_acquire() for _ in range(6)] == [True] * 5 + [False]


def test_burst_is_separate_from_rate() -> None:
    clock, bucket, _ = manual(rate=10, per=1.0, burst=2)
    assert bucket.try_acquire(2)
    assert not bucket.try_acquire()
    # A long idle period refills to the burst, not to the rate.
    advance_ns(clock, 100 * S)
    assert bucket.try_acquire(2)
    assert not bucket.try_acquire()


@pytest.mark.parametrize(("rate", "burst"), [(50, 50), (2.5, 2), (0.5, 1), (1, 1)])
def test_default_burst_is_rate_and_at_least_one(rate: float, burst: int) -> None:
    assert adm.TokenBucket(rate=rate).burst == burst
    assert adm.TokenBucket(rate=rate, per=60.0).burst == burst


def test_refills_continuously() -> None:
    clock, bucket, _ = manual(rate=1, per=1.0, burst=3)
    assert bucket.try_acquire(3)
    advance_ns(clock, S - 1)
    assert not bucket.try_acquire()
    advance_ns(clock, 1)
    assert bucket.try_acquire()
    assert not bucket.try_acquire()
    advance_ns(clock, S // 2)
    assert bucket.peek().retry_after == 0.5


def test_rejections_write_nothing() -> None:
    clock, bucket, _ = manual(rate=1, per=1.0, burst=1)
    assert bucket.try_acquire()
    advance_ns(clock, S // 2)
    before = bucket.peek()
    for _ in range(10_000):
        assert not bucket.try_acquire()
    assert bucket.peek() == before
    advance_ns(clock, S // 2)  # exactly one T after the admission
    assert bucket.try_acquire()
    s = bucket.stats()
    assert (s.admitted, s.rejected) == (2, 10_000)


def test_peek_consumes_and_counts_nothing() -> None:
    _, bucket, _ = manual(rate=2, per=1.0, burst=4)
    d = bucket.peek()
    assert d == adm.Decision(True, 3, 0.0, 0.5)
    assert bool(d) is True
    for _ in range(100):
        assert bucket.peek(cost=4) == adm.Decision(True, 0, 0.0, 2.0)
    assert bucket.try_acquire(4)
    d = bucket.peek()
    assert bool(d) is False
    assert d == adm.Decision(False, 0, 0.5, 2.0)
    assert "allowed=False" in repr(d)
    assert bucket.stats().attempts == 1


def test_zero_cost_is_always_admitted() -> None:
    _, bucket, _ = manual(rate=1, per=1.0, burst=1)
    assert bucket.try_acquire()
    assert bucket.try_acquire(0)
    assert bucket.peek(0).allowed
    bucket.acquire_blocking(0, timeout=0)


@pytest.mark.parametrize("call", ["try_acquire", "peek", "acquire_blocking"])
def test_cost_over_burst_is_a_capacity_error_at_once(call: str) -> None:
    clock, bucket, _ = manual(rate=10, per=1.0, burst=5)
    with pytest.raises(adm.CapacityError) as info:
        getattr(bucket, call)(6)  # acquire_blocking with no timeout: must not wait forever
    assert (info.value.cost, info.value.capacity) == (6, 5)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, adm.AdmissionError)
    assert clock.now_ns() == 0
    # Refused by an error at call time: counted as rejected (peek counts nothing).
    assert bucket.stats().rejected == bucket.stats().attempts == (0 if call == "peek" else 1)
    assert bucket.try_acquire(5)


# --------------------------------------------------------------------------------------------
# The interval bound on long random runs
# --------------------------------------------------------------------------------------------

LONG_RUN_CONFIGS = [
    (7, 1.0, 5),
    (50, 60.0, 10),
    (3, 1.0, 1),  # T rounded up: 333,333,334 ns
    (1000, 1.0, 100),
    (2.5, 0.1, 3),
]


@pytest.mark.parametrize(("rate", "per", "burst"), LONG_RUN_CONFIGS)
def test_interval_bound_on_a_long_random_run(rate: float, per: float, burst: int) -> None:
    clock, bucket, model = manual(rate, per, burst)
    T = model.T
    rng = random.Random(f"interval-bound-{rate}-{per}-{burst}")
    admissions: list[tuple[int, int]] = []
    now = 0
    for _ in range(20_000):
        step = rng.choice((0, rng.randrange(T // 2), rng.randrange(3 * T)))
        now = advance_ns(clock, step)
        cost = rng.randint(1, min(3, burst))
        ok = bucket.try_acquire(cost)
        assert ok is model.try_acquire(now, cost)
        if ok:
            admissions.append((now, cost))
    # Over any interval of length t: admitted cost <= burst + t/T <= burst + rate*t/per.
    assert max_interval_excess(admissions, T, burst) <= 0
    assert T * rate >= per * 1e9 * (1 - 1e-12)
    assert stats_tuple(bucket.stats()) == model.counters.as_tuple()


@pytest.mark.parametrize(
    ("rate", "per", "burst"), [c for c in LONG_RUN_CONFIGS if c[2] >= 2] + [(3, 1.0, 2)]
)
def test_a_steady_saturated_caller_gets_the_rate(rate: float, per: float, burst: int) -> None:
    """Trying at least twice per T with burst >= 2, the bucket never fills up between tries,
    so no token is ever lost: the caller gets exactly burst + elapsed // T."""
    clock, bucket, model = manual(rate, per, burst)
    T = model.T
    rng = random.Random(f"steady-{rate}-{per}-{burst}")
    admitted = 0
    for _ in range(20_000):
        admitted += bucket.try_acquire()
        advance_ns(clock, rng.randrange(T // 2 + 1))
    admitted += bucket.try_acquire()
    elapsed = clock.now_ns()
    # The caller tries at least twice per T, so it never leaves a whole token unused.
    assert admitted == burst + elapsed // T
    ideal = burst + elapsed * rate / (per * 1e9)
    assert ideal - 1 <= admitted <= ideal + 1e-6
    assert elapsed // T > 4_000  # the run really was long compared to the burst


@pytest.mark.parametrize(("rate", "per", "burst"), LONG_RUN_CONFIGS)
def test_a_steady_blocking_caller_gets_exactly_the_rate(
    rate: float, per: float, burst: int
) -> None:
    clock, bucket, model = manual(rate, per, burst)
    for _ in range(burst):
        with bucket:
            pass
    assert clock.now_ns() == 0
    for n in range(1, 2_001):
        with bucket:
            pass
        assert clock.now_ns() == n * model.T
    assert bucket.stats().admitted == burst + 2_000


# --------------------------------------------------------------------------------------------
# Blocking acquisition on virtual time
# --------------------------------------------------------------------------------------------


def test_with_block_waits_exactly_on_virtual_time() -> None:
    clock, bucket, model = manual(rate=3, per=1.0, burst=2)
    T = model.T
    assert T == 333_333_334
    with bucket:
        pass
    with bucket as entered:
        assert entered is bucket
    assert clock.now_ns() == 0, "the burst is admitted without waiting"
    with bucket:
        assert clock.now_ns() == T
    with bucket:
        assert clock.now_ns() == 2 * T
    bucket.acquire_blocking(2)
    assert clock.now_ns() == 4 * T
    s = bucket.stats()
    assert (s.admitted, s.admitted_cost, s.rejected, s.timed_out) == (5, 6, 0, 0)


def test_with_block_does_not_swallow_exceptions() -> None:
    _, bucket, _ = manual(rate=1, per=1.0, burst=1)
    with pytest.raises(KeyError), bucket:
        raise KeyError("boom")
    assert bucket.stats().admitted == 1


def test_unmeetable_timeout_fails_at_once_and_writes_nothing() -> None:
    clock, bucket, _ = manual(rate=1, per=1.0, burst=2)
    assert bucket.try_acquire(2)
    advance_ns(clock, S // 4)
    before = bucket.peek(2)
    with pytest.raises(adm.AcquireTimeout) as info:
        bucket.acquire_blocking(2, timeout=1.0)
    exc = info.value
    assert isinstance(exc, TimeoutError)
    assert isinstance(exc, adm.AdmissionError)
    assert exc.needed == (2 * S - S // 4) / 1e9  # exactly the wait it would have needed
    assert exc.timeout == 1.0
    assert clock.now_ns() == S // 4, "failed at once: no virtual time passed"
    assert bucket.peek(2) == before, "a deadline miss writes nothing"
    s = bucket.stats()
    assert (s.admitted, s.rejected, s.timed_out, s.cancelled) == (1, 0, 1, 0)
    # The next decisions are the same as if the failed call had never happened.
    advance_ns(clock, S - S // 4 - 1)
    assert not bucket.try_acquire()
    advance_ns(clock, 1)
    assert bucket.try_acquire()


def test_timeout_zero_admits_only_what_fits_now() -> None:
    _, bucket, _ = manual(rate=1, per=1.0, burst=1)
    bucket.acquire_blocking(timeout=0)
    with pytest.raises(adm.AcquireTimeout) as info:
        bucket.acquire_blocking(timeout=0)
    assert info.value.needed == 1.0


@pytest.mark.parametrize("rate", [120, 127, 240, 3, 7, 50])
def test_a_timeout_equal_to_the_needed_wait_is_met(rate: int) -> None:
    """Retrying with ``timeout=exc.needed`` must succeed: the deadline is exactly the wait.

    ``needed`` is a whole number of ns in seconds; converting it back must not lose a
    nanosecond (e.g. 0.008333334 s * 1e9 == 8333333.999999999, truncated to 8333333 ns).
    """
    clock, bucket, model = manual(rate=rate, per=1.0, burst=1)
    bucket.acquire_blocking()
    with pytest.raises(adm.AcquireTimeout) as info:
        bucket.acquire_blocking(timeout=0)
    needed = info.value.needed
    assert needed == model.T / 1e9
    bucket.acquire_blocking(timeout=needed)
    assert clock.now_ns() == model.T


def test_waiters_are_served_in_order_of_arrival() -> None:
    """The queue is FIFO: a big request is not overtaken by later small ones, nobody barges
    past it, and a waiter that leaves lets the next one move up."""
    clock, bucket, _ = manual(rate=1, per=1.0, burst=4)
    assert bucket.try_acquire(4)
    woken: list[str] = []
    big = bucket._enqueue(4, None, lambda: woken.append("big"))
    small = bucket._enqueue(1, None, lambda: woken.append("small"))
    assert big is not None
    assert small is not None
    assert bucket._status(big) == ("head", 4.0)
    assert bucket._status(small) == ("queued", 0.0), "the small request queues behind"
    assert not bucket.try_acquire(), "no barging past the queue"
    assert bucket.waiting == 2
    assert bucket._withdraw(big, timed_out=True) == "removed"
    assert woken == ["small"], "the new head is told to time its turn"
    assert bucket._status(small) == ("head", 1.0), "it moved up: due in 1 s, not 5 s"
    assert bucket._withdraw(small) == "removed"
    assert bucket._withdraw(small) == "ended"
    s = bucket.stats()
    assert (s.admitted, s.rejected, s.timed_out, s.cancelled, s.waiting) == (1, 1, 1, 1, 0)
    advance_ns(clock, 4 * S)
    assert bucket.try_acquire(4), "the waiters that left took nothing"


def test_peek_while_a_reservation_is_pending() -> None:
    """While someone waits (a reservation pushed ``tat`` past ``now + burst*T``), peek must
    say: not allowed, 0 remaining, retry after the queue. (A thread sleeping in ``with b:``
    on the monotonic clock creates exactly this state.)"""
    _, bucket, model = manual(rate=1, per=1.0, burst=1)
    assert bucket.try_acquire()
    assert model.try_acquire(0, 1)
    ticket = bucket._enqueue(1, None, lambda: None)
    assert ticket is not None
    assert bucket._status(ticket) == ("head", 1.0)
    model.tat += model.T  # the model's view of that waiter
    for cost in (1, 0):
        m = model.peek(0, cost)
        assert m == ModelDecision(False, 0, S * (1 + cost), 2 * S)
        assert decision_tuple(bucket.peek(cost)) == model_decision_tuple(m)


def test_peek_while_a_task_waits_on_the_monotonic_clock() -> None:
    """The same state reached through the public API: a task waiting in ``acquire()``."""

    async def main() -> adm.Decision:
        bucket = adm.TokenBucket(rate=1, per=60.0, burst=1)  # T = 60 s: nobody really waits
        assert bucket.try_acquire()
        waiter = asyncio.ensure_future(bucket.acquire())
        await asyncio.sleep(0)  # the waiter reserves its slot and sleeps
        try:
            return bucket.peek()
        finally:
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter

    d = asyncio.run(main())
    assert not d.allowed
    assert d.remaining == 0
    assert 60.0 < d.retry_after <= 120.0


def test_blocking_on_the_monotonic_clock_completes() -> None:
    bucket = adm.TokenBucket(rate=1e6, per=1.0, burst=1)  # T = 1 us: a negligible real wait
    assert bucket.clock is None
    for _ in range(3):
        with bucket:
            pass
    assert bucket.stats().admitted == 3


def test_properties_and_repr() -> None:
    clock = adm.testing.ManualClock()
    bucket = adm.TokenBucket(rate=50, per=60.0, burst=10, clock=clock, name="rpm")
    assert (bucket.rate, bucket.per, bucket.burst, bucket.name) == (50.0, 60.0, 10, "rpm")
    assert bucket.clock is clock
    assert repr(bucket) == "TokenBucket(rate=50.0, per=60.0, burst=10, name='rpm')"
    assert bucket.stats().name == "rpm"


@pytest.mark.parametrize(
    ("make", "shown"),
    [
        (lambda: adm.TokenBucket(rate=1e300), "rate 1e+300 per 1 s"),
        (lambda: adm.TokenBucket(rate=1e-300), "rate 1e-300 per 1 s"),
        (lambda: adm.TokenBucket(rate=5, per=1e300), "rate 5 per 1e+300 s"),
        (lambda: adm.TokenBucket(rate=5, per=1e-300), "rate 5 per 1e-300 s"),
        (lambda: adm.SlidingWindow(5, 1e300), "window is too long: 1e+300 s"),
        (lambda: adm.SlidingWindow(5, 1e-300), "got 1e-300 s"),
    ],
)
def test_huge_and_tiny_values_are_shown_short(make: Any, shown: str) -> None:
    # Issue 12 (13): TokenBucket(rate=1e300) printed a 301-digit number.
    with pytest.raises(ValueError, match=re.escape(shown)) as info:
        make()
    assert len(str(info.value)) < 120, str(info.value)
