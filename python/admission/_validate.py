"""Argument checks shared by the Python-level API (the native methods check their own)."""

from __future__ import annotations

import math
import threading

__all__ = [
    "blocking_timeout",
    "duration_seconds",
    "nonnegative_int",
    "positive_int",
    "timeout_seconds",
]


def blocking_timeout(seconds: float | None) -> float | None:
    """``seconds`` as a timeout for ``Event.wait``, ``Condition.wait``, ``Lock.acquire`` or
    ``Thread.join``: ``None`` (no limit) for ``None``, infinity and anything beyond
    ``threading.TIMEOUT_MAX`` (those calls raise ``OverflowError`` for it).

    >>> blocking_timeout(1.5), blocking_timeout(float("inf")), blocking_timeout(2**63)
    (1.5, None, None)
    """
    if seconds is None or seconds > threading.TIMEOUT_MAX:
        return None
    return seconds


def timeout_seconds(timeout: float | str | None, arg: str = "timeout") -> float | None:
    """Returns ``timeout`` as a float, or ``None``; refuses negative, NaN and non-numbers.

    Duration strings are accepted everywhere a timeout is: ``"10s"``, ``"250ms"``, ``"1m"``.
    """
    if timeout is None:
        return None
    return _seconds(timeout, arg, " or None", finite=False, positive=False)


def duration_seconds(value: float | str, arg: str, *, positive: bool = False) -> float:
    """A setting that must be a duration: `timeout_seconds` without ``None`` or infinity.

    ``value`` is a number of seconds or a duration string (``"10s"``, ``"250ms"``); the
    result is finite and >= 0, or > 0 with ``positive``. Raises naming ``arg``.

    >>> duration_seconds("250ms", "connect_timeout"), duration_seconds(2, "close_timeout")
    (0.25, 2.0)
    >>> duration_seconds("0s", "connect_timeout", positive=True)
    Traceback (most recent call last):
    ValueError: connect_timeout must be a finite number of seconds > 0, got '0s'
    """
    return _seconds(value, arg, "", finite=True, positive=positive)


def _seconds(value: object, arg: str, or_none: str, *, finite: bool, positive: bool) -> float:
    if isinstance(value, str):
        from admission.durations import parse_duration  # "10s", "250ms"

        seconds = parse_duration(value, arg)  # raises ConfigError naming arg and value
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"{arg} must be a number of seconds, a duration string{or_none}, got {value!r}"
        )
    else:
        seconds = float(value)
    if (
        math.isnan(seconds)
        or seconds < 0
        or (finite and math.isinf(seconds))
        or (positive and seconds == 0)
    ):
        number = "a finite number" if finite else "a number"
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"{arg} must be {number} of seconds {bound}{or_none}, got {value!r}")
    return seconds


def positive_int(value: int, arg: str) -> int:
    """Returns ``value`` if it is an int >= 1 (not a bool); raises naming ``arg`` otherwise."""
    return _int_at_least(value, arg, 1)


def nonnegative_int(value: int, arg: str) -> int:
    """Returns ``value`` if it is an int >= 0 (not a bool); raises naming ``arg`` otherwise."""
    return _int_at_least(value, arg, 0)


def _int_at_least(value: object, arg: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{arg} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{arg} must be an integer >= {minimum}, got {value!r}")
    return value
