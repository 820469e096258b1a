"""`to_thread`: run blocking code in a worker thread, bounded by a limiter."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, ParamSpec, TypeVar

from admission._waiting import running_loop

__all__ = ["to_thread"]

P = ParamSpec("P")
R = TypeVar("R")


async def to_thread(
    fn: Callable[P, R],
    /,
    *args: P.args,
    **kwargs: P.kwargs,
) -> R:
    """Runs ``fn(*args, **kwargs)`` in a worker thread without blocking the event loop.

    Bound it with a limiter passed as the keyword ``limiter`` (a `Semaphore`, or any async
    context manager): at most that many calls occupy threads at once, the rest wait their
    turn (FIFO) without occupying a thread. ``limiter`` is taken out of ``kwargs``; ``fn``
    never sees it.

    >>> import asyncio, admission as adm
    >>> s = adm.Semaphore(4)
    >>> asyncio.run(adm.to_thread(sum, [1, 2, 3], limiter=s))
    6

    Uses ``asyncio.to_thread`` (the loop's default executor) on asyncio, and
    ``trio.to_thread.run_sync`` on trio.
    """
    limiter: AbstractAsyncContextManager[Any] | None = kwargs.pop("limiter", None)  # type: ignore[assignment]
    call = functools.partial(fn, *args, **kwargs)
    if limiter is None:
        return await _run(call)
    async with limiter:
        return await _run(call)


async def _run(call: Callable[[], R]) -> R:
    if running_loop() is None:
        import trio

        return await trio.to_thread.run_sync(call)
    return await asyncio.to_thread(call)
