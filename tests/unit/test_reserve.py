"""Reserve, then settle; and what a provider says: pause and sync (issue 15).

Waits of seconds run on the ``virtual`` runner (asyncio and trio under an autojumping clock,
limiters on ``adm.LoopClock()``) and assert exact virtual times; the rest runs on asyncio,
uvloop and trio, and in threads.
"""

from __future__ import annotations

import threading
from typing import Any

import anyio
import pytest
from support import wait_until

import admission as adm

KINDS = pytest.mark.parametrize("kind", ["bucket", "window"])


def limiter(kind: str, capacity: int, clock: Any = None) -> adm.TokenBucket | adm.SlidingWindow:
    """``capacity`` per minute: nothing comes back within a test."""
    if kind == "bucket":
        return adm.TokenBucket(rate=capacity, per=60.0, clock=clock)
    return adm.SlidingWindow(limit=capacity, window=60.0, clock=clock)


# -- settle --------------------------------------------------------------------------------


@KINDS
@pytest.mark.anyio
async def test_settled_lower_gives_the_rest_back_and_counts_the_real_cost(kind: str) -> None:
    tpm = limiter(kind, 1000)
    async with tpm.reserve(800) as r:
        assert r.reserved == (800,)
        assert r.settled is None
        assert not tpm.peek(201).allowed
        r.settle(300)
    assert r.settled == (300,)
    assert tpm.peek(700).allowed
    assert not tpm.peek(701).allowed
    stats = tpm.stats()
    assert (stats.admitted, stats.admitted_cost) == (1, 300)
    assert stats.wait.count == 1


@KINDS
def test_settled_higher_is_a_debt_never_refused(kind: str) -> None:
    clock = adm.testing.ManualClock()
    tpm = limiter(kind, 10, clock)
    with tpm.reserve(8) as r:
        r.settle(25)  # 15 over the capacity: the tokens were spent
    assert tpm.stats().admitted_cost == 25
    d = tpm.peek(1)
    assert not d.allowed
    # A bucket owes 15 more than its burst of 10 at 10/min: the next token in 96 s (6 s per
    # token, 16 tokens); a window holds the debt until it leaves, a minute on.
    assert d.retry_after == pytest.approx(96.0 if kind == "bucket" else 60.0)


@KINDS
def test_unsettled_the_estimate_stands(kind: str) -> None:
    tpm = limiter(kind, 100)
    with tpm.reserve(60):
        pass
    assert tpm.stats().admitted_cost == 60
    assert tpm.peek(40).allowed
    assert not tpm.peek(41).allowed


@KINDS
@pytest.mark.anyio
async def test_on_error_keeps_or_refunds(kind: str) -> None:
    keep, refund = limiter(kind, 100), limiter(kind, 100)
    with pytest.raises(KeyError):
        async with keep.reserve(60):
            raise KeyError
    with pytest.raises(KeyError):
        async with refund.reserve(60, on_error="refund"):
            raise KeyError
    assert keep.stats().admitted_cost == 60
    assert not keep.peek(41).allowed
    assert refund.stats().admitted_cost == 0
    assert refund.peek(100).allowed
    assert refund.stats().admitted == 1  # it was admitted: the count stays

    # Settled before the exception: the settlement stands.
    def settle_then_fail() -> None:
        with refund.reserve(50, on_error="refund") as r:
            r.settle(20)
            raise KeyError

    with pytest.raises(KeyError):
        settle_then_fail()
    assert refund.stats().admitted_cost == 20


def test_all_of_settles_each_limit() -> None:
    rpm, tpm = adm.TokenBucket(rate=10, per=60.0), adm.TokenBucket(rate=1000, per=60.0)
    both = adm.all_of(rpm, tpm)
    with both.reserve(costs=(1, 900)) as r:
        assert r.reserved == (1, 900)
        with pytest.raises(TypeError, match="costs="):
            r.settle(100)
        r.settle(costs=(1, 100))
    assert (rpm.stats().admitted_cost, tpm.stats().admitted_cost) == (1, 100)
    assert tpm.peek(900).allowed
    assert not tpm.peek(901).allowed
    assert rpm.peek(9).allowed
    assert not rpm.peek(10).allowed


