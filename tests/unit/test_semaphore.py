"""Semaphore: FIFO (multi-permit included), no barging, resize, close, timeouts, accounting.

Blocking behaviour is driven with real threads and bounded waits; the queue protocol itself
(``_enqueue`` with a waker, ``_cancel``) is checked against the reference model by a
hypothesis state machine.
"""

from __future__ import annotations

import functools
import gc
import re
import threading
import weakref
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    multiple,
    rule,
)
from reference import (
    ModelCapacityError,
    ModelClosed,
    SemaphoreModel,
    Worker,
    stats_tuple,
    wait_until,
)

import admission as adm


def blocked(sem: adm.Semaphore, n: int = 1, timeout: float | None = None) -> Worker:
    """A started thread blocked in ``acquire_blocking(n)``; returns once it is queued."""
    before = sem.waiting
    worker = Worker(lambda: sem.acquire_blocking(n, timeout=timeout))
    worker.start()
    wait_until(lambda: sem.waiting == before + 1)
    return worker


# --------------------------------------------------------------------------------------------
# Basics
# --------------------------------------------------------------------------------------------


def test_try_acquire_and_release_account_permits() -> None:
    s = adm.Semaphore(3, name="db")
    assert s.try_acquire(2)
    assert not s.try_acquire(2)
    assert s.try_acquire()
    assert (s.in_use, s.available, s.waiting, s.high_water, s.limit) == (3, 0, 0, 3, 3)
    s.release(3)
    assert (s.in_use, s.available) == (0, 3)
    st_ = s.stats()
    assert (st_.name, st_.limit, st_.in_use, st_.available, st_.waiting) == ("db", 3, 0, 3, 0)
    assert (st_.admitted, st_.admitted_cost, st_.rejected, st_.attempts) == (2, 3, 1, 3)
    assert repr(s) == "Semaphore(3, name='db', in_use=0, waiting=0)"


def test_with_block_holds_one_permit_and_releases_on_error() -> None:
    s = adm.Semaphore(2)
    with s as entered:
        assert entered is s
        assert s.in_use == 1
    assert s.in_use == 0
    with pytest.raises(KeyError), s:
        raise KeyError("boom")
    assert s.in_use == 0
    assert s.stats().admitted == 2


def test_release_more_than_held_raises_and_changes_nothing() -> None:
    s = adm.Semaphore(3)
    with pytest.raises(ValueError, match="release"):
        s.release()
    assert s.try_acquire(2)
    with pytest.raises(ValueError, match="release"):
        s.release(3)
    assert s.in_use == 2
    # Also on the queued path (a waiter makes releases go through the queue).
    ticket = s._enqueue(3, lambda: None)
    assert ticket is not None
    with pytest.raises(ValueError, match="release"):
        s.release(3)
    assert (s.in_use, ticket.outcome) == (2, "waiting")
    s.release(2)
    assert (s.in_use, ticket.outcome) == (3, "granted")


def test_high_water_is_the_peak() -> None:
    s = adm.Semaphore(5)
    assert s.high_water == 0
    assert s.try_acquire(2)
    assert s.try_acquire(1)
    s.release(3)
    assert s.try_acquire(1)
    assert (s.in_use, s.high_water) == (1, 3)
    s.limit = 10
    assert s.try_acquire(8)
    assert s.high_water == 9


# --------------------------------------------------------------------------------------------
# FIFO, no barging
# --------------------------------------------------------------------------------------------


def test_fifo_multi_permit_with_threads() -> None:
    """A big waiter queued before a small one is served first, though the small one fits."""
    s = adm.Semaphore(4)
    assert s.try_acquire(3)
    order: list[str] = []

    def take(n: int, label: str) -> None:
        s.acquire_blocking(n)
        order.append(label)

    big = Worker(lambda: take(4, "big"))
    big.start()
    wait_until(lambda: s.waiting == 1)
    small = Worker(lambda: take(1, "small"))
    small.start()
    wait_until(lambda: s.waiting == 2)
    assert s.available == 1
    assert not s.try_acquire(1), "no barging past waiters, even when permits are free"
    assert order == []
    s.release(3)
    big.finish()
    assert order == ["big"]
    assert (s.in_use, s.waiting) == (4, 1)
    assert small.is_alive()
    s.release(4)
    small.finish()
    assert order == ["big", "small"]
    assert (s.in_use, s.waiting) == (1, 0)
    st_ = s.stats()
    assert (st_.admitted, st_.rejected, st_.timed_out, st_.cancelled) == (3, 1, 0, 0)


