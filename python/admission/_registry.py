"""The live primitives of this process, for metrics and alerts, without keeping them alive.

Every `TokenBucket`, `SlidingWindow` and `Semaphore` adds itself here as it is constructed
(a weak reference: registering never extends an object's life and costs nothing per call).
What happens to the counts of a dropped primitive is the metrics' business
(`admission.metrics.retired`).
"""

from __future__ import annotations

import weakref
from typing import Any

__all__ = ["live", "register"]

# id -> weak reference. Each operation on it is one atomic dict call, so no lock: a lock
# taken by the weak references' callbacks could deadlock (they run wherever a collection
# frees a primitive, even inside `register`), and copying the references is one C-level call
# however many there are (a WeakSet is iterated in Python).
_live: dict[int, weakref.ref[Any]] = {}


def register(obj: object) -> None:
    """Adds a primitive (weakly). Called by each primitive's ``__init__``."""
    key = id(obj)

    def forget(ref: weakref.ref[Any]) -> None:
        # Called as obj is deallocated, before its id can be reused by another object.
        if _live.get(key) is ref:
            del _live[key]

    _live[key] = weakref.ref(obj, forget)


def live() -> list[Any]:
    """Strong references to every live primitive, in no particular order."""
    refs = list(_live.values())
    return [obj for ref in refs if (obj := ref()) is not None]
