"""Argument checks of calls (never configuration: that raises `ConfigError`), shared by the
Python-level API; durations and timeouts by the one check of `admission.durations`."""

from __future__ import annotations

import threading

from admission.durations import seconds

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
    """``timeout`` as seconds, or ``None`` (no limit): a number >= 0 (infinity included) or a
    duration string (``"10s"``, ``"250ms"``, ``"1m"``). The native methods hand this every
    ``timeout`` that is not a plain number, so that each mistake has one message.

    >>> timeout_seconds("1m"), timeout_seconds(None), timeout_seconds(float("inf"))
    (60.0, None, inf)
    >>> timeout_seconds(float("nan"))
    Traceback (most recent call last):
    ValueError: timeout must be a number of seconds >= 0 or None, got nan
    """
    return seconds(timeout, arg, none=True, infinite=True)


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
    return seconds(value, arg, positive=positive)


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