def test_bad_settlements_are_clear_errors() -> None:
    b = adm.TokenBucket(rate=10, per=60.0)
    with b.reserve(5) as r:
        with pytest.raises(ValueError, match="actual must be >= 0"):
            r.settle(-1)
        with pytest.raises(TypeError, match="actual must be an int"):
            r.settle(True)
        with pytest.raises(TypeError, match="one of them"):
            r.settle()
        with pytest.raises(ValueError, match="one entry per limiter"):
            r.settle(costs=(1, 2))
        assert r.settled is None  # nothing happened
        r.settle(5)
        with pytest.raises(RuntimeError, match="settled already"):
            r.settle(4)
    assert b.stats().admitted_cost == 5
    with pytest.raises(adm.CapacityError):
        b.reserve(11)
    with pytest.raises(ValueError, match="on_error"):
        b.reserve(1, on_error="drop")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="estimate must be >= 0"):
        b.reserve(-1)
    assert b.stats().admitted == 1


@KINDS
@pytest.mark.parametrize(
    ("estimate", "error", "words"),
    [
        (-5, ValueError, "estimate must be >= 0"),
        (float("nan"), TypeError, "estimate must be an int"),
        (True, TypeError, "estimate must be an int"),
        (10**30, ValueError, "estimate must be at most 2[*][*]64 - 1"),
    ],
    ids=["negative", "nan", "bool", "huge"],
)
@pytest.mark.parametrize("path", ["immediate", "waiting"])
@pytest.mark.anyio
async def test_a_bad_estimate_is_a_clear_error_and_takes_nothing(
    kind: str, estimate: Any, error: type[Exception], words: str, path: str
) -> None:
    """`reserve(estimate)` names the estimate, at once, whether it would be admitted at once
    or wait (a huge one was "cost is out of range"; the others named a "cost")."""
    tpm = limiter(kind, 10)
    if path == "waiting":
        tpm.try_acquire(10)
    with pytest.raises(error, match=words):
        async with tpm.reserve(estimate):
            pass
    with pytest.raises(error, match=words), tpm.reserve(estimate):
        pass
    assert tpm.stats().admitted == (1 if path == "waiting" else 0)
    assert tpm.peek(10).allowed == (path == "immediate")


# -- settling while others wait ------------------------------------------------------------


@KINDS
@pytest.mark.anyio
async def test_a_refund_goes_to_the_waiter_never_to_a_newcomer(kind: str) -> None:
    tpm = limiter(kind, 10)  # per minute: nothing refills within the test
    admitted: list[str] = []

    async def waiter() -> None:
        await tpm.acquire(6)
        admitted.append("waiter")

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            r = await tpm.reserve(10)
            tg.start_soon(waiter)
            await wait_until(lambda: tpm.waiting == 1, "the waiter queued")
            assert not tpm.try_acquire(1)
            r.settle(3)  # 7 back: 6 to the waiter, 1 left
            await wait_until(lambda: admitted == ["waiter"], "the waiter admitted")
    assert not tpm.try_acquire(2)
    assert tpm.try_acquire(1)
    assert tpm.stats().admitted_cost == 3 + 6 + 1


@KINDS
def test_an_overage_delays_later_callers_in_order(virtual: Any, kind: str) -> None:
    async def main() -> list[tuple[str, float]]:
        clock = adm.LoopClock()
        if kind == "bucket":
            lim: Any = adm.TokenBucket(rate=1, per=1.0, burst=2, clock=clock)
        else:
            lim = adm.SlidingWindow(limit=2, window=1.0, clock=clock)
        got: list[tuple[str, float]] = []
        start = anyio.current_time()

        async def call(name: str, cost: int) -> None:
            await lim.acquire(cost)
            got.append((name, anyio.current_time() - start))

        async with anyio.create_task_group() as tg:
            r = await lim.reserve(2)
            tg.start_soon(call, "a", 1)
            await wait_until(lambda: lim.waiting == 1)
            tg.start_soon(call, "b", 1)
            await wait_until(lambda: lim.waiting == 2)
            r.settle(5)  # 3 more: a debt
        return got

    got = virtual.run(main)
    # Bucket: 5 spent at 0 with a burst of 2: the next token at 4 s, then one a second. Window:
    # all 5 leave at 1 s; then a and b fit together.
    want = [("a", 4.0), ("b", 5.0)] if kind == "bucket" else [("a", 1.0), ("b", 1.0)]
    assert [name for name, _ in got] == ["a", "b"]
    assert [t for _, t in got] == pytest.approx([t for _, t in want])


