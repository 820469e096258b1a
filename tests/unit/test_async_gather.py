"""Bounded ``gather`` (asyncio, uvloop, trio) and ``map`` (asyncio only, as documented).

"No orphans" is checked on the coroutine objects themselves: after gather returns or raises,
every coroutine it was given is closed (it ran to completion or cancellation, or was closed
without starting), and every body that started ran its ``finally``.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from support import ASYNCIO_ONLY, Tracker, wait_until, yields

import admission as adm


@pytest.mark.anyio
async def test_results_in_input_order_at_most_limit_at_once() -> None:
    t = Tracker()
    n = 30

    async def body(i: int) -> int:
        await yields((n - i) % 7)  # finish out of order
        return i * i

    results = await adm.gather(*(t.make(i, body) for i in range(n)), limit=4)
    assert results == [i * i for i in range(n)]
    assert t.peak == 4
    assert t.started == list(range(n)), "items start in input order"
    t.assert_no_orphans()


@pytest.mark.anyio
async def test_limit_above_the_number_of_items_and_empty_input() -> None:
    t = Tracker()

    async def body(i: int) -> int:
        await yields(2)
        return i

    assert await adm.gather(*(t.make(i, body) for i in range(3)), limit=100) == [0, 1, 2]
    assert t.peak == 3
    assert await adm.gather(limit=5) == []
    t.assert_no_orphans()


@pytest.mark.anyio
async def test_first_error_cancels_the_rest_awaits_them_and_closes_the_unstarted() -> None:
    t = Tracker()
    never = anyio.Event()

    async def body(i: int) -> int:
        if i == 2:
            await yields(3)
            raise ValueError("item 2 failed")
        await never.wait()
        return i  # pragma: no cover

    with pytest.raises(ValueError, match="item 2 failed"):
        await adm.gather(*(t.make(i, body) for i in range(10)), limit=4)
    assert sorted(t.started) == [0, 1, 2, 3]
    assert t.ended == {0: "cancelled", 1: "cancelled", 2: "error", 3: "cancelled"}
    t.assert_no_orphans()


@pytest.mark.anyio
async def test_return_exceptions_collects_errors_in_place() -> None:
    t = Tracker()

    async def body(i: int) -> int:
        await yields(i % 3)
        if i % 4 == 1:
            raise KeyError(i)
        return i

    results = await adm.gather(
        *(t.make(i, body) for i in range(12)), limit=3, return_exceptions=True
    )
    for i, r in enumerate(results):
        if i % 4 == 1:
            assert isinstance(r, KeyError)
            assert r.args == (i,)
        else:
            assert r == i
    assert t.peak == 3
    assert len(t.started) == 12
    t.assert_no_orphans()


@pytest.mark.anyio
async def test_cancelling_gather_cancels_and_awaits_everything() -> None:
    t = Tracker()
    never = anyio.Event()
    outcome: list[str] = []

    async def body(i: int) -> None:
        await never.wait()

    async def run() -> None:
        try:
            await adm.gather(*(t.make(i, body) for i in range(10)), limit=3)
        except anyio.get_cancelled_exc_class():
            outcome.append("cancelled")
            raise

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await wait_until(lambda: len(t.started) == 3)
        tg.cancel_scope.cancel()
    assert outcome == ["cancelled"]
    assert t.ended == dict.fromkeys(range(3), "cancelled")
    t.assert_no_orphans()


@pytest.mark.anyio
async def test_gather_inside_a_timeout_scope() -> None:
    t = Tracker()

    async def body(i: int) -> None:
        await anyio.sleep_forever()

    with anyio.move_on_after(0.01) as scope:
        await adm.gather(*(t.make(i, body) for i in range(5)), limit=2)
    assert scope.cancelled_caught
    assert t.ended == {0: "cancelled", 1: "cancelled"}
    t.assert_no_orphans()


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("limit", "error"),
    [(0, ValueError), (-1, ValueError), (True, TypeError), (2.0, TypeError), (None, TypeError)],
)
async def test_limit_is_validated(limit: Any, error: type) -> None:
    async def body() -> None:
        pass  # pragma: no cover

    coro = body()
    try:
        with pytest.raises(error, match="limit"):
            await adm.gather(coro, limit=limit)
    finally:
        coro.close()


def test_coroutines_refused_by_argument_checks_are_closed() -> None:
    # gather refused to run them: like the ones it never started after an error, it must
    # close them, or each one warns "coroutine ... was never awaited" when collected.
    t = Tracker()

    async def body(i: int) -> None:
        pass  # pragma: no cover

    coros = [t.make(i, body) for i in range(3)]
    gathering = adm.gather(*coros, limit=0)
    try:
        with pytest.raises(ValueError, match="limit"):
            gathering.send(None)  # the check runs before any event loop is needed
        states = [inspect.getcoroutinestate(c) for c in coros]
        assert states == ["CORO_CLOSED"] * 3, "gather left the coroutines it refused unclosed"
    finally:
        gathering.close()
        for c in coros:
            c.close()
    assert t.started == []


@pytest.mark.anyio
async def test_limit_is_required() -> None:
    async def body() -> None:
        pass  # pragma: no cover

    coro = body()
    with pytest.raises(TypeError, match="limit"):
        adm.gather(coro)  # type: ignore[call-overload]
    coro.close()


# ---------------------------------------------------------------------------------------------
# map (asyncio only)


@pytest.mark.anyio
@ASYNCIO_ONLY
async def test_map_yields_in_input_order_with_bounded_concurrency() -> None:
    running = peak = 0

    async def fn(x: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await yields((20 - x) % 5)
        running -= 1
        return 2 * x

    out = [r async for r in adm.map(fn, range(20), limit=3)]
    assert out == [2 * x for x in range(20)]
    assert peak <= 3


@pytest.mark.anyio
@ASYNCIO_ONLY
async def test_map_over_an_async_iterable() -> None:
    async def source() -> AsyncIterator[int]:
        for i in range(5):
            await asyncio.sleep(0)
            yield i

    async def fn(x: int) -> int:
        return x + 1

    assert [r async for r in adm.map(fn, source(), limit=2)] == [1, 2, 3, 4, 5]


@pytest.mark.anyio
@ASYNCIO_ONLY
async def test_map_stopped_early_cancels_and_awaits_running_calls() -> None:
    ended: dict[int, str] = {}

    async def fn(x: int) -> int:
        try:
            if x > 0:
                await asyncio.Event().wait()
            return x
        except asyncio.CancelledError:
            ended[x] = "cancelled"
            raise

    async with aclosing(adm.map(fn, range(100), limit=4)) as results:
        async for r in results:
            assert r == 0
            break
    assert ended == {1: "cancelled", 2: "cancelled", 3: "cancelled"}


@pytest.mark.anyio
@ASYNCIO_ONLY
async def test_map_error_propagates_and_cancels_the_others() -> None:
    ended: dict[int, str] = {}

    async def fn(x: int) -> int:
        try:
            if x == 0:
                await asyncio.sleep(0)
                raise ValueError("boom")
            await asyncio.Event().wait()
            return x  # pragma: no cover
        except asyncio.CancelledError:
            ended[x] = "cancelled"
            raise

    async def consume() -> None:
        async with aclosing(adm.map(fn, range(10), limit=3)) as results:
            async for _ in results:
                pass  # pragma: no cover

    with pytest.raises(ValueError, match="boom"):
        await consume()
    assert ended == {1: "cancelled", 2: "cancelled"}


def test_map_applies_the_rate_limiter(virtual_asyncio: Any) -> None:
    times: list[float] = []

    async def main() -> None:
        b = adm.TokenBucket(rate=1, per=10.0, burst=1, clock=adm.LoopClock())

        async def fn(x: int) -> int:
            times.append(asyncio.get_running_loop().time())
            return x

        assert [r async for r in adm.map(fn, range(4), limit=10, rate=b)] == [0, 1, 2, 3]

    virtual_asyncio.run(main)
    assert times == [pytest.approx(t) for t in (0.0, 10.0, 20.0, 30.0)]


def test_map_outside_asyncio_says_what_to_use_instead() -> None:
    async def double(x: int) -> int:
        return 2 * x

    async def main() -> list[int]:
        return [r async for r in adm.map(double, range(3), limit=2)]

    with pytest.raises(
        RuntimeError, match=r"asyncio only.*admission\.gather or admission\.TaskPool"
    ):
        anyio.run(main, backend="trio")


@pytest.mark.parametrize(
    "rate", [5, 2.5, "10/s", adm.Semaphore(2), [adm.TokenBucket(rate=1)], True]
)
def test_map_checks_rate_at_the_call(rate: object) -> None:
    # Issue 12 (13): a bad rate failed only when the first call ran, inside a task.
    async def fn(x: int) -> int:
        return x

    with pytest.raises(TypeError, match=r"^rate must be a TokenBucket, a SlidingWindow, an AllOf"):
        adm.map(fn, range(3), limit=2, rate=rate)  # type: ignore[arg-type]


def test_map_checks_limit_at_the_call() -> None:
    async def fn(x: int) -> int:
        return x

    with pytest.raises(ValueError, match=r"^limit must be"):
        adm.map(fn, range(3), limit=0)


@pytest.mark.anyio
@ASYNCIO_ONLY
async def test_map_takes_every_kind_of_rate_limiter() -> None:
    async def fn(x: int) -> int:
        return x

    for rate in (
        adm.TokenBucket(rate=100, burst=10),
        adm.SlidingWindow(limit=10, window=1.0),
        adm.all_of(adm.TokenBucket(rate=100, burst=10), adm.SlidingWindow(10, 1.0)),
        None,
    ):
        it = adm.map(fn, range(3), limit=2, rate=rate)
        assert [r async for r in it] == [0, 1, 2]
