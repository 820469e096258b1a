"""SlidingWindow against the pure-Python exact sliding log, decision by decision.

The window ending at ``t`` is ``(t - W, t]``: an admission at ``t0`` stops counting at exactly
``t0 + W``. Time is a ManualClock moved in whole nanoseconds.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from reference import (
    NS,
    Step,
    WindowModel,
    advance_ns,
    max_window_load,
    run_against_model,
    stats_tuple,
)

import admission as adm

S = NS


def manual(
    limit: int, window_ns: int
) -> tuple[adm.testing.ManualClock, adm.SlidingWindow, WindowModel]:
    clock = adm.testing.ManualClock()
    window = adm.SlidingWindow(limit=limit, window=window_ns / 1e9, clock=clock)
    assert window.window == window_ns / 1e9
    return clock, window, WindowModel(limit, window_ns)


# --------------------------------------------------------------------------------------------
# Decision by decision against the reference model
# --------------------------------------------------------------------------------------------


@st.composite
def window_schedules(draw: st.DrawFn) -> tuple[int, int, list[Step]]:
    limit = draw(st.integers(1, 8))
    W = draw(
        st.one_of(
            st.integers(1, 10),
            st.integers(10, 10**10),
            st.sampled_from([S, 60 * S, S // 3]),
        )
    )
    advance = st.one_of(
        st.just(0),
        st.integers(0, 3),
        st.integers(0, 2 * W),
        st.sampled_from([W, W - 1, W + 1, W // 2]),
    )
    cost = st.one_of(st.integers(0, limit), st.just(limit), st.just(limit + 1))
    timeout = st.one_of(st.just(0), st.integers(0, 2 * W), st.just(W))
    op = st.sampled_from(["try", "try", "peek", "block", "block_timeout"])
    steps = draw(st.lists(st.tuples(advance, op, cost, timeout), min_size=1, max_size=60))
    return limit, W, steps


@given(window_schedules())
def test_matches_reference_model(
    schedule: tuple[int, int, list[Step]],
) -> None:
    limit, W, steps = schedule
    clock, window, model = manual(limit, W)
    run_against_model(clock, window, model, steps)


# --------------------------------------------------------------------------------------------
# Semantics
# --------------------------------------------------------------------------------------------


def test_window_is_half_open_and_slides() -> None:
    clock, window, _ = manual(limit=3, window_ns=S)
    assert window.try_acquire(2)
    advance_ns(clock, S // 2)
    assert window.try_acquire()
    assert not window.try_acquire()
    advance_ns(clock, S // 2 - 1)  # t = W - 1: the first two still count
    assert not window.try_acquire()
    advance_ns(clock, 1)  # t = W: the admission at 0 has left (t - W, t]
    assert window.try_acquire(2)
    assert not window.try_acquire()
    advance_ns(clock, S // 2)
    assert window.try_acquire()


def test_starts_empty_and_admits_the_limit_at_once() -> None:
    window = adm.SlidingWindow(limit=5, window=3600.0)  # monotonic clock
    assert [window.try_acquire() for _ in range(6)] == [True] * 5 + [False]
    assert window.clock is None


def test_rejections_change_no_decision() -> None:
    clock, window, _ = manual(limit=2, window_ns=10 * S)
    assert window.try_acquire(2)
    advance_ns(clock, 3 * S)
    before = window.peek()
    for _ in range(10_000):
        assert not window.try_acquire()
    assert window.peek() == before
    advance_ns(clock, 7 * S)
    assert window.try_acquire(2)
    s = window.stats()
    assert (s.admitted, s.admitted_cost, s.rejected) == (2, 4, 10_000)


def test_peek_reports_retry_and_reset() -> None:
    clock, window, _ = manual(limit=2, window_ns=10 * S)
    assert window.peek() == adm.Decision(True, 1, 0.0, 10.0)
    assert window.try_acquire()
    advance_ns(clock, S)
    assert window.try_acquire()
    advance_ns(clock, S)
    assert window.peek() == adm.Decision(False, 0, 8.0, 9.0)
    assert window.peek(2) == adm.Decision(False, 0, 9.0, 9.0)
    assert window.stats().attempts == 2, "peek counts nothing"


def test_peek_of_zero_cost_reports_when_the_window_empties() -> None:
    """A zero-cost request adds nothing to the log, so it cannot push the reset time out:
    with one entry admitted at t=0 and W=10 s, at t=2 s the window is empty again after 8 s."""
    clock, window, _ = manual(limit=3, window_ns=10 * S)
    assert window.try_acquire()
    advance_ns(clock, 2 * S)
    assert window.peek(0) == adm.Decision(True, 2, 0.0, 8.0)
    assert window.peek(1) == adm.Decision(True, 1, 0.0, 10.0)


def test_zero_cost_is_admitted_and_stored_nowhere() -> None:
    _, window, _ = manual(limit=1, window_ns=S)
    assert window.try_acquire()
    assert window.try_acquire(0)
    assert window._log_len() == 1


@pytest.mark.parametrize("call", ["try_acquire", "peek", "acquire_blocking"])
def test_cost_over_limit_is_a_capacity_error_at_once(call: str) -> None:
    clock, window, _ = manual(limit=3, window_ns=S)
    with pytest.raises(adm.CapacityError) as info:
        getattr(window, call)(4)
    assert (info.value.cost, info.value.capacity) == (4, 3)
    assert clock.now_ns() == 0
    # Refused by an error at call time: counted as rejected (peek counts nothing).
    assert window.stats().rejected == window.stats().attempts == (0 if call == "peek" else 1)
    assert window.try_acquire(3)


def test_memory_is_bounded_by_the_limit() -> None:
    clock, window, _ = manual(limit=100, window_ns=S)
    for _ in range(5_000):
        window.try_acquire()
        advance_ns(clock, 1_000_000)
        assert window._log_len() <= 100


# --------------------------------------------------------------------------------------------
# Long random runs: never more than `limit` in any window, and never more conservative
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("limit", "W"), [(5, S), (1, 7), (60, 60 * S), (3, S // 3)])
def test_never_more_than_limit_in_any_window_on_a_long_run(limit: int, W: int) -> None:
    clock, window, model = manual(limit, W)
    rng = random.Random(f"window-{limit}-{W}")
    admissions: list[tuple[int, int]] = []
    for _ in range(20_000):
        step = rng.choice((0, rng.randrange(W // limit + 1), rng.randrange(2 * W)))
        now = advance_ns(clock, step)
        cost = rng.randint(1, min(3, limit))
        ok = window.try_acquire(cost)
        assert ok is model.try_acquire(now, cost)
        if ok:
            admissions.append((now, cost))
    assert max_window_load(admissions, W) <= limit
    assert stats_tuple(window.stats()) == model.counters.as_tuple()
    # And it is exact, not just safe: a saturated run fills some window completely.
    assert max_window_load(admissions, W) == limit


# --------------------------------------------------------------------------------------------
# Blocking acquisition on virtual time
# --------------------------------------------------------------------------------------------


def test_with_block_waits_until_the_oldest_admission_leaves() -> None:
    clock, window, _ = manual(limit=2, window_ns=10 * S)
    with window:
        pass
    advance_ns(clock, 3 * S)
    with window as entered:
        assert entered is window
    assert clock.now_ns() == 3 * S
    with window:
        assert clock.now_ns() == 10 * S  # the admission at 0 left at exactly W
    with window:
        assert clock.now_ns() == 13 * S
    window.acquire_blocking(2)
    assert clock.now_ns() == 23 * S
    s = window.stats()
    assert (s.admitted, s.admitted_cost, s.rejected, s.timed_out) == (5, 6, 0, 0)


def test_unmeetable_timeout_fails_at_once_and_writes_nothing() -> None:
    clock, window, _ = manual(limit=1, window_ns=10 * S)
    assert window.try_acquire()
    advance_ns(clock, 4 * S)
    before = window.peek()
    with pytest.raises(adm.AcquireTimeout) as info:
        window.acquire_blocking(timeout=5.0)
    assert isinstance(info.value, TimeoutError)
    assert info.value.needed == 6.0
    assert info.value.timeout == 5.0
    assert clock.now_ns() == 4 * S
    assert window.peek() == before
    assert window._log_len() == 1
    s = window.stats()
    assert (s.admitted, s.rejected, s.timed_out, s.cancelled) == (1, 0, 1, 0)
    advance_ns(clock, 6 * S - 1)
    assert not window.try_acquire()
    advance_ns(clock, 1)
    assert window.try_acquire()


def test_a_timeout_equal_to_the_needed_wait_is_met() -> None:
    clock, window, _ = manual(limit=1, window_ns=8_333_334)
    window.acquire_blocking()
    with pytest.raises(adm.AcquireTimeout) as info:
        window.acquire_blocking(timeout=0)
    assert info.value.needed == 8_333_334 / 1e9
    window.acquire_blocking(timeout=info.value.needed)
    assert clock.now_ns() == 8_333_334


def test_a_waiter_blocks_barging_and_leaves_nothing_behind() -> None:
    clock, window, _ = manual(limit=1, window_ns=S)
    assert window.try_acquire()
    ticket = window._enqueue(1, None, lambda: None)
    assert ticket is not None
    assert window._status(ticket) == ("head", 1.0)
    # Someone is waiting for t = 1 s: newcomers queue behind, even once the window has room.
    assert window.peek() == adm.Decision(False, 0, 2.0, 2.0)
    advance_ns(clock, S)
    assert not window.try_acquire()
    assert window._withdraw(ticket) == "removed"
    assert window.try_acquire()
    s = window.stats()
    assert (s.admitted, s.rejected, s.cancelled) == (2, 1, 1)


def test_properties_and_repr() -> None:
    clock = adm.testing.ManualClock()
    window = adm.SlidingWindow(limit=60, window=60.0, clock=clock, name="rpm")
    assert (window.limit, window.window, window.name) == (60, 60.0, "rpm")
    assert window.clock is clock
    assert repr(window) == "SlidingWindow(limit=60, window=60.0, name='rpm')"
    assert window.stats().name == "rpm"