def test_fifo_multi_permit_with_the_queue_protocol() -> None:
    s = adm.Semaphore(4)
    woken: list[str] = []
    assert s.try_acquire(3)
    big = s._enqueue(4, functools.partial(woken.append, "big"))
    small = s._enqueue(1, functools.partial(woken.append, "small"))
    assert big is not None
    assert small is not None
    assert (big.n, small.n) == (4, 1)
    assert s._enqueue(1, functools.partial(woken.append, "late")) is not None
    assert not s.try_acquire(0), "even a zero-permit request queues behind waiters"
    s.release(3)
    assert woken == ["big"]
    assert (big.outcome, small.outcome) == ("granted", "waiting")
    s.release(4)
    assert woken == ["big", "small", "late"]
    assert (s.in_use, s.waiting) == (2, 0)
    assert s.try_acquire(2), "the queue is empty again: the fast path is back"


def test_a_cancelled_head_lets_the_next_waiter_through() -> None:
    s = adm.Semaphore(2)
    woken: list[str] = []
    assert s.try_acquire()
    big = s._enqueue(2, functools.partial(woken.append, "big"))
    small = s._enqueue(1, functools.partial(woken.append, "small"))
    assert big is not None
    assert small is not None
    assert s._cancel(big) == "cancelled"
    assert woken == ["small"]
    assert small.outcome == "granted"
    assert s._cancel(big) == "cancelled", "cancelling twice is harmless"
    assert s._cancel(small) == "granted", "too late: the permits were handed over"
    assert (s.in_use, s.waiting) == (2, 0)
    st_ = s.stats()
    # A grant counts as admitted when its waiter takes it (`_commit`), not before.
    assert (st_.admitted, st_.cancelled, st_.attempts) == (1, 1, 2)
    s._commit(small)
    st_ = s.stats()
    assert (st_.admitted, st_.cancelled, st_.attempts) == (2, 1, 3)
    assert st_.wait.count == 2


def test_a_timed_out_waiter_leaves_no_trace_and_unblocks_the_queue() -> None:
    s = adm.Semaphore(2)
    assert s.try_acquire()
    big = blocked(s, 2, timeout=0.05)
    small = blocked(s, 1)
    with pytest.raises(adm.AcquireTimeout) as info:
        big.finish()
    assert isinstance(info.value, TimeoutError)
    assert info.value.needed is None
    small.finish()  # the head left, so the one behind it fits now
    assert (s.in_use, s.waiting) == (2, 0)
    st_ = s.stats()
    assert (st_.admitted, st_.rejected, st_.timed_out, st_.cancelled) == (2, 0, 1, 0)


# --------------------------------------------------------------------------------------------
# Timeouts
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("timeout", [0, 0.0, 0.02])
def test_acquire_blocking_timeout_raises_and_leaves_no_trace(timeout: float) -> None:
    s = adm.Semaphore(1)
    assert s.try_acquire()
    with pytest.raises(adm.AcquireTimeout) as info:
        s.acquire_blocking(timeout=timeout)
    assert isinstance(info.value, TimeoutError)
    assert isinstance(info.value, adm.AdmissionError)
    assert info.value.timeout == timeout
    assert (s.in_use, s.waiting) == (1, 0)
    st_ = s.stats()
    assert (st_.admitted, st_.rejected, st_.timed_out, st_.cancelled) == (1, 0, 1, 0)
    # Nothing was left behind in the queue: a release frees the permit, nobody takes it.
    s.release()
    assert (s.in_use, s.available) == (0, 1)
    assert s.try_acquire()


def test_acquire_blocking_admits_at_once_when_free() -> None:
    s = adm.Semaphore(3)
    s.acquire_blocking(3, timeout=0)
    assert s.in_use == 3
    s.acquire_blocking(0)
    assert s.stats().admitted == 2


# --------------------------------------------------------------------------------------------
# Resize
# --------------------------------------------------------------------------------------------


def test_resize_up_grants_waiters() -> None:
    s = adm.Semaphore(2)
    assert s.try_acquire(2)
    first = blocked(s, 1)
    second = blocked(s, 2)
    s.limit = 3
    first.finish()
    assert (s.in_use, s.waiting) == (3, 1)
    s.limit = 5
    second.finish()
    assert (s.in_use, s.limit, s.available, s.waiting) == (5, 5, 0, 0)


