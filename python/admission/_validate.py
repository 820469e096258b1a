"""Argument checks shared by the Python-level methods (the native ones check their own)."""

from __future__ import annotations

import math

__all__ = ["timeout_seconds"]


def timeout_seconds(timeout: float | None) -> float | None:
    """Returns ``timeout`` as a float, or ``None``; refuses negative, NaN and non-numbers."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds or None, got {timeout!r}")
    value = float(timeout)
    if math.isnan(value) or value < 0:
        raise ValueError(f"timeout must be >= 0 seconds or None, got {timeout!r}")
    return value
