"""`to_thread`: run blocking code in a worker thread, bounded by a limiter."""

from __future__ import annotations

import functools
import sys
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from admission import _backend

if sys.version_info >= (3, 11):
    from typing import TypeVarTuple, Unpack
elif TYPE_CHECKING:  # only type checkers need them on 3.10: not a runtime dependency
    from typing_extensions import TypeVarTuple, Unpack

__all__ = ["to_thread"]

R = TypeVar("R")
if sys.version_info >= (3, 11) or TYPE_CHECKING:
    Ts = TypeVarTuple("Ts")


class _Limiter(Protocol):
    """What ``limiter=`` takes: an async context manager, whatever its ``__aenter__`` returns
    (admission's limiters return a native awaitable, not a coroutine)."""

    def __aenter__(self) -> Awaitable[Any]: ...
    def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
        /,
    ) -> Awaitable[Any]: ...


async def to_thread(
    fn: Callable[[Unpack[Ts]], R],
    /,
    *args: Unpack[Ts],
    limiter: _Limiter | None = None,
) -> R:
    """Runs ``fn(*args)`` in a worker thread without blocking the event loop.

    Bound it with ``limiter`` (a `Semaphore`, a rate limiter, or any async context manager):
    at most that many calls occupy threads at once, the rest wait their turn (FIFO) without
    occupying a thread.

    >>> import asyncio, admission as adm
    >>> s = adm.Semaphore(4)
    >>> asyncio.run(adm.to_thread(sum, [1, 2, 3], limiter=s))
    6

    As with trio's and anyio's ``run_sync``, the only keyword is ``limiter``, so that type
    checkers check ``fn``'s arguments; pass keyword arguments with `functools.partial`:

    >>> import functools
    >>> asyncio.run(adm.to_thread(functools.partial(int, "ff", base=16), limiter=s))
    255

    Uses ``asyncio.to_thread`` (the loop's default executor) on asyncio, and
    ``trio.to_thread.run_sync`` on trio.
    """
    call = functools.partial(fn, *args)
    backend = _backend.current()
    if limiter is None:
        return await backend.to_thread(call)
    async with limiter:
        return await backend.to_thread(call)
