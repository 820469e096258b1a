"""Helpers for awaitables that will never be awaited (so they warn nobody)."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Iterable
from typing import Any

__all__ = ["discard"]


def discard(aws: Iterable[Awaitable[Any]]) -> None:
    """Closes coroutines and cancels futures that will not be awaited.

    Without this, abandoning an un-started coroutine emits "coroutine ... was never awaited".
    """
    for aw in aws:
        if inspect.iscoroutine(aw):
            aw.close()
        elif isinstance(aw, asyncio.Future):
            aw.cancel()
