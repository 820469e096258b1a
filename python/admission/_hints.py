"""What a server said about when to try again: ``retry_after`` attributes and HTTP headers.

`retry_after` reads the hint of a failed attempt's exception or result, without importing
any HTTP library (duck typing: httpx, requests and most SDKs fit):

- a ``retry_after`` attribute in seconds (a number, a `datetime.timedelta`, or a header
  value), as on `admission.CircuitOpen` and the SDKs' rate-limit errors;
- otherwise the ``retry-after-ms`` (milliseconds, as OpenAI sends) or ``Retry-After``
  (seconds, or an HTTP date) header of ``.response.headers`` (``httpx.HTTPStatusError``,
  ``requests.HTTPError``) or ``.headers`` (a response itself, a result).

A hint that cannot be read (garbage, negative, NaN) is no hint: the backoff applies. A date
in the past is a hint of 0 s.

>>> class Limited(Exception):
...     retry_after = 2.5
>>> retry_after(Limited()), retry_after(ValueError())
(2.5, None)
>>> class Response:
...     headers = {"retry-after-ms": "1500", "retry-after": "2"}
>>> retry_after(Response())
1.5
"""

from __future__ import annotations

import datetime
import email.utils
import math
import time
from collections.abc import Callable
from typing import Any

__all__ = ["parse_header", "retry_after"]


def retry_after(outcome: object, wall: Callable[[], float] = time.time) -> float | None:
    """Seconds the server asked to wait before the next attempt, or None.

    ``wall`` is the wall clock HTTP dates are compared with.
    """
    try:
        hint = getattr(outcome, "retry_after", None)
        if hint is not None and not callable(hint):
            return _seconds(hint, wall)
        response = getattr(outcome, "response", None)
        headers = getattr(response, "headers", None)
        if headers is None:
            headers = getattr(outcome, "headers", None)
        if headers is None:
            return None
        millis = _header(headers, "retry-after-ms")
        if millis is not None:
            seconds = _number(millis)
            if seconds is not None:
                return seconds / 1000.0
        value = _header(headers, "retry-after")
        return None if value is None else parse_header(value, wall)
    except Exception:
        # A property that raises (httpx's ``.request`` on an error built without one), a
        # headers object of an unexpected shape: no hint, never a new error.
        return None


def parse_header(value: str | bytes, wall: Callable[[], float] = time.time) -> float | None:
    """A ``Retry-After`` value: delta-seconds, or an HTTP date (seconds from ``wall()``).

    >>> parse_header("120"), parse_header("0.5"), parse_header("soon")
    (120.0, 0.5, None)
    >>> parse_header("Wed, 21 Oct 2015 07:28:00 GMT", wall=lambda: 1445412470.0)
    10.0
    """
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    text = value.strip()
    seconds = _number(text)
    if seconds is not None:
        return seconds
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000": UTC, by RFC 5322
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, when.timestamp() - wall())


def _seconds(hint: object, wall: Callable[[], float]) -> float | None:
    if isinstance(hint, datetime.timedelta):
        hint = hint.total_seconds()
    if isinstance(hint, (str, bytes)):
        return parse_header(hint, wall)
    if isinstance(hint, bool) or not isinstance(hint, (int, float)):
        return None
    return _finite(float(hint))


def _number(text: Any) -> float | None:
    if isinstance(text, bytes):
        text = text.decode("latin-1")
    try:
        seconds = float(text)
    except (TypeError, ValueError):
        return None
    return _finite(seconds)


def _finite(seconds: float) -> float | None:
    if math.isnan(seconds) or seconds < 0 or math.isinf(seconds):
        return None
    return seconds


def _header(headers: Any, name: str) -> Any:
    """``headers[name]``, case-insensitively: httpx and requests headers are; a dict is not."""
    value = headers.get(name)
    if value is None:
        value = headers.get(name.title())
    return value