@KINDS
def test_a_reservation_that_waited_settles_by_its_grant(virtual: Any, kind: str) -> None:
    async def main() -> tuple[float, bool, bool]:
        clock = adm.LoopClock()
        if kind == "bucket":
            lim: Any = adm.TokenBucket(rate=1, per=1.0, burst=4, clock=clock)
        else:
            lim = adm.SlidingWindow(limit=4, window=1.0, clock=clock)
        start = anyio.current_time()
        assert lim.try_acquire(4)
        async with lim.reserve(4) as r:
            waited = anyio.current_time() - start
            r.settle(1)
        return waited, lim.peek(3).allowed, lim.peek(4).allowed

    waited, three, four = virtual.run(main)
    assert waited == pytest.approx(4.0 if kind == "bucket" else 1.0)
    assert (three, four) == (True, False)


@pytest.mark.anyio
async def test_a_cancelled_reservation_holds_nothing() -> None:
    rpm, tpm = adm.TokenBucket(rate=5, per=60.0), adm.TokenBucket(rate=10, per=60.0)
    assert tpm.try_acquire(10)
    both = adm.all_of(rpm, tpm)
    with anyio.move_on_after(0.05):
        await both.reserve(costs=(1, 5))
    assert (rpm.waiting, tpm.waiting) == (0, 0)
    assert rpm.peek(5).allowed  # the request slot it held went back
    assert (rpm.stats().cancelled, tpm.stats().cancelled) == (1, 1)
    with pytest.raises(adm.AcquireTimeout):
        await both.reserve(costs=(1, 5), timeout=0.01)
    assert rpm.peek(5).allowed


def test_a_blocking_reservation_waits_in_its_thread() -> None:
    tpm = adm.TokenBucket(rate=10, per=60.0)
    first = tpm.reserve(10).acquire_blocking()
    done = threading.Event()
    got: list[adm.Reservation] = []

    def worker() -> None:
        with tpm.reserve(4) as r:
            got.append(r)
            r.settle(2)
        done.set()

    thread = threading.Thread(target=worker)
    thread.start()
    for _ in range(1000):
        if tpm.waiting:
            break
        threading.Event().wait(0.005)
    assert tpm.waiting == 1
    first.settle(5)  # 5 back: the waiting thread's 4 fit
    assert done.wait(10)
    thread.join(10)
    assert tpm.stats().admitted_cost == 5 + 2
    assert tpm.peek(3).allowed
    assert not tpm.peek(4).allowed


# -- the manager's limit -------------------------------------------------------------------


@pytest.mark.anyio
async def test_manager_limit_with_tokens_yields_the_reservation() -> None:
    m = adm.ConcurrencyManager.from_dict(
        {"limits": {"llm": {"concurrency": 2, "rate": "60/min", "tokens": "1000/min"}}}
    )
    async with m.limit("llm", tokens=900) as r:
        assert r is not None
        assert r.reserved == (1, 900)
        r.settle(100)
    assert m.tokens("llm").peek(900).allowed
    assert m.stats()["llm"].tokens.admitted_cost == 100  # type: ignore[union-attr]
    assert m.rate("llm").stats().admitted_cost == 1
    async with m.limit("llm") as none:
        assert none is None


# -- what a provider says ------------------------------------------------------------------


