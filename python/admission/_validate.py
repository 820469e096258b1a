"""Argument checks shared by the Python-level API (the native methods check their own)."""

from __future__ import annotations

import math

__all__ = ["positive_int", "timeout_seconds"]


def timeout_seconds(timeout: float | str | None, arg: str = "timeout") -> float | None:
    """Returns ``timeout`` as a float, or ``None``; refuses negative, NaN and non-numbers.

    Duration strings are accepted everywhere a timeout is: ``"10s"``, ``"250ms"``, ``"1m"``.
    """
    if timeout is None:
        return None
    if isinstance(timeout, str):
        from admission.durations import parse_duration  # "10s", "250ms"

        return parse_duration(timeout, arg)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"{arg} must be a number of seconds or None, got {timeout!r}")
    value = float(timeout)
    if math.isnan(value) or value < 0:
        raise ValueError(f"{arg} must be >= 0 seconds or None, got {timeout!r}")
    return value


def positive_int(value: int, arg: str) -> int:
    """Returns ``value`` if it is an int >= 1 (not a bool); raises naming ``arg`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{arg} must be an integer >= 1, got {value!r}")
    if value < 1:
        raise ValueError(f"{arg} must be an integer >= 1, got {value!r}")
    return value
