"""Bounded ``gather`` and ``map``: at most ``limit`` awaitables run at once.

Unlike ``asyncio.gather(*coros)`` (every coroutine becomes a Task at once: thousands of
sockets, 429 storms, memory), these run exactly ``limit`` worker tasks that take the next
awaitable as soon as one finishes. No Task is created per item.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
)
from typing import Any, Literal, TypeVar, overload

from admission import _backend
from admission._aws import Acquirable, discard, rate_limiter
from admission._validate import positive_int

__all__ = ["gather", "map"]

T = TypeVar("T")
R = TypeVar("R")


@overload
async def gather(
    *aws: Awaitable[T], limit: int, return_exceptions: Literal[False] = False
) -> list[T]: ...
@overload
async def gather(
    *aws: Awaitable[T], limit: int, return_exceptions: Literal[True]
) -> list[T | BaseException]: ...
async def gather(
    *aws: Awaitable[T], limit: int, return_exceptions: bool = False
) -> list[T] | list[T | BaseException]:
    """Awaits ``aws`` with at most ``limit`` running at once; results in input order.

    On the first error (unless ``return_exceptions``), the running awaitables are cancelled
    and awaited, the ones not started are closed, and the error is raised: no orphan tasks,
    no "coroutine was never awaited". Cancelling ``gather`` itself does the same.

    Pass coroutines, not Tasks: a Task is already running and no limit can hold it back.

    >>> import asyncio, admission as adm
    >>> async def square(x):
    ...     await asyncio.sleep(0)
    ...     return x * x
    >>> asyncio.run(adm.gather(*(square(i) for i in range(5)), limit=2))
    [0, 1, 4, 9, 16]

    Works on asyncio (and uvloop) and on trio.
    """
    try:
        limit = positive_int(limit, "limit")
    except (TypeError, ValueError):
        discard(aws)  # refused: close them so none warns "never awaited"
        raise
    items = list(aws)
    if not items:
        return []
    results: list[Any] = [None] * len(items)
    source = iter(enumerate(items))

    async def worker() -> None:
        for index, aw in source:  # shared: each item goes to exactly one worker
            try:
                results[index] = await aw
            except Exception as exc:
                if not return_exceptions:
                    raise
                results[index] = exc

    workers = min(limit, len(items))
    try:
        # The first error cancels the other workers (and so the running awaitables), and
        # leaving waits for them all. Cancelling gather does the same.
        async with _backend.current().task_group() as group:
            for _ in range(workers):
                group.start_soon(worker)
    except BaseExceptionGroup as errors:
        # gather's contract: the first error itself, not a group.
        raise _first_leaf(errors) from None
    finally:
        discard(aw for _, aw in source)  # whatever never started
    return results


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


if sys.version_info < (3, 11):  # pragma: no cover - exercised on 3.10 only
    from exceptiongroup import BaseExceptionGroup


def map(  # mirrors the builtin on purpose
    fn: Callable[[T], Awaitable[R]],
    items: Iterable[T] | AsyncIterable[T],
    *,
    limit: int,
    rate: Acquirable | None = None,
) -> AsyncIterator[R]:
    """Yields ``await fn(item)`` for each item, in input order, at most ``limit`` at once.

    ``items`` may be an iterable or an async iterable and is consumed lazily, so it can be
    endless. With ``rate`` (a `TokenBucket` or `SlidingWindow`), each call first acquires
    one unit from it. At most ``limit`` calls are running or finished-but-not-yet-yielded,
    so memory stays bounded whatever the input size. On an error, or when the consumer stops
    early, the running calls are cancelled and awaited.

    ``limit`` and ``rate`` are checked by this call (``ValueError``/``TypeError`` naming the
    argument), before anything runs: ``rate`` must be a `TokenBucket`, a `SlidingWindow`, an
    `AllOf` or ``None``.

    asyncio only (trio forbids yielding from inside a nursery); on trio use `gather` or
    `TaskPool`.

    >>> import asyncio, admission as adm
    >>> async def double(x):
    ...     return 2 * x
    >>> async def main():
    ...     return [r async for r in adm.map(double, range(4), limit=2)]
    >>> asyncio.run(main())
    [0, 2, 4, 6]
    """
    return _map(fn, items, positive_int(limit, "limit"), rate_limiter(rate))


async def _map(
    fn: Callable[[T], Awaitable[R]],
    items: Iterable[T] | AsyncIterable[T],
    limit: int,
    rate: Acquirable | None,
) -> AsyncIterator[R]:
    if _backend.current().name != "asyncio":
        raise RuntimeError(
            "admission.map runs on asyncio only (trio forbids yielding from inside a "
            "nursery); on trio, use admission.gather or admission.TaskPool"
        )
    pending: list[asyncio.Task[R]] = []  # in input order

    async def call(item: T) -> R:
        if rate is not None:
            await rate.acquire()
        return await fn(item)

    async def feed() -> AsyncGenerator[T, None]:
        if isinstance(items, AsyncIterable):
            async for item in items:
                yield item
        else:
            for item in items:
                yield item

    source = feed()
    exhausted = False
    try:
        while True:
            while not exhausted and len(pending) < limit:
                try:
                    item = await source.__anext__()
                except StopAsyncIteration:
                    exhausted = True
                    break
                pending.append(asyncio.ensure_future(call(item)))
            if not pending:
                return
            head = pending.pop(0)
            yield await head
    finally:
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.wait(pending)
            for t in pending:
                if not t.cancelled():
                    t.exception()
        await source.aclose()