@KINDS
def test_a_pause_admits_nobody_before_its_end_and_keeps_the_order(virtual: Any, kind: str) -> None:
    async def main() -> list[tuple[str, float]]:
        clock = adm.LoopClock()
        if kind == "bucket":
            lim: Any = adm.TokenBucket(rate=1, per=1.0, burst=3, clock=clock)
        else:
            lim = adm.SlidingWindow(limit=1, window=1.0, clock=clock)
        got: list[tuple[str, float]] = []
        start = anyio.current_time()

        async def call(name: str) -> None:
            await lim.acquire(1)
            got.append((name, anyio.current_time() - start))

        assert lim.try_acquire(3 if kind == "bucket" else 1)
        async with anyio.create_task_group() as tg:
            for queued, name in enumerate("abc", start=1):
                tg.start_soon(call, name)
                await wait_until(lambda: lim.waiting == queued)  # noqa: B023 - awaited here
            lim.pause("10s")
            assert not lim.try_acquire(1)
        return got

    got = virtual.run(main)
    assert [name for name, _ in got] == ["a", "b", "c"]
    times = [t for _, t in got]
    # A bucket refills from the end of the pause, one a second; a window (1 a second)
    # admits by its window from then.
    assert times == pytest.approx([10.0, 11.0, 12.0])


@KINDS
def test_a_refund_during_a_pause_admits_nobody_before_its_end(kind: str) -> None:
    clock = adm.testing.ManualClock()
    if kind == "bucket":
        lim: Any = adm.TokenBucket(rate=1, per=1.0, burst=1, clock=clock)
    else:
        lim = adm.SlidingWindow(limit=1, window=1.0, clock=clock)
    reservation = lim.reserve(1).acquire_blocking()
    lim.pause(0.5)  # shorter than the wait the reservation left: nothing to add to it
    reservation.settle(0)  # the token comes back
    assert not lim.try_acquire(1), "admitted during the pause"
    clock.advance(0.5)
    assert lim.try_acquire(1)


@KINDS
def test_a_request_of_no_cost_waits_for_a_pause_to_end(kind: str) -> None:
    clock = adm.testing.ManualClock()
    lim = limiter(kind, 100, clock)
    lim.pause(0.5)  # shorter than the bucket's emission interval (0.6 s)
    assert not lim.try_acquire(0), "admitted during the pause"
    assert not lim.peek(0).allowed
    clock.advance(0.5)
    assert lim.try_acquire(0)


@KINDS
def test_pause_until_reads_the_limiters_clock(kind: str) -> None:
    clock = adm.testing.ManualClock()
    lim = limiter(kind, 100, clock)
    clock.advance(5)
    lim.pause_until(35.0)
    assert lim.peek(1).retry_after == pytest.approx(30.0)
    lim.pause_until(10.0)  # earlier than the pause in force: nothing changes
    assert lim.peek(1).retry_after == pytest.approx(30.0)
    clock.advance(30)
    assert lim.try_acquire(1)
    with pytest.raises(ValueError, match="seconds must be"):
        lim.pause(-1)
    with pytest.raises(ValueError, match="seconds must be a duration"):
        lim.pause("soon")


@KINDS
def test_sync_never_believes_more_than_the_provider(kind: str) -> None:
    clock = adm.testing.ManualClock()
    lim = limiter(kind, 100, clock)
    assert lim.try_acquire(10)
    lim.sync(remaining=30)
    assert lim.peek(30).allowed
    assert not lim.peek(31).allowed
    lim.sync(remaining=100)  # the provider says more: nothing is added
    assert not lim.peek(31).allowed
    assert lim.stats().admitted_cost == 10  # what the provider used is not an admission
    with pytest.raises(ValueError, match="remaining must be >= 0"):
        lim.sync(remaining=-1)
    with pytest.raises(TypeError, match="remaining must be an int"):
        lim.sync(remaining=1.5)  # type: ignore[arg-type]


def test_sync_with_a_reset_holds_until_the_providers_reset() -> None:
    clock = adm.testing.ManualClock()
    b = adm.TokenBucket(rate=60, per=60.0, clock=clock)  # 1 per second, burst 60
    b.sync(remaining=0, reset_after="90s")
    # Empty now, and not full before 90 s: its refill starts at 30 s.
    assert b.peek(1).retry_after == pytest.approx(31.0)
    assert b.peek(1).reset_after == pytest.approx(90.0)
    w = adm.SlidingWindow(limit=10, window=60.0, clock=clock)
    clock.advance(100)  # (within a window of the clock's start it holds a little longer)
    w.sync(remaining=2, reset_after=20)
    assert not w.peek(3).allowed
    clock.advance(20)
    assert w.peek(10).allowed