def test_resize_down_never_revokes() -> None:
    s = adm.Semaphore(4)
    assert s.try_acquire(4)
    s.limit = 1
    assert (s.in_use, s.limit, s.available) == (4, 1, 0)
    assert not s.try_acquire(1)
    assert not s.try_acquire(0), "in_use is over the new limit: nothing fits"
    s.release(2)
    assert (s.in_use, s.available) == (2, 0)
    s.release(1)
    assert (s.in_use, s.available) == (1, 0)
    assert not s.try_acquire(1)
    s.release(1)
    assert s.try_acquire(1)
    assert s.high_water == 4


def test_a_waiter_larger_than_a_new_lower_limit_gets_capacity_error() -> None:
    s = adm.Semaphore(4)
    assert s.try_acquire(4)
    too_big = blocked(s, 3)
    fits = blocked(s, 2)
    s.limit = 2
    with pytest.raises(adm.CapacityError) as info:
        too_big.finish()
    assert (info.value.cost, info.value.capacity) == (3, 2)
    assert s.waiting == 1, "the waiter that still fits keeps its place"
    s.release(4)
    fits.finish()
    assert (s.in_use, s.waiting) == (2, 0)
    st_ = s.stats()
    assert (st_.admitted, st_.rejected) == (2, 1)


# --------------------------------------------------------------------------------------------
# Close
# --------------------------------------------------------------------------------------------


def test_close_wakes_blocked_waiters_and_keeps_held_permits() -> None:
    s = adm.Semaphore(1)
    assert s.try_acquire()
    waiters = [blocked(s, 1), blocked(s, 1)]
    assert not s.closed
    s.close()
    assert s.closed
    for w in waiters:
        with pytest.raises(adm.Closed):
            w.finish()
    assert (s.in_use, s.waiting) == (1, 0)
    with pytest.raises(adm.Closed):
        s.try_acquire()
    with pytest.raises(adm.Closed):
        s.acquire_blocking(timeout=0)
    with pytest.raises(adm.Closed), s:
        pass
    s.release()  # held permits stay valid and can be given back
    assert s.in_use == 0
    st_ = s.stats()
    # The two woken waiters, and the three calls refused at once (issue 11, case 9).
    assert (st_.admitted, st_.rejected, st_.timed_out, st_.cancelled) == (1, 5, 0, 0)
    assert "closed" in repr(s)
    s.close()  # idempotent


# --------------------------------------------------------------------------------------------
# Wakers and garbage collection
# --------------------------------------------------------------------------------------------


def test_a_failing_waker_does_not_stop_the_others() -> None:
    s = adm.Semaphore(2)
    assert s.try_acquire(2)
    woken: list[str] = []

    def broken() -> None:
        raise RuntimeError("waker failed")

    first = s._enqueue(1, broken)
    second = s._enqueue(1, functools.partial(woken.append, "second"))
    assert first is not None
    assert second is not None
    with pytest.raises(RuntimeError, match="waker failed"):
        s.release(2)
    assert woken == ["second"]
    assert (first.outcome, second.outcome) == ("granted", "granted")
    assert (s.in_use, s.waiting) == (2, 0)


def test_a_semaphore_whose_waiters_refer_to_it_is_collected() -> None:
    s = adm.Semaphore(1)
    assert s.try_acquire()
    ticket = s._enqueue(1, lambda sem=s: sem.release())  # a cycle through the queued waker
    assert ticket is not None
    ref = weakref.ref(s)
    del s
    gc.collect()
    assert ref() is None, "the semaphore and its waiters must be collectable"
    assert ticket.outcome == "cancelled"


# --------------------------------------------------------------------------------------------
# The queue protocol against the reference model
# --------------------------------------------------------------------------------------------


