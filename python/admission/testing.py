"""Helpers for testing code that uses admission.

`ManualClock` is a clock that moves only when told to. Pass it as ``clock=`` to any rate
limiter and decisions become deterministic. Blocking waits (``with bucket:``) on a limiter
with a manual clock do not sleep: they advance the clock by the wait instead, so a test can
never hang on virtual time.

>>> import admission as adm
>>> clock = adm.testing.ManualClock()
>>> b = adm.TokenBucket(rate=1, per=1.0, burst=1, clock=clock)
>>> b.try_acquire(), b.try_acquire()
(True, False)
>>> clock.advance(1.0)
1.0
>>> b.try_acquire()
True
"""

from __future__ import annotations

from admission._native import ManualClock

__all__ = ["ManualClock"]
