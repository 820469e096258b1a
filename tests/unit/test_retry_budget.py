"""`adm.RetryBudget`: the ratio, the floor, the sliding window, sharing between threads."""

from __future__ import annotations

import math
import threading
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support import VirtualRunner

import admission as adm


def budget(**kwargs: Any) -> tuple[adm.RetryBudget, adm.testing.ManualClock]:
    clock = adm.testing.ManualClock()
    return adm.RetryBudget(clock=clock, **kwargs), clock


@pytest.mark.parametrize(("ratio", "calls", "allowed"), [(0.2, 10, 2), (0.29, 100, 29), (1, 3, 3)])
def test_ratio_of_the_calls(ratio: float, calls: int, allowed: int) -> None:
    b, _ = budget(ratio=ratio, min_per_second=0)
    for _ in range(calls):
        b.deposit()
    assert b.stats().available == allowed
    assert [b.try_withdraw() for _ in range(allowed + 2)] == [True] * allowed + [False] * 2
    s = b.stats()
    assert (s.calls, s.retries, s.refused, s.available) == (calls, allowed, 2, 0)


def test_floor_without_calls() -> None:
    b, _ = budget(ratio=0.2, min_per_second=10, window="10s")
    assert b.stats().available == 100
    assert sum(b.try_withdraw() for _ in range(150)) == 100
    assert b.stats().refused == 50


def test_floor_and_ratio_add_up() -> None:
    b, _ = budget(ratio=0.5, min_per_second=0.3, window="10s")  # floor: 3 per window
    for _ in range(4):
        b.deposit()
    assert sum(b.try_withdraw() for _ in range(10)) == 5


def test_calls_and_retries_leave_the_window() -> None:
    b, clock = budget(ratio=1.0, min_per_second=0, window="10s")  # ten 1 s buckets
    b.deposit()  # t = 0
    clock.advance(5.0)
    b.deposit()  # t = 5
    assert b.try_withdraw()  # t = 5
    clock.advance(4.5)  # t = 9.5: both calls and the retry in the window
    assert b.stats().available == 1
    clock.advance(0.5)  # t = 10: the bucket of t = 0 is dropped
    assert (b.stats().window_calls, b.stats().available) == (1, 0)
    clock.advance(5.0)  # t = 15: the call and retry of t = 5 are dropped
    s = b.stats()
    assert (s.window_calls, s.window_retries, s.available) == (0, 0, 0)
    assert (s.calls, s.retries) == (2, 1)  # the totals stay


def test_a_long_pause_clears_everything_in_one_step() -> None:
    b, clock = budget(ratio=1.0, min_per_second=0, window="1s")
    for _ in range(5):
        b.deposit()
    clock.advance(1e9)
    assert b.stats().window_calls == 0
    b.deposit()
    assert b.try_withdraw()
    assert not b.try_withdraw()


def test_memory_is_fixed() -> None:
    b, clock = budget(ratio=0.5, min_per_second=1, window="1s")
    for i in range(20_000):
        b.deposit()
        b.try_withdraw()
        clock.advance(0.001 * (i % 7))
    assert len(b._buckets_calls) == len(b._buckets_retries) == 10


def test_shared_between_threads() -> None:
    b, _ = budget(ratio=0.25, min_per_second=0, window="1h")
    granted = [0] * 8
    tries = 5_000

    def work(i: int) -> None:
        for _ in range(tries):
            b.deposit()
            granted[i] += b.try_withdraw()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    s = b.stats()
    assert s.calls == 8 * tries
    assert s.retries == sum(granted)
    assert s.retries + s.refused == 8 * tries
    # Each withdraw comes after its own deposit: the ratio bounds the total at every moment.
    assert s.retries <= math.floor(0.25 * s.calls)
    assert s.retries >= math.floor(0.25 * s.calls) - 8


@pytest.mark.parametrize("kind", ["asyncio", "trio"])
def test_loop_clock_follows_virtual_time(kind: str) -> None:
    async def main() -> list[int]:
        import anyio

        b = adm.RetryBudget(ratio=1.0, min_per_second=0, window="10s", clock=adm.LoopClock())
        b.deposit()
        seen = [b.stats().available]
        await anyio.sleep(10)
        seen.append(b.stats().available)
        return seen

    assert VirtualRunner(kind).run(main) == [1, 0]


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["deposit", "withdraw"]),
            st.floats(min_value=0.0, max_value=3.0),
        ),
        max_size=200,
    ),
    st.sampled_from([0.0, 0.2, 0.5, 1.5]),
    st.sampled_from([0.0, 0.1, 1.0]),
)
def test_matches_a_reference_window(
    ops: list[tuple[str, float]], ratio: float, floor: float
) -> None:
    # The reference keeps every event with its bucket number and counts those of the last
    # ten buckets: what the ring of buckets must decide.
    b, clock = budget(ratio=ratio, min_per_second=floor, window="5s")
    width = 0.5
    events: list[tuple[int, str]] = []
    for op, dt in ops:
        clock.advance(dt)
        now_bucket = math.floor(clock.now() / width)
        live = [kind for epoch, kind in events if epoch > now_bucket - 10]
        if op == "deposit":
            b.deposit()
            events.append((now_bucket, "call"))
            continue
        allowed = ratio * live.count("call") + floor * 5.0
        expected = live.count("retry") + 1 <= allowed + 1e-9
        assert b.try_withdraw() is expected
        if expected:
            events.append((now_bucket, "retry"))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"ratio": -0.1}, ValueError, "ratio"),
        ({"ratio": math.nan}, ValueError, "ratio"),
        ({"ratio": "0.2"}, TypeError, "ratio"),
        ({"min_per_second": math.inf}, ValueError, "min_per_second"),
        ({"window": 0}, ValueError, "window"),
        ({"window": "forever"}, ValueError, "window"),
        ({"clock": 3}, TypeError, "clock"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        adm.RetryBudget(**kwargs)


def test_properties_and_repr() -> None:
    b = adm.RetryBudget(ratio=0.1, min_per_second=5, window="30s")
    assert (b.ratio, b.min_per_second, b.window, b.clock) == (0.1, 5.0, 30.0, None)
    assert repr(b) == "RetryBudget(ratio=0.1, min_per_second=5.0, window=30.0)"
