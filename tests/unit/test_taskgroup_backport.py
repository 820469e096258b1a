"""The 3.10 backport of ``asyncio.TaskGroup`` (``admission._taskgroup``), on its own.

test_async_taskpool.py runs the whole TaskPool suite on it as well; these are the cases a
pool does not reach: an outside cancellation while exiting, a failure while the body is
already waiting in ``__aexit__``, the body's own error, and misuse.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import pytest

from admission._taskgroup import TaskGroup as Backport

if sys.version_info < (3, 11):  # pragma: no cover - 3.10 only
    from exceptiongroup import ExceptionGroup

# Each test runs on the backport and, from 3.11, on asyncio.TaskGroup: same expectations.
GROUPS = [pytest.param(Backport, id="backport")]
if sys.version_info >= (3, 11):
    GROUPS.append(pytest.param(asyncio.TaskGroup, id="asyncio.TaskGroup"))
each_group = pytest.mark.parametrize("group_type", GROUPS)


@each_group
def test_outside_cancellation_while_exiting_waits_for_the_tasks_then_propagates(
    group_type: Any,
) -> None:
    finished: list[str] = []

    async def slow_cleanup() -> None:
        try:
            await asyncio.sleep(10)
        finally:
            await asyncio.sleep(0.01)  # cleanup that takes a while
            finished.append("task")

    async def body() -> None:
        async with group_type() as group:
            group.create_task(slow_cleanup())
        finished.append("body")  # not reached

    async def main() -> None:
        task = asyncio.create_task(body())
        await asyncio.sleep(0.01)  # the body is in __aexit__, waiting for the task
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert finished == ["task"]


@each_group
def test_a_failure_while_the_body_waits_in_exit_is_raised_and_the_body_not_cancelled(
    group_type: Any,
) -> None:
    async def fail_later() -> None:
        await asyncio.sleep(0.01)
        raise ValueError("late")

    async def main() -> str:
        with pytest.raises(ExceptionGroup) as info:
            async with group_type() as group:
                group.create_task(fail_later())
        assert [type(e) for e in info.value.exceptions] == [ValueError]
        await asyncio.sleep(0)  # not cancelled: the group did not cancel its parent
        return "went on"

    assert asyncio.run(main()) == "went on"


@each_group
def test_the_body_error_and_task_failures_are_grouped(group_type: Any) -> None:
    async def fail() -> None:
        raise KeyError("task")

    async def main() -> None:
        async with group_type() as group:
            group.create_task(fail())
            await asyncio.sleep(10)  # the failure cancels the body here
            raise AssertionError("not reached")

    with pytest.raises(ExceptionGroup) as info:
        asyncio.run(main())
    assert [type(e) for e in info.value.exceptions] == [KeyError]

    async def body_fails() -> None:
        async with group_type() as group:
            group.create_task(asyncio.sleep(10))
            raise ValueError("body")

    with pytest.raises(ExceptionGroup) as info:
        asyncio.run(body_fails())
    assert [type(e) for e in info.value.exceptions] == [ValueError]


def test_misuse_is_refused_and_coroutines_are_closed() -> None:
    async def nothing() -> None:
        pass

    group = Backport()
    coro = nothing()
    with pytest.raises(RuntimeError, match="not entered"):
        group.create_task(coro)
    assert coro.cr_frame is None  # closed: no "never awaited" warning

    async def main() -> None:
        async with group:
            pass
        late = nothing()
        with pytest.raises(RuntimeError, match="finished or shutting down"):
            group.create_task(late)
        with pytest.raises(RuntimeError, match="already entered"):
            async with group:
                pass

    asyncio.run(main())
