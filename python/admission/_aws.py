"""Awaitables: those that will never be awaited (closed, so they warn nobody), and the
shape of a rate limiter the async helpers acquire from."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Iterable
from typing import Any, Protocol

__all__ = ["Acquirable", "discard"]


class Acquirable(Protocol):
    """What `gather.map` and `TaskPool` take as ``rate=``: any limiter with an awaitable
    ``acquire`` (`TokenBucket`, `SlidingWindow`, `Semaphore`)."""

    def acquire(self, cost: int = 1, timeout: float | None = None) -> Awaitable[None]: ...


def discard(aws: Iterable[Awaitable[Any]]) -> None:
    """Closes coroutines and cancels futures that will not be awaited.

    Without this, abandoning an un-started coroutine emits "coroutine ... was never awaited".
    """
    for aw in aws:
        if inspect.iscoroutine(aw):
            aw.close()
        elif isinstance(aw, asyncio.Future):
            aw.cancel()
