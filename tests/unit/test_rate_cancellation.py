"""Rate limiters under every way a caller gives up (issue 11, cases 1-3, 6-8, 11).

Waiters hold a place in the queue, not a slot of time: one that leaves lets the ones behind
it move up, so no pattern of cancellations lowers the admitted rate or strands the limiter.
Rate figures are measured in virtual time (a `LoopClock` under an autojumping loop), so they
are exact and independent of the machine's load.
"""

from __future__ import annotations

import asyncio
import math
import random
import sys
import threading
import time
from typing import Any

import anyio
import pytest
from support import wait_until

import admission as adm

# ---------------------------------------------------------------------------------------------
# 1. Waiters that give up must not starve the limiter
# ---------------------------------------------------------------------------------------------


def _limiter(kind: str) -> adm.TokenBucket | adm.SlidingWindow:
    # Both admit 1,000 per second.
    if kind == "bucket":
        return adm.TokenBucket(rate=1000, burst=10, clock=adm.LoopClock())
    return adm.SlidingWindow(100, 0.1, clock=adm.LoopClock())


@pytest.mark.parametrize("how", ["wait_for", "timeout"])
@pytest.mark.parametrize("kind", ["bucket", "window"])
def test_callers_giving_up_with_their_own_timeout_do_not_lower_the_rate(
    virtual: Any, kind: str, how: str
) -> None:
    """200 tasks each doing ``wait_for(acquire(), 0.05)`` or ``async with
    asyncio.timeout(0.05)`` (asyncio; ``how``) or ``move_on_after(0.05)`` (trio) in a
    loop: the admitted rate stays within 5 % of the configured 1,000/s, and the limiter is
    not left refusing afterwards."""
    lim = _limiter(kind)
    seconds = 2.0
    admitted = 0
    gave_up = 0

    async def caller(deadline: float) -> None:
        nonlocal admitted, gave_up
        while anyio.current_time() < deadline:
            if virtual.backend == "trio":
                import trio

                with trio.move_on_after(0.05):
                    await lim.acquire()
                    admitted += 1
                    continue
                gave_up += 1
            elif how == "timeout" and sys.version_info >= (3, 11):
                try:
                    async with asyncio.timeout(0.05):
                        await lim.acquire()
                except TimeoutError:
                    gave_up += 1
                else:
                    admitted += 1
            else:
                try:
                    await asyncio.wait_for(lim.acquire(), 0.05)
                except asyncio.TimeoutError:
                    gave_up += 1
                else:
                    admitted += 1

    async def main() -> None:
        deadline = anyio.current_time() + seconds
        async with anyio.create_task_group() as tg:
            for _ in range(200):
                tg.start_soon(caller, deadline)

    virtual.run(main)
    expected = 1000 * seconds
    assert gave_up > 1000, "the callers did give up, many times"
    assert abs(admitted - expected) <= 0.05 * expected, f"{admitted} admitted, {expected} expected"
    stats = lim.stats()
    assert stats.admitted == admitted
    assert stats.cancelled >= gave_up - 200  # the last round may end after the deadline
    assert stats.waiting == 0


# ---------------------------------------------------------------------------------------------
# 2. A queue of cancelled waiters comes back whole, in any order
# ---------------------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(("n", "order"), [(2_000, "random"), (10_000, "oldest first")])
async def test_a_cancelled_queue_gives_everything_back(n: int, order: str) -> None:
    # Real clock, one token an hour: every waiter certainly still waits when cancelled.
    bucket = adm.TokenBucket(rate=1, per=3600.0, burst=1)
    assert bucket.try_acquire()
    scopes: list[anyio.CancelScope] = []

    async def waiter() -> None:
        with anyio.CancelScope() as scope:
            scopes.append(scope)
            await bucket.acquire()

    async with anyio.create_task_group() as tg:
        for _ in range(n):
            tg.start_soon(waiter)
        await wait_until(lambda: bucket.waiting == n, "every waiter queued")
        if order == "random":
            random.Random(7).shuffle(scopes)
        for scope in scopes:
            scope.cancel()
    assert bucket.waiting == 0
    # As if nobody had queued: the next token is at most one emission interval away.
    assert bucket.peek().retry_after <= 3600.0
    stats = bucket.stats()
    assert (stats.admitted, stats.cancelled) == (1, n)


@pytest.mark.anyio
async def test_cancelling_a_long_sliding_window_queue_oldest_first() -> None:
    """Each withdrawal is O(log n) wherever it stands (the old refund walked the log)."""
    window = adm.SlidingWindow(1, 3600.0)
    assert window.try_acquire()
    n = 20_000
    scopes: list[anyio.CancelScope] = []

    async def waiter() -> None:
        with anyio.CancelScope() as scope:
            scopes.append(scope)
            await window.acquire()

    async with anyio.create_task_group() as tg:
        for _ in range(n):
            tg.start_soon(waiter)
        await wait_until(lambda: window.waiting == n, "every waiter queued")
        for scope in scopes:
            scope.cancel()
    assert window.waiting == 0
    assert window._log_len() == 1
    assert window.stats().cancelled == n