class SemaphoreMachine(RuleBasedStateMachine):
    """try_acquire / release / enqueue / cancel / resize / close against `SemaphoreModel`."""

    tickets = Bundle("tickets")

    def __init__(self) -> None:
        super().__init__()
        self.sem = adm.Semaphore(4)
        self.model = SemaphoreModel(4)
        self.woken: list[int] = []
        self.handles: dict[int, Any] = {}
        self.next_id = 0
        self.attempts = 0
        self.prev_in_use = 0

    @rule(n=st.integers(0, 7))
    def try_acquire(self, n: int) -> None:
        try:
            want = self.model.try_acquire(n)
        except ModelClosed:
            with pytest.raises(adm.Closed):
                self.sem.try_acquire(n)
            self.attempts += 1  # refused by an error: counted as rejected
            return
        except ModelCapacityError:
            with pytest.raises(adm.CapacityError) as info:
                self.sem.try_acquire(n)
            assert (info.value.cost, info.value.capacity) == (n, self.model.limit)
            self.attempts += 1
            return
        assert self.sem.try_acquire(n) is want
        self.attempts += 1

    @rule(n=st.integers(1, 4))
    def release(self, n: int) -> None:
        if n > self.model.in_use:
            with pytest.raises(ValueError, match="release"):
                self.sem.release(n)
            return
        self.model.release(n)
        self.sem.release(n)

    @rule(target=tickets, n=st.integers(0, 6))
    def enqueue(self, n: int) -> object:
        ident = self.next_id
        self.next_id += 1

        def waker() -> None:
            self.woken.append(ident)
            ticket = self.handles[ident]
            if ticket.outcome == "granted":
                self.sem._commit(ticket)  # its waiter takes the permits: now it is admitted

        try:
            admitted = self.model.enqueue(ident, n)
        except ModelClosed:
            with pytest.raises(adm.Closed):
                self.sem._enqueue(n, waker)
            self.attempts += 1  # refused by an error: counted as rejected
            return multiple()
        except ModelCapacityError:
            with pytest.raises(adm.CapacityError):
                self.sem._enqueue(n, waker)
            self.attempts += 1
            return multiple()
        ticket = self.sem._enqueue(n, waker)
        self.attempts += 1
        if admitted:
            assert ticket is None
            return multiple()
        assert ticket is not None
        assert (ticket.n, ticket.outcome) == (n, "waiting")
        self.handles[ident] = ticket
        return ident

    @rule(ident=tickets, timed_out=st.booleans())
    def cancel(self, ident: int, timed_out: bool) -> None:
        want = self.model.cancel(ident, timed_out)
        got = self.sem._cancel(self.handles[ident], timed_out)
        assert got == want
        # "granted": the permits were handed over before the cancel; we hold them now and
        # the release rule gives them back eventually.

    @rule(limit=st.integers(1, 6))
    def resize(self, limit: int) -> None:
        self.model.resize(limit)
        self.sem.limit = limit

    @rule(really=st.integers(0, 4))
    def close(self, really: int) -> None:
        if really == 0:  # rarely: a closed semaphore admits nothing new
            self.model.close()
            self.sem.close()

    @invariant()
    def gauges_match(self) -> None:
        s, m = self.sem, self.model
        got = (s.in_use, s.limit, s.available, s.waiting, s.high_water, s.closed)
        assert got == (m.in_use, m.limit, m.available, len(m.queue), m.high_water, m.closed)

    @invariant()
    def new_grants_never_exceed_the_limit(self) -> None:
        # in_use may stay above a lowered limit, but it only grows by admitting within it.
        assert self.sem.in_use <= max(self.sem.limit, self.prev_in_use)
        self.prev_in_use = self.sem.in_use

    @invariant()
    def counters_are_exact(self) -> None:
        stats = self.sem.stats()
        assert stats_tuple(stats) == self.model.counters.as_tuple()
        # Every attempt is counted exactly once when it settles; queued ones are still open.
        assert stats.attempts == self.attempts - len(self.model.queue)

    @invariant()
    def grants_are_fifo(self) -> None:
        for ident, ticket in self.handles.items():
            assert ticket.outcome == self.model.outcomes[ident]
        granted = [i for i in self.woken if self.model.outcomes[i] == "granted"]
        assert granted == sorted(granted), "waiters are granted in the order they queued"
        assert granted == [i for i in self.model.woken if self.model.outcomes[i] == "granted"]
        assert sorted(self.woken) == sorted(self.model.woken), "every settled waiter is woken"


SemaphoreMachine.TestCase.settings = settings(
    SemaphoreMachine.TestCase.settings, stateful_step_count=40
)
TestSemaphoreMachine = SemaphoreMachine.TestCase


