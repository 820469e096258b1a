"""TaskPool: TaskGroup semantics plus a concurrency limit, a rate limiter and a per-task timeout.

Runs on asyncio (TaskGroup), uvloop and trio (nursery).
"""

from __future__ import annotations

import inspect
import sys
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from support import Tracker, wait_until, yields

import admission as adm
from admission import _backend
from admission._taskgroup import TaskGroup

if sys.version_info < (3, 11):  # pragma: no cover - 3.10 only
    from exceptiongroup import BaseExceptionGroup, ExceptionGroup


def _on_asyncio(request: pytest.FixtureRequest) -> bool:
    """Whether the test runs on asyncio (or uvloop): an anyio backend or a virtual runner."""
    params = request.node.callspec.params
    backend = params.get("anyio_backend", params.get("virtual"))
    return (backend[0] if isinstance(backend, tuple) else backend) == "asyncio"


@pytest.fixture(autouse=True, params=["asyncio.TaskGroup", "backport"])
def task_group(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """On asyncio, each test runs on asyncio.TaskGroup (3.11+) and on the 3.10 backport."""
    if request.param == "backport":
        if not _on_asyncio(request):
            pytest.skip("trio runs on a nursery: nothing to backport")
        monkeypatch.setattr(_backend, "TASK_GROUP", TaskGroup)
    elif sys.version_info < (3, 11) and _on_asyncio(request):
        pytest.skip("no asyncio.TaskGroup before 3.11 (the backport run covers it)")
    return str(request.param)


def leaves(group: BaseException) -> list[BaseException]:
    if isinstance(group, BaseExceptionGroup):
        return [leaf for exc in group.exceptions for leaf in leaves(exc)]
    return [group]


@pytest.mark.anyio
async def test_runs_everything_at_most_limit_at_once() -> None:
    t = Tracker()
    observed: list[tuple[int, int]] = []

    async def body(i: int) -> None:
        await yields(1 + i % 4)

    async with adm.TaskPool(limit=3) as pool:
        assert (pool.limit, pool.running, pool.queued) == (3, 0, 0)
        for i in range(20):
            pool.spawn(t.make(i, body))
        assert pool.spawned == 20
        while pool.running or pool.queued:
            observed.append((pool.running, pool.queued))
            await anyio.lowlevel.checkpoint()
    assert t.peak == 3
    assert all(running <= 3 for running, _ in observed)
    assert t.ended == dict.fromkeys(range(20), "done")
    assert t.started == list(range(20)), "queued coroutines start in spawn order"
    assert (pool.running, pool.queued) == (0, 0)
    t.assert_no_orphans()


@pytest.mark.anyio
async def test_exit_waits_for_every_task() -> None:
    t = Tracker()

    async def body(i: int) -> None:
        await yields(10 * (i + 1))

    async with adm.TaskPool(limit=2) as pool:
        for i in range(5):
            pool.spawn(t.make(i, body))
    assert t.ended == dict.fromkeys(range(5), "done")
    t.assert_no_orphans()


@pytest.mark.anyio
async def test_an_error_cancels_siblings_and_the_body_and_is_grouped() -> None:
    t = Tracker()
    body_outcome: list[str] = []

    async def body(i: int) -> None:
        if i == 1:
            await yields(3)
            raise ValueError("task 1 failed")
        await anyio.sleep_forever()

    pool = adm.TaskPool(limit=3)

    async def run_pool() -> None:
        async with pool:
            for i in range(6):
                pool.spawn(t.make(i, body))
            try:
                await anyio.sleep_forever()
            except anyio.get_cancelled_exc_class():
                body_outcome.append("cancelled")
                raise

    with pytest.raises(BaseExceptionGroup) as info:
        await run_pool()
    assert isinstance(info.value, ExceptionGroup)
    assert [type(e) for e in leaves(info.value)] == [ValueError]
    assert str(leaves(info.value)[0]) == "task 1 failed"
    assert body_outcome == ["cancelled"]
    assert t.ended == {0: "cancelled", 1: "error", 2: "cancelled"}
    # The three still queued never started, and were closed (no "never awaited" warning).
    assert sorted(t.started) == [0, 1, 2]
    t.assert_no_orphans()
    assert (pool.running, pool.queued) == (0, 0)


@pytest.mark.anyio
async def test_an_error_in_the_body_cancels_the_tasks() -> None:
    t = Tracker()

    async def body(i: int) -> None:
        await anyio.sleep_forever()

    async def run_pool() -> None:
        async with adm.TaskPool(limit=2) as pool:
            for i in range(4):
                pool.spawn(t.make(i, body))
            await wait_until(lambda: len(t.started) == 2)
            raise KeyError("body")

    with pytest.raises(BaseExceptionGroup) as info:
        await run_pool()
    assert [type(e) for e in leaves(info.value)] == [KeyError]
    assert t.ended == {0: "cancelled", 1: "cancelled"}
    t.assert_no_orphans()


@pytest.mark.anyio
async def test_cancelling_the_pool_from_outside_cancels_everything() -> None:
    t = Tracker()

    async def body(i: int) -> None:
        await anyio.sleep_forever()

    with anyio.CancelScope() as scope:
        async with adm.TaskPool(limit=2) as pool:
            for i in range(5):
                pool.spawn(t.make(i, body))
            await wait_until(lambda: len(t.started) == 2)
            scope.cancel()
    assert scope.cancelled_caught
    assert t.ended == {0: "cancelled", 1: "cancelled"}
    t.assert_no_orphans()


@pytest.mark.anyio
async def test_spawn_outside_async_with_raises_closed_and_closes_the_coroutine() -> None:
    t = Tracker()

    async def body(i: int) -> None:
        pass  # pragma: no cover

    pool = adm.TaskPool(limit=2)
    before = t.make(0, body)
    with pytest.raises(adm.Closed):
        pool.spawn(before)
    assert inspect.getcoroutinestate(before) == "CORO_CLOSED"

    async with pool:
        pass
    after = t.make(1, body)
    with pytest.raises(adm.Closed):
        pool.spawn(after)
    assert inspect.getcoroutinestate(after) == "CORO_CLOSED"
    assert t.started == []
    assert pool.spawned == 0


@pytest.mark.anyio
async def test_arguments_are_validated() -> None:
    with pytest.raises(ValueError, match="limit"):
        adm.TaskPool(limit=0)
    with pytest.raises(TypeError, match="limit"):
        adm.TaskPool(limit=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout"):
        adm.TaskPool(limit=1, timeout=-1.0)
    pool = adm.TaskPool(limit=1)
    async with pool:
        with pytest.raises(RuntimeError, match="already open"):
            await pool.__aenter__()


def test_rate_limiter_spaces_the_task_starts(virtual: Any) -> None:
    starts: list[float] = []

    async def main() -> None:
        b = adm.TokenBucket(rate=1, per=10.0, burst=1, clock=adm.LoopClock())
        t0 = anyio.current_time()

        async def work() -> None:
            starts.append(anyio.current_time() - t0)

        async with adm.TaskPool(limit=10, rate=b) as pool:
            for _ in range(4):
                pool.spawn(work())

    virtual.run(main)
    assert starts == [pytest.approx(t) for t in (0.0, 10.0, 20.0, 30.0)]


def test_per_task_timeout_raises_timeout_error_inside_the_group(virtual: Any) -> None:
    got: dict[str, Any] = {}

    async def main() -> None:
        t0 = anyio.current_time()
        ended: dict[str, float] = {}

        async def quick() -> None:
            await anyio.sleep(1.0)
            ended["quick"] = anyio.current_time() - t0

        async def slow() -> None:
            await anyio.sleep(100.0)
            ended["slow"] = anyio.current_time() - t0  # pragma: no cover

        try:
            async with adm.TaskPool(limit=2, timeout=5.0) as pool:
                pool.spawn(quick())
                pool.spawn(slow())
        except BaseExceptionGroup as group:
            got["group"] = group
        got["ended"] = ended
        got["elapsed"] = anyio.current_time() - t0

    virtual.run(main)
    assert got["ended"] == {"quick": pytest.approx(1.0)}
    assert got["elapsed"] == pytest.approx(5.0)
    errors = leaves(got["group"])
    assert len(errors) == 1
    assert isinstance(errors[0], TimeoutError), f"got {errors[0]!r}, not a TimeoutError"
    # The same error on every framework (asyncio's own timeout said nothing).
    assert str(errors[0]) == "task exceeded the pool's timeout of 5.0 s"


def test_a_tasks_own_timeout_error_is_not_taken_for_the_pools(virtual: Any) -> None:
    got: dict[str, Any] = {}

    async def main() -> None:
        async def own() -> None:
            await anyio.sleep(1.0)
            raise TimeoutError("the task's own")

        try:
            async with adm.TaskPool(limit=1, timeout=5.0) as pool:
                pool.spawn(own())
        except BaseExceptionGroup as group:
            got["group"] = group

    virtual.run(main)
    assert [str(e) for e in leaves(got["group"])] == ["the task's own"]


def test_cancelled_pool_closes_tasks_waiting_for_the_rate_and_refunds_them(virtual: Any) -> None:
    got: dict[str, Any] = {}

    async def main() -> None:
        b = adm.TokenBucket(rate=1, per=10.0, burst=1, clock=adm.LoopClock())
        t = Tracker()

        async def body(i: int) -> None:
            await anyio.lowlevel.checkpoint()

        with anyio.move_on_after(5.0):
            async with adm.TaskPool(limit=3, rate=b) as pool:
                for i in range(3):
                    pool.spawn(t.make(i, body))
        # Task 0 ran at once; 1 and 2 were waiting for the slots at 10 and 20 s: their
        # coroutines are closed unstarted and their reservations given back.
        got["started"] = list(t.started)
        t.assert_no_orphans()
        got["stats"] = b.stats()
        await anyio.sleep(5.0)
        got["try_at_10"] = b.try_acquire()

    virtual.run(main)
    assert got["started"] == [0]
    assert (got["stats"].admitted, got["stats"].cancelled) == (1, 2)
    assert got["try_at_10"] is True


@pytest.mark.parametrize(
    "rate", [5, 2.5, "10/s", adm.Semaphore(2), [adm.TokenBucket(rate=1)], True]
)
def test_taskpool_checks_rate_at_construction(rate: object) -> None:
    # Issue 12 (13): a bad rate failed only when the first task ran.
    with pytest.raises(TypeError, match=r"^rate must be a TokenBucket, a SlidingWindow, an AllOf"):
        adm.TaskPool(3, rate=rate)  # type: ignore[arg-type]


def test_taskpool_refuses_a_semaphore_as_rate_saying_why() -> None:
    with pytest.raises(TypeError, match="permits would never be released"):
        adm.TaskPool(3, rate=adm.Semaphore(2))  # type: ignore[arg-type]


def test_taskpool_takes_every_kind_of_rate_limiter() -> None:
    for rate in (
        adm.TokenBucket(rate=100, burst=10),
        adm.SlidingWindow(limit=10, window=1.0),
        adm.all_of(adm.TokenBucket(rate=100, burst=10), adm.SlidingWindow(10, 1.0)),
        None,
    ):
        assert adm.TaskPool(3, rate=rate).limit == 3
