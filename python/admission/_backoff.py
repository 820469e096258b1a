"""How long a retry waits before its next attempt: exponential backoff, capped, then jittered.

This module owns the arithmetic only: no clock, no sleeping, no decision to retry (that is
`admission.retry`). The cap is applied *before* the jitter, so a capped wait is still spread
over ``[0, cap)``: clients that failed together do not retry together (stamina, through
tenacity's ``wait_exponential_jitter``, adds its jitter after capping, so from the 7th attempt
on every wait is the cap itself).

>>> import random
>>> b = Backoff(base=0.1, cap=10.0, jitter="none", random=random.Random(0).random)
>>> [round(b.wait(n, 0.0), 3) for n in (1, 2, 3, 4, 8, 100)]
[0.1, 0.2, 0.4, 0.8, 10.0, 10.0]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

__all__ = ["JITTERS", "Backoff", "Jitter"]

Jitter = Literal["full", "decorrelated", "none"]
JITTERS: tuple[Jitter, ...] = ("full", "decorrelated", "none")

# 2.0 ** 1024 overflows (OverflowError); past 2 ** 1023 every wait is the cap anyway.
_MAX_EXPONENT = 1023


class Backoff:
    """The wait before retry number ``n`` (1 for the first retry), in seconds.

    - ``"full"``: uniform in ``[0, min(cap, base * 2 ** (n - 1)))`` (AWS's "full jitter").
    - ``"decorrelated"``: uniform in ``[base, 3 * previous)``, capped (AWS's "decorrelated
      jitter"); ``previous`` is the wait this formula gave before the previous retry
      (``base`` before the first).
    - ``"none"``: ``min(cap, base * 2 ** (n - 1))``, no randomness.

    ``random`` returns a float in ``[0, 1)`` (``random.random``, or a seeded
    ``random.Random(seed).random`` for reproducible waits).
    """

    __slots__ = ("base", "cap", "jitter", "random")

    def __init__(
        self, base: float, cap: float, jitter: Jitter, random: Callable[[], float]
    ) -> None:
        self.base = base
        self.cap = cap
        self.jitter = jitter
        self.random = random

    def exponential(self, n: int) -> float:
        """``min(cap, base * 2 ** (n - 1))``: the upper bound of full jitter."""
        return min(self.cap, self.base * 2.0 ** min(n - 1, _MAX_EXPONENT))

    def wait(self, n: int, previous: float) -> float:
        """The wait before retry ``n``; ``previous`` is only read by decorrelated jitter.

        >>> import random
        >>> full = Backoff(0.1, 5.0, "full", random.Random(1).random)
        >>> waits = [full.wait(7, 0.0) for _ in range(1000)]
        >>> 0 <= min(waits) < 0.1 and 4.9 < max(waits) < 5.0   # spread under the cap
        True
        """
        if self.jitter == "full":
            return self.random() * self.exponential(n)
        if self.jitter == "decorrelated":
            low = self.base
            high = max(previous, low) * 3.0
            return min(self.cap, low + self.random() * (high - low))
        return self.exponential(n)