def test_the_lock_free_fast_path_and_the_queue_agree_under_threads() -> None:
    """Waiters and fast-path callers mixed: nothing is lost or double-granted."""
    s = adm.Semaphore(2)
    done = threading.Event()

    def fast() -> int:
        taken = 0
        while not done.is_set():
            if s.try_acquire():
                taken += 1
                s.release()
        return taken

    fast_worker = Worker(fast)
    fast_worker.start()
    try:
        for _ in range(100):
            s.acquire_blocking(2)
            assert s.in_use == 2
            s.release(2)
    finally:
        done.set()
    fast_worker.finish()
    assert (s.in_use, s.waiting) == (0, 0)
    st_ = s.stats()
    assert st_.attempts == st_.admitted + st_.rejected


def test_an_explicit_none_count_is_refused() -> None:
    # Issue 11, case 12: the stubs say `n: int`; None used to be taken as the default 1.
    s = adm.Semaphore(2)
    calls = [
        lambda: s.try_acquire(None),  # type: ignore[arg-type]
        lambda: s.try_acquire(n=None),  # type: ignore[arg-type]
        lambda: s.release(None),  # type: ignore[arg-type]
        lambda: s.acquire(None),  # type: ignore[arg-type]
        lambda: s.acquire_blocking(None),  # type: ignore[arg-type]
    ]
    for call in calls:
        with pytest.raises(TypeError, match=r"n must be an integer, got None \(NoneType\)"):
            call()
    assert (s.in_use, s.stats().attempts) == (0, 0)
    assert s.try_acquire()  # omitted: the default, one permit
    assert s.in_use == 1
    s.release()
    assert s.in_use == 0


@pytest.mark.parametrize("timeout", [float("inf"), 1e10, 2**63, "200000d"], ids=repr)
def test_an_infinite_or_huge_timeout_waits_without_limit(timeout: Any) -> None:
    # Issue 11, case 10: Event.wait refuses floats beyond threading.TIMEOUT_MAX with an
    # OverflowError, which used to end the wait (counted as cancelled).
    s = adm.Semaphore(1)
    assert s.try_acquire()
    waiter = blocked(s, 1, timeout=timeout)
    s.release()
    waiter.finish()  # re-raises what the thread raised
    assert (s.in_use, s.waiting) == (1, 0)
    s.release()
    stats = s.stats()
    assert (stats.admitted, stats.cancelled, stats.timed_out) == (2, 0, 0)


def test_with_takes_a_free_permit_and_waits_for_a_busy_one() -> None:
    # `with` is native (issue 11, case 14): the same semantics as acquire_blocking(1).
    s = adm.Semaphore(1)
    with s as entered:
        assert entered is s
        assert s.in_use == 1
        waiter = Worker(lambda: s.__enter__())
        waiter.start()
        wait_until(lambda: s.waiting == 1)
    assert waiter.finish() is s  # handed the permit by the `with` block's exit
    assert (s.in_use, s.waiting) == (1, 0)
    s.__exit__(None, None, None)
    assert s.in_use == 0
    with pytest.raises(KeyError), s:
        raise KeyError("released on the way out")
    assert s.in_use == 0
    stats = s.stats()
    assert (stats.admitted, stats.attempts) == (3, 3)


def test_locked_says_whether_one_permit_would_have_to_wait() -> None:
    s = adm.Semaphore(2)
    assert not s.locked()
    assert s.try_acquire(2)
    assert s.locked()  # nothing free
    s.release()
    assert not s.locked()
    queued = s._enqueue(2, lambda: None)
    assert queued is not None
    assert s.available == 1
    assert s.locked(), "a permit is free, but a newcomer would queue behind the waiter"
    s._cancel(queued)
    assert not s.locked()
    s.limit = 1  # in_use 1 of a lowered limit of 1
    assert s.locked()
    s.close()
    assert not s.locked(), "closed: an acquisition is refused, it does not wait"


@pytest.mark.parametrize("name", [5, b"llm", 1.5, ["llm"], True])
@pytest.mark.parametrize(
    "make",
    [
        lambda name: adm.Semaphore(2, name=name),
        lambda name: adm.TokenBucket(rate=5, name=name),
        lambda name: adm.SlidingWindow(5, 1.0, name=name),
    ],
    ids=["Semaphore", "TokenBucket", "SlidingWindow"],
)
def test_a_name_that_is_not_a_str_is_refused_naming_the_argument(make: Any, name: object) -> None:
    # Issue 12 (13): PyO3 said only "'int' object is not an instance of 'str'".
    with pytest.raises(
        TypeError, match=rf"^name must be a str or None, got {re.escape(repr(name))} "
    ):
        make(name)
    assert make(None).name is None
    assert make("llm").name == "llm"