# ---------------------------------------------------------------------------------------------
# 6. Counts stay exact: granted and cancelled in the same loop turn
# ---------------------------------------------------------------------------------------------


def test_a_grant_cancelled_in_the_same_turn_is_counted_cancelled_and_passed_on() -> None:
    asyncio.run(_grant_cancelled_in_the_same_turn())


async def _grant_cancelled_in_the_same_turn() -> None:
    bucket = adm.TokenBucket(rate=1, per=3600.0, burst=1)  # nobody's turn comes by itself
    held = bucket._take(1)  # an admission in flight (an `all_of` that may still give it up)
    assert held is not None
    first = asyncio.ensure_future(bucket.acquire())
    second = asyncio.ensure_future(bucket.acquire())
    await wait_until(lambda: bucket.waiting == 2, "both waiters queued")
    # The token comes back: the head is granted at once, and cancelled in the same turn.
    bucket._untake(1, *held)
    assert bucket.waiting == 1
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    # Its grant was not used: the waiter behind it got it, at once.
    await asyncio.wait_for(second, 5.0)
    stats = bucket.stats()
    assert (stats.admitted, stats.cancelled, stats.waiting) == (1, 1, 0)
    assert stats.wait.count == 1


# ---------------------------------------------------------------------------------------------
# 7. all_of: a refusal charges nothing, under any interleaving
# ---------------------------------------------------------------------------------------------


def test_all_of_refusals_racing_another_thread_lose_no_token() -> None:
    clock = adm.testing.ManualClock()  # time stands still: b1 holds exactly its burst
    b1 = adm.TokenBucket(rate=1, burst=1000, clock=clock)
    empty = adm.TokenBucket(rate=1, burst=1, clock=clock)
    assert empty.try_acquire()
    both = adm.all_of(b1, empty)
    stop = threading.Event()
    refused = 0

    def combined() -> None:
        nonlocal refused
        while not stop.is_set():
            assert not both.try_acquire()
            refused += 1

    # Switch threads as often as the interpreter can, for as many interleavings as possible.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    thread = threading.Thread(target=combined)
    thread.start()
    retries = 0
    try:
        for _ in range(500):
            # A refusal here may be the other thread's momentary hold: try again.
            while not b1.try_acquire():
                retries += 1
                assert retries < 10_000_000, "b1 ran dry: tokens were lost"
            time.sleep(0)
    finally:
        stop.set()
        thread.join()
        sys.setswitchinterval(interval)
    assert refused > 0
    # Exactly the 500 not taken are left: every refusal of the pair gave b1's token back.
    assert b1.peek(500).allowed
    assert not b1.peek(501).allowed
    assert b1.stats().admitted == 500


# ---------------------------------------------------------------------------------------------
# 11. Times the limiter cannot represent are refused, not wrapped
# ---------------------------------------------------------------------------------------------


def test_a_manual_clock_beyond_the_representable_range_is_refused() -> None:
    clock = adm.testing.ManualClock()
    bucket = adm.TokenBucket(rate=1, burst=1, clock=clock)
    window = adm.SlidingWindow(1, 1.0, clock=clock)
    clock.advance(2**64 / 1e9)
    for lim in (bucket, window):
        with pytest.raises(OverflowError, match="beyond"):
            lim.try_acquire()
        with pytest.raises(OverflowError):
            lim.peek()
    assert bucket.stats().admitted == 0


def test_a_long_queue_on_a_slow_bucket_never_admits_early() -> None:
    """One token per 2e9 s with 12 waiters: none is admitted early (the old schedule
    wrapped the 64-bit clock and admitted two at once)."""
    asyncio.run(_slow_bucket_queue())


async def _slow_bucket_queue() -> None:
    bucket = adm.TokenBucket(rate=1, per=2e9, burst=1)
    assert bucket.try_acquire()
    tasks = [asyncio.ensure_future(bucket.acquire()) for _ in range(12)]
    await wait_until(lambda: bucket.waiting == 12, "every waiter queued")
    await asyncio.sleep(0.01)
    assert not any(t.done() for t in tasks)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert bucket.stats().admitted == 1


# ---------------------------------------------------------------------------------------------
# 13. A LoopClock limiter moved between loops is not poisoned by their clocks' origins
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("first", ["trio", "asyncio"])
def test_a_loop_clock_limiter_carries_its_time_across_loops(first: str) -> None:
    import trio
    import trio.testing

    bucket = adm.TokenBucket(rate=1, burst=1, clock=adm.LoopClock())
    # trio's clocks start far from asyncio's (its real clock at a random offset): a mock
    # clock a million seconds ahead, or at 0 (behind asyncio's, which reads the uptime).
    start = 1e6 if first == "trio" else 0.0

    async def take() -> None:
        assert bucket.try_acquire()

    async def check() -> None:
        # No time has passed for the bucket: the next token is due within 1 s, not hours
        # (or never) away; and it is not free either.
        assert not bucket.try_acquire()
        assert 0 < bucket.peek().retry_after <= 1.0

    async def on_asyncio(fn: Any) -> None:
        await fn()

    clock = trio.testing.MockClock()
    clock.jump(start)
    if first == "trio":
        trio.run(take, clock=clock)
        asyncio.run(on_asyncio(check))
    else:
        asyncio.run(on_asyncio(take))
        trio.run(check, clock=clock)


