"""`TaskGroup`: the semantics of ``asyncio.TaskGroup`` (3.11+) for `TaskPool` on Python 3.10.

What it guarantees, as asyncio's does:

- the first task to fail cancels the other tasks and the body of the ``async with`` (the
  task that entered the group), which then stops at its next ``await``;
- leaving the ``async with`` waits for every task, whatever happened;
- the failures (and the body's own error, if any) are raised together as an
  ``ExceptionGroup``; a ``KeyboardInterrupt`` or ``SystemExit`` is raised as is;
- the ``CancelledError`` the group itself caused in the body is swallowed; a cancellation
  from outside propagates once every task has finished.

One difference, which 3.10 cannot avoid: asyncio 3.11 counts a task's pending cancellation
requests (``Task.uncancel``), 3.10 does not. If the body is cancelled from outside at the
very moment the group cancels it for a failed task, that outside cancellation is absorbed
along with the group's own and the group raises the failures only.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, TypeVar

if sys.version_info < (3, 11):  # pragma: no cover - 3.10 only
    from exceptiongroup import BaseExceptionGroup

T = TypeVar("T")

__all__ = ["TaskGroup"]


def _is_base_error(exc: BaseException) -> bool:
    return isinstance(exc, (SystemExit, KeyboardInterrupt))


class TaskGroup:
    """See the module documentation."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._errors: list[BaseException] = []
        self._base_error: BaseException | None = None
        self._parent: asyncio.Task[Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Every task was asked to stop (a failure, an error in the body, or cancellation).
        self._aborting = False
        #: This group cancelled the body: the `CancelledError` that causes is its own.
        self._cancelled_parent = False
        self._exiting = False
        #: Set while `__aexit__` waits: resolved when the last task is done.
        self._all_done: asyncio.Future[None] | None = None

    async def __aenter__(self) -> TaskGroup:
        if self._loop is not None:
            raise RuntimeError("this TaskGroup was already entered")
        self._loop = asyncio.get_running_loop()
        self._parent = asyncio.current_task()
        if self._parent is None:
            raise RuntimeError("TaskGroup must be entered from a task")
        return self

    def create_task(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        if self._loop is None:
            coro.close()
            raise RuntimeError("this TaskGroup was not entered")
        if self._aborting or (self._exiting and not self._tasks):
            coro.close()
            raise RuntimeError("this TaskGroup is finished or shutting down")
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _abort(self) -> None:
        self._aborting = True
        for task in self._tasks:
            if not task.done():
                task.cancel()

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not self._tasks and self._all_done is not None and not self._all_done.done():
            self._all_done.set_result(None)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            return
        self._errors.append(exc)
        if _is_base_error(exc) and self._base_error is None:
            self._base_error = exc
        if self._aborting or self._cancelled_parent:
            return
        # The first failure: stop the others, and the body if it is still running (in
        # `__aexit__` it is only waiting for the tasks, which are being cancelled anyway).
        self._abort()
        parent = self._parent
        if parent is not None and not parent.done() and not self._exiting:
            self._cancelled_parent = True
            parent.cancel()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._exiting = True
        if exc is not None and _is_base_error(exc) and self._base_error is None:
            self._base_error = exc
        # A CancelledError out of the body is ours to swallow if this group caused it.
        cancellation: BaseException | None = None
        if isinstance(exc, asyncio.CancelledError) and not self._cancelled_parent:
            cancellation = exc
        if exc is not None and not self._aborting:
            self._abort()  # the body failed or was cancelled: so do the tasks
        while self._tasks:
            assert self._loop is not None
            self._all_done = self._loop.create_future()
            try:
                await self._all_done
            except asyncio.CancelledError as err:
                # Cancelled from outside while waiting: stop the tasks, keep waiting for
                # them, then propagate the cancellation.
                if not self._aborting:
                    self._abort()
                cancellation = cancellation or err
            self._all_done = None
        if self._base_error is not None:
            raise self._base_error
        if exc is not None and not isinstance(exc, asyncio.CancelledError):
            self._errors.append(exc)
        errors, self._errors = self._errors, []  # no reference cycles through tracebacks
        if errors:
            raise BaseExceptionGroup("unhandled errors in a TaskGroup", errors) from None
        if cancellation is not None:
            raise cancellation
