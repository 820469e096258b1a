"""The live primitives of this process, for metrics and alerts, without keeping them alive.

Every `TokenBucket`, `SlidingWindow` and `Semaphore` adds itself here as it is constructed
(a weak reference: registering never extends an object's life and costs nothing per call).

Exported counters are aggregated per ``(kind, name)``, so a dropped primitive must not take its
counts with it (a counter that goes down reads as a reset). Once `track_retired` is called (by
the metrics exporters), each primitive dropped afterwards adds its final counters and wait
histogram to native per-``(kind, name)`` totals as it is deallocated; `snapshot` folds them in
here. A dropped primitive is never seen both live and retired: it leaves the weak set before
it is deallocated, and a snapshot holds strong references to the live ones it reads.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass, field
from typing import Any

from admission import _native

__all__ = ["Retired", "live", "register", "snapshot", "track_retired"]

_lock = threading.Lock()
_live: weakref.WeakSet[Any] = weakref.WeakSet()
_retired: dict[tuple[str, str | None], Retired] = {}
_tracking = False


@dataclass(slots=True)
class Retired:
    """Running totals of the dropped primitives of one ``(kind, name)``."""

    primitives: int = 0
    counters: list[int] = field(default_factory=lambda: [0] * 5)
    """``[admitted, admitted_cost, rejected, timed_out, cancelled]``."""
    counts: list[int] = field(default_factory=lambda: [0] * (len(_native.WAIT_BOUNDS) + 1))
    sum: float = 0.0

    def copy(self) -> Retired:
        return Retired(self.primitives, list(self.counters), list(self.counts), self.sum)


def register(obj: object) -> None:
    """Adds a primitive (weakly). Called by each primitive's ``__init__``."""
    with _lock:
        _live.add(obj)


def live() -> list[Any]:
    """Strong references to every live primitive, in no particular order."""
    with _lock:
        return list(_live)


def track_retired() -> None:
    """Starts keeping the final figures of primitives dropped from now on. Idempotent."""
    global _tracking
    with _lock:
        if not _tracking:
            _native._track_retired(True)
            _tracking = True


def snapshot() -> tuple[list[Any], dict[tuple[str, str | None], Retired]]:
    """The live primitives and a copy of the retired totals, consistent with each other."""
    with _lock:
        # Live first: from here on these cannot be dropped (we hold them); any primitive
        # dropped before this point has already retired its figures natively.
        objs = list(_live)
        for kind, name, primitives, counters, counts, total in _native._drain_retired():
            entry = _retired.get((kind, name))
            if entry is None:
                entry = _retired[(kind, name)] = Retired()
            entry.primitives += primitives
            entry.counters = [a + b for a, b in zip(entry.counters, counters, strict=True)]
            entry.counts = [a + b for a, b in zip(entry.counts, counts, strict=True)]
            entry.sum += total
        return objs, {key: r.copy() for key, r in _retired.items()}