# ---------------------------------------------------------------------------------------------
# 8. A reload is never a free burst
# ---------------------------------------------------------------------------------------------


def test_a_reload_with_waiters_queued_is_never_a_free_burst(virtual: Any) -> None:
    """10/s, burst 1, 49 waiters queued on the old bucket; the reload raises the burst to 2
    and 50 more callers come: in 5 s at most 2 + 5 x 10 = 52 are admitted in all (the old
    bucket draining its queue while the new one started with its own budget admitted 99)."""
    clock = adm.LoopClock()
    limits = {"api": {"rate": "10/s", "burst": 1, "concurrency": "none"}}
    m = adm.ConcurrencyManager.from_dict({"limits": limits}, clock=clock)
    admitted: list[float] = []

    async def call() -> None:
        async with m.limit("api", timeout=None):
            admitted.append(anyio.current_time())

    async def main() -> None:
        start = anyio.current_time()
        old = m.rate("api")
        assert old is not None
        with anyio.move_on_after(5.0):
            async with anyio.create_task_group() as tg:
                for _ in range(50):
                    tg.start_soon(call)
                await wait_until(lambda: old.waiting == 49, "49 waiters queued on the old bucket")
                limits["api"]["burst"] = 2
                m.reload({"limits": limits})
                assert m.rate("api") is not old
                for _ in range(50):
                    tg.start_soon(call)
        in_window = [t for t in admitted if t - start <= 5.0]
        assert len(in_window) <= 52, f"{len(in_window)} admitted in 5 s"
        assert len(in_window) >= 45, "the limit still admits at its rate"

    virtual.run(main)


# ---------------------------------------------------------------------------------------------
# 10, 12, 16. Timeouts without limit, an explicit None, blocking inside a running loop
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("timeout", [math.inf, 1e10, 2**63, "200000d"])
def test_an_infinite_or_huge_timeout_waits_without_limit(timeout: Any) -> None:
    bucket = adm.TokenBucket(rate=50, burst=1)  # one token per 20 ms, on the real clock
    assert bucket.try_acquire()
    bucket.acquire_blocking(timeout=timeout)  # waits ~20 ms, no OverflowError
    stats = bucket.stats()
    assert (stats.admitted, stats.cancelled, stats.timed_out) == (2, 0, 0)


def test_an_explicit_none_cost_is_refused() -> None:
    bucket = adm.TokenBucket(rate=2, burst=2)
    window = adm.SlidingWindow(2, 60.0)
    for lim in (bucket, window):
        for call in (lim.try_acquire, lim.peek, lim.acquire):
            with pytest.raises(TypeError, match=r"cost must be an integer, got None"):
                call(None)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"cost must be an integer, got None"):
            lim.try_acquire(cost=None)  # type: ignore[arg-type]
        assert lim.stats().attempts == 0
        assert lim.try_acquire()  # omitted: the default, a cost of 1


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_blocking_wait_in_a_running_loops_thread_is_refused(backend: str) -> None:
    bucket = adm.TokenBucket(rate=1, per=3600.0, burst=1)

    async def main() -> None:
        with bucket:  # free: admitted at once, allowed
            pass
        with pytest.raises(RuntimeError, match="would block the running event loop"), bucket:
            pass  # pragma: no cover - the failure mode
        with pytest.raises(RuntimeError, match="async with"):
            adm.all_of(bucket).acquire_blocking()

    if backend == "trio":
        import trio

        trio.run(main)
    else:
        asyncio.run(main())
    stats = bucket.stats()
    # Refused before queueing: counted as rejected, nothing waits.
    assert (stats.admitted, stats.rejected, stats.waiting) == (1, 2, 0)


def test_a_real_clock_limiter_under_a_virtual_loop_is_timed_in_real_time() -> None:
    """Review finding: the deadline of a limiter on the real clock was judged on the loop's
    virtual time, so under trio's autojump clock `acquire(timeout=1)` needing 50 ms failed at
    once. Its decisions and its deadline now use the same (real) clock."""
    import trio
    import trio.testing

    bucket = adm.TokenBucket(rate=20, burst=1)  # real clock: one token per 50 ms
    assert bucket.try_acquire()

    async def main() -> None:
        await bucket.acquire(timeout=1.0)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    stats = bucket.stats()
    assert (stats.admitted, stats.timed_out) == (2, 0)
