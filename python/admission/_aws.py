"""Awaitables: those that will never be awaited (closed, so they warn nobody), and the
shape of a rate limiter the async helpers acquire from."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Iterable
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    from admission.combine import AllOf
    from admission.rate import SlidingWindow, TokenBucket

__all__ = ["Acquirable", "discard", "rate_limiter"]

Acquirable: TypeAlias = "TokenBucket | SlidingWindow | AllOf"
"""What `gather.map` and `TaskPool` take as ``rate=``: a rate limiter, or several together."""


def rate_limiter(rate: object, arg: str = "rate") -> Acquirable | None:
    """Returns ``rate`` if it is ``None``, a `TokenBucket`, a `SlidingWindow` or an `AllOf`;
    raises a TypeError naming ``arg`` otherwise, at the call that got it (not when the first
    task runs). A `Semaphore` is refused: each task would take a permit and never give it
    back (``limit=`` is the concurrency limit)."""
    from admission.combine import AllOf
    from admission.concurrency import Semaphore
    from admission.rate import SlidingWindow, TokenBucket

    if rate is None or isinstance(rate, (TokenBucket, SlidingWindow, AllOf)):
        return rate
    why = (
        " (a semaphore's permits would never be released: limit= bounds concurrency)"
        if isinstance(rate, Semaphore)
        else ""
    )
    raise TypeError(
        f"{arg} must be a TokenBucket, a SlidingWindow, an AllOf (all_of(...)) or None, "
        f"got {rate!r}{why}"
    )


def discard(aws: Iterable[Awaitable[Any]]) -> None:
    """Closes coroutines and cancels futures that will not be awaited.

    Without this, abandoning an un-started coroutine emits "coroutine ... was never awaited".
    """
    for aw in aws:
        if inspect.iscoroutine(aw):
            aw.close()
        elif isinstance(aw, asyncio.Future):
            aw.cancel()
