"""The backend seam (issue 13): one module tells asyncio from trio, and its wakers keep one
contract on every framework and in threads."""

from __future__ import annotations

import ast
import asyncio
import sys
import threading
from pathlib import Path

import anyio
import pytest
from support import yields

import admission as adm
from admission import _backend

if sys.version_info < (3, 11):  # pragma: no cover - 3.10 only
    from exceptiongroup import ExceptionGroup

pytestmark = pytest.mark.anyio

PACKAGE = Path(adm.__file__).parent


def test_only_the_backend_module_asks_which_framework_runs() -> None:
    # Whoever imports trio or looks up the running asyncio loop is deciding "asyncio or
    # trio?": only _backend may (asyncio-only code asks asyncio for its loop, which is fine).
    askers = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or "", *(alias.name for alias in node.names)]
            elif isinstance(node, (ast.Name, ast.Attribute)):
                names = [node.id if isinstance(node, ast.Name) else node.attr]
            if any(n == "trio" or n.startswith("trio.") or n == "_get_running_loop" for n in names):
                askers.add(path.relative_to(PACKAGE).as_posix())
    assert askers == {"_backend.py"}


def test_outside_any_loop_current_says_so() -> None:
    with pytest.raises(RuntimeError, match=r"no running event loop \(asyncio or trio\)"):
        _backend.current()
    assert _backend.in_event_loop_thread() is False
    assert _backend.on_trio() is False


async def test_current_names_the_framework(anyio_backend_name: str) -> None:
    backend = _backend.current()
    assert backend.name == anyio_backend_name  # uvloop is asyncio
    assert _backend.in_event_loop_thread() is True
    assert _backend.on_trio() is (anyio_backend_name == "trio")
    before = backend.time()
    await anyio.sleep(0.001)
    assert backend.time() >= before  # the loop's clock


async def test_a_waker_armed_then_woken_before_the_wait_is_not_lost() -> None:
    waker = _backend.current().waker()
    waker.arm()
    waker()
    waker()  # more than once: harmless
    with anyio.fail_after(10):
        assert await waker.wait(None) is True


async def test_a_waker_times_out_false_and_is_woken_from_another_thread() -> None:
    backend = _backend.current()
    waker = backend.waker()
    waker.arm()
    assert await waker.wait(0.001) is False  # the time ran out
    waker.arm()
    thread = threading.Thread(target=waker)
    with anyio.fail_after(10):
        thread.start()
        assert await waker.wait(None) is True
    thread.join(10)
    waker()  # after its waiter is done: harmless


async def test_a_cancelled_wait_raises_and_a_late_wake_is_harmless() -> None:
    waker = _backend.current().waker()
    waker.arm()
    with anyio.move_on_after(0.001) as scope:
        await waker.wait(None)
    assert scope.cancelled_caught
    waker()  # the waiter gave up: nobody to wake, no error
    await yields(3)


def test_thread_waker_keeps_the_same_contract() -> None:
    waker = _backend.ThreadWaker()
    waker.arm()
    waker()
    assert waker.wait(None) is True
    waker.arm()
    assert waker.wait(0.001) is False
    thread = threading.Timer(0.001, waker)
    thread.start()
    assert waker.wait(10) is True
    thread.join(10)


async def test_a_task_group_cancels_the_rest_on_the_first_error() -> None:
    stopped: list[str] = []

    async def fails() -> None:
        await yields(2)
        raise ValueError("first")

    async def waits() -> None:
        try:
            await anyio.sleep(60)
        finally:
            stopped.append("cancelled")

    async def run() -> None:
        async with _backend.current().task_group() as group:
            group.start_soon(waits)
            group.start_soon(fails)

    with anyio.fail_after(10), pytest.raises(ExceptionGroup) as info:
        await run()
    assert [str(e) for e in info.value.exceptions] == ["first"]
    assert stopped == ["cancelled"]


async def test_within_raises_the_callers_error_and_lets_the_tasks_own_pass() -> None:
    backend = _backend.current()

    async def slow() -> None:
        await anyio.sleep(60)

    async def own() -> None:
        raise TimeoutError("the task's own")

    with anyio.fail_after(10):
        with pytest.raises(TimeoutError, match="too slow") as info:
            await backend.within(0.001, slow(), lambda: TimeoutError("too slow"))
        assert info.value.__cause__ is not None  # from the framework's own
        with pytest.raises(TimeoutError, match="the task's own"):
            await backend.within(10, own(), lambda: TimeoutError("too slow"))
        assert await backend.within(10, asyncio_free_value(), lambda: TimeoutError()) == 7


async def asyncio_free_value() -> int:
    return 7


async def test_to_thread_runs_in_another_thread() -> None:
    here = threading.get_ident()
    with anyio.fail_after(10):
        there = await _backend.current().to_thread(threading.get_ident)
    assert there != here


def test_asyncio_first_step_takes_nothing() -> None:
    # On asyncio the native first step has tried already: Python never takes again there.
    taken: list[int] = []

    async def main() -> bool:
        return await _backend.current().first_step(lambda: bool(taken.append(1)) or True)

    assert asyncio.run(main()) is False
    assert taken == []
