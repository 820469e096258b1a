"""Rate and duration strings are accepted wherever a rate or a number of seconds is (issue 4)."""

from __future__ import annotations

import asyncio
import sys

import pytest

import admission as adm

if sys.version_info >= (3, 11):
    from builtins import ExceptionGroup
else:  # pragma: no cover
    from exceptiongroup import ExceptionGroup


def test_token_bucket_takes_a_rate_string() -> None:
    b = adm.TokenBucket("60/min")
    assert (b.rate, b.per, b.burst) == (60.0, 60.0, 60)
    assert adm.TokenBucket("5/10s", burst=2).emission_interval == pytest.approx(2.0)
    assert adm.TokenBucket(10, per="1m").per == 60.0


def test_a_rate_string_and_a_period_together_are_refused() -> None:
    with pytest.raises(ValueError, match="per=60"):
        adm.TokenBucket("60/min", per=60)


@pytest.mark.parametrize("bad", ["sixty", "0/min", "-5/s", "60/fortnight"])
def test_bad_rate_strings_name_the_argument(bad: str) -> None:
    with pytest.raises(ValueError, match="rate") as info:
        adm.TokenBucket(bad)
    assert bad in str(info.value)


def test_sliding_window_takes_a_duration_string() -> None:
    assert adm.SlidingWindow(5, "1m").window == 60.0
    assert adm.SlidingWindow(5, "250ms").window == 0.25
    with pytest.raises(ValueError, match="window"):
        adm.SlidingWindow(5, "a while")


def test_blocking_timeouts_take_duration_strings() -> None:
    clock = adm.testing.ManualClock()
    b = adm.TokenBucket(1, per=60.0, burst=1, clock=clock)
    assert b.try_acquire()
    with pytest.raises(adm.AcquireTimeout) as info:
        b.acquire_blocking(timeout="30s")  # needs 60 s: fails at once
    assert info.value.timeout == 30.0
    b.acquire_blocking(timeout="1m")  # exactly enough
    assert clock.now() == pytest.approx(60.0)
    s = adm.Semaphore(1)
    s.acquire_blocking(timeout="1s")
    with pytest.raises(adm.AcquireTimeout):
        s.acquire_blocking(timeout="10ms")


def test_async_timeouts_take_duration_strings() -> None:
    async def main() -> None:
        s = adm.Semaphore(1)
        await s.acquire(timeout="10s")  # immediate: the string is still checked
        with pytest.raises(adm.AcquireTimeout) as info:
            await s.acquire(timeout="20ms")
        assert info.value.timeout == pytest.approx(0.02)
        with pytest.raises(ValueError, match="timeout"):
            await s.acquire(timeout="soon")
        b = adm.TokenBucket(1, per=3600.0, burst=1)
        await b.acquire(timeout="1s")
        with pytest.raises(adm.AcquireTimeout):
            await b.acquire(timeout="1m")  # needs an hour: fails at once
        with pytest.raises(adm.AcquireTimeout):
            await adm.all_of(b).acquire(timeout="2s")
        assert s.stats().timed_out == 1
        assert b.stats().timed_out == 2

    asyncio.run(main())


def test_task_pool_timeout_takes_a_duration_string() -> None:
    async def main() -> None:
        async with adm.TaskPool(limit=2, timeout="10ms") as pool:
            pool.spawn(asyncio.sleep(0))
        with pytest.raises(ExceptionGroup) as info:
            async with adm.TaskPool(limit=2, timeout="10ms") as pool:
                pool.spawn(asyncio.sleep(10))
        assert info.group_contains(TimeoutError)

    asyncio.run(main())
