"""Durations ("10s", "250ms", "1m30s") and rates ("60/min", "5/10s"): their grammar, and the
one check of every duration, timeout and rate, whether it comes from configuration or is
passed to a call.

Everywhere the library takes seconds or a rate, these strings work too.

>>> from admission.durations import parse_duration, parse_rate
>>> parse_duration("250ms"), parse_duration("1m30s"), parse_duration(2)
(0.25, 90.0, 2.0)
>>> parse_rate("60/min")
Rate(count=60, per=60.0)
>>> str(parse_rate("5/10s")), parse_rate("1000/h").per_second
('5/10s', 0.2777777777777778)

Units: ``ns``, ``us`` (``µs``), ``ms``, ``s`` (``sec``, ``second``), ``m`` (``min``,
``minute``), ``h`` (``hr``, ``hour``), ``d`` (``day``), plurals too, case-insensitive.
``m`` is always minutes. A bare number is seconds; a bare rate number is per second.

One message per mistake, in two forms: configuration (`parse_duration`, `parse_rate`, the
files and dicts of `admission.config`) raises `admission.ConfigError` (a `ValueError`)
``key: expected ..., got ...``; a call argument (`seconds` and `rate`, used by every
``timeout=``, ``per=``, ``interval=`` ...; native methods hand it what is not a plain
number) raises `ValueError` or `TypeError` ``name must be ..., got ...``, with the same
"...".
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import NoReturn, overload

from admission.errors import ConfigError

__all__ = ["Rate", "parse_duration", "parse_rate", "rate", "seconds"]

# Decimal, so that "100us" is exactly 0.0001 s and not 9.999999999999999e-05.
_UNITS: dict[str, Decimal] = {
    "ns": Decimal("1e-9"),
    "us": Decimal("1e-6"),
    "µs": Decimal("1e-6"),  # micro sign
    "μs": Decimal("1e-6"),  # Greek mu
    "ms": Decimal("1e-3"),
    "s": Decimal("1.0"),
    "sec": Decimal("1.0"),
    "secs": Decimal("1.0"),
    "second": Decimal("1.0"),
    "seconds": Decimal("1.0"),
    "m": Decimal("60.0"),
    "min": Decimal("60.0"),
    "mins": Decimal("60.0"),
    "minute": Decimal("60.0"),
    "minutes": Decimal("60.0"),
    "h": Decimal("3600.0"),
    "hr": Decimal("3600.0"),
    "hrs": Decimal("3600.0"),
    "hour": Decimal("3600.0"),
    "hours": Decimal("3600.0"),
    "d": Decimal("86400.0"),
    "day": Decimal("86400.0"),
    "days": Decimal("86400.0"),
}
# ASCII digits only: other scripts' digits (Arabic-Indic 10 s, say) are refused.
_NUMBER = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
_PART = re.compile(rf"({_NUMBER})\s*([a-zµμ]+)")
_DURATION = re.compile(rf"(?:\s*{_NUMBER}\s*[a-zµμ]+)+")
_BARE_NUMBER = re.compile(rf"\s*{_NUMBER}\s*")
_RATE = re.compile(rf"\s*({_NUMBER})\s*(?:/|\bper\b)\s*(.+?)\s*")
_DURATION_EXPECTED = 'a duration such as "10s", "250ms", "1.5m", "1h30m" or a number of seconds'
_RATE_EXPECTED = 'a rate such as "60/min", "10/s", "1000/h", "5/10s" or a number per second'
# Rate periods are shown in the largest unit that divides them evenly.
_PERIOD_NAMES = ((86400.0, "d"), (3600.0, "h"), (60.0, "min"), (1.0, "s"))


def _refuse(
    value: object, name: str, expected: str, config: bool, kind: type[Exception] = ValueError
) -> NoReturn:
    """The one message of a mistake: configuration's form, or a call argument's."""
    if config:
        raise ConfigError(f"expected {expected}, got {value!r}", key=name)
    raise kind(f"{name} must be {expected}, got {value!r}")


def _duration_text(text: str) -> float | None:
    """Seconds from a duration string, or None if it is not one (or not finite)."""
    text = text.strip().lower()
    result: float | None = None
    if _BARE_NUMBER.fullmatch(text):
        result = float(text)
    elif _DURATION.fullmatch(text):
        parts = _PART.findall(text)
        units = [_UNITS.get(unit, Decimal(0)) for _, unit in parts]
        # Each unit once, largest first ("1h30m"): "30m1h" and "1s1s1s" are typos.
        if all(units) and all(a > b for a, b in itertools.pairwise(units)):
            result = float(sum(Decimal(n) * _UNITS[u] for n, u in parts))
    return result if result is not None and math.isfinite(result) else None


def _float(value: object) -> float | None:
    """A number as a float (an int beyond the largest float is infinite); None if ``value``
    is not an int or a float (a bool is not a number here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return float(value)
    except OverflowError:
        return math.inf


@overload
def seconds(
    value: str | float,
    name: str,
    *,
    none: bool = ...,
    infinite: bool = ...,
    positive: bool = ...,
    config: bool = ...,
) -> float: ...
@overload
def seconds(
    value: str | float | None,
    name: str,
    *,
    none: bool = ...,
    infinite: bool = ...,
    positive: bool = ...,
    config: bool = ...,
) -> float | None: ...
def seconds(
    value: str | float | None,
    name: str,
    *,
    none: bool = False,
    infinite: bool = False,
    positive: bool = False,
    config: bool = False,
) -> float | None:
    """``value`` (a number of seconds or a duration string) as seconds: the one check of a
    duration or a timeout. ``None`` passes with ``none``, infinity with ``infinite``; the
    result is >= 0, or > 0 with ``positive``. Raises naming ``name``: `ConfigError` with
    ``config``, else `TypeError` (not a number or a string) or `ValueError`.

    >>> seconds("250ms", "timeout"), seconds(None, "timeout", none=True)
    (0.25, None)
    >>> seconds("soon", "timeout")
    Traceback (most recent call last):
    ValueError: timeout must be a duration such as "10s", ... or a number of seconds, got 'soon'
    >>> seconds(0, "interval", positive=True)
    Traceback (most recent call last):
    ValueError: interval must be a finite number of seconds > 0, got 0
    """
    if value is None and none:
        return None
    or_none = " or None" if none else ""
    if isinstance(value, str):
        result = _duration_text(value)
        if result is None:
            _refuse(value, name, f"{_DURATION_EXPECTED}{or_none}", config)
    else:
        result = _float(value)
        if result is None:
            what = f"a number of seconds, a duration string{or_none}"
            _refuse(value, name, what, config, TypeError)
    # (NaN fails both comparisons)
    if (result > 0 or (result == 0 and not positive)) and (infinite or math.isfinite(result)):
        return result
    number = "a number" if infinite else "a finite number"
    _refuse(value, name, f"{number} of seconds {'> 0' if positive else '>= 0'}{or_none}", config)


def parse_duration(value: str | float, key: str = "duration") -> float:
    """Seconds from a number or a duration string, as configuration takes them (finite,
    >= 0); ``key`` names the setting in errors (`ConfigError`).

    >>> parse_duration("1.5s"), parse_duration("1h"), parse_duration("100 us")
    (1.5, 3600.0, 0.0001)
    >>> parse_duration("-3s", key="timeout")
    Traceback (most recent call last):
    admission.errors.ConfigError: timeout: expected a duration such as "10s", ... got '-3s'
    """
    return seconds(value, key, config=True)


@dataclass(frozen=True, slots=True)
class Rate:
    """``count`` per ``per`` seconds, as parsed by `parse_rate`. Unpacks as ``(count, per)``.

    >>> r = Rate(60, 60.0)
    >>> r.per_second, str(r)
    (1.0, '60/min')
    >>> count, per = r
    """

    count: float
    """How many (requests, tokens) per period."""
    per: float
    """The period, in seconds."""

    def __iter__(self) -> Iterator[float]:
        return iter((self.count, self.per))

    @property
    def per_second(self) -> float:
        """The rate in units per second."""
        return self.count / self.per

    def __str__(self) -> str:
        count = int(self.count) if float(self.count).is_integer() else self.count
        for seconds, unit in _PERIOD_NAMES:
            if self.per == seconds:
                return f"{count}/{unit}"
        for seconds, unit in _PERIOD_NAMES:
            if (self.per / seconds).is_integer():
                return f"{count}/{int(self.per / seconds)}{unit}"
        return f"{count}/{self.per}s"


def _count(text: str) -> float:
    # Whole numbers stay ints (exact), unless too long for one (then float: inf, refused).
    return int(text) if text.isdigit() and len(text) <= 300 else float(text)


def parse_rate(value: str | float | Rate | Sequence[str | float], key: str = "rate") -> Rate:
    """A `Rate` from a string (``"60/min"``), a number per second, or ``(count, period)``, as
    configuration takes it; ``key`` names the setting in errors (`ConfigError`).

    >>> parse_rate("50/m"), parse_rate(10), parse_rate((100, "1m"))
    (Rate(count=50, per=60.0), Rate(count=10, per=1.0), Rate(count=100, per=60.0))
    >>> parse_rate("60 per minute")
    Rate(count=60, per=60.0)
    >>> parse_rate("0/min", key="limits.openai.rate")
    Traceback (most recent call last):
    admission.errors.ConfigError: limits.openai.rate: expected a rate > 0 ... got '0/min'
    """
    return rate(value, key, config=True)


def rate(
    value: str | float | Rate | Sequence[str | float], name: str, *, config: bool = False
) -> Rate:
    """The one check of a rate (see `parse_rate`); raises naming ``name``: `ConfigError` with
    ``config``, else `TypeError` or `ValueError`.

    >>> rate("sixty", "rate")
    Traceback (most recent call last):
    ValueError: rate must be a rate such as "60/min", ... or a number per second, got 'sixty'
    """
    count: float
    if isinstance(value, Rate):
        count, per = value
    elif isinstance(value, str):
        text = value.strip().lower()
        match = _RATE.fullmatch(text)
        if _BARE_NUMBER.fullmatch(text):
            count, per = _count(text.strip()), 1.0
        elif match is None:
            _refuse(value, name, _RATE_EXPECTED, config)
        else:
            period = match.group(2)
            # "60/min" means one minute; "5/10s" spells the period out.
            if not period[0].isdigit() and period[0] != ".":
                period = "1" + period
            parsed = _duration_text(period)
            if parsed is None:
                _refuse(value, name, _RATE_EXPECTED, config)
            count, per = _count(match.group(1)), parsed
    elif isinstance(value, Sequence) and len(value) == 2:
        raw_count, raw_per = value
        number = _float(raw_count)
        if number is None:
            _refuse(value, name, _RATE_EXPECTED, config, TypeError)
        count = raw_count if isinstance(raw_count, int) else number  # ints stay exact
        per = seconds(raw_per, name, config=config)
    else:
        number = _float(value)
        if number is None:
            _refuse(value, name, _RATE_EXPECTED, config, TypeError)
        count, per = (value if isinstance(value, int) else number), 1.0
    size = _float(count)  # (an int beyond any float is infinite)
    if not (size is not None and 0 < size < math.inf) or not (0 < per < math.inf):
        hint = " (use 'none' for no rate limit)" if config else ""
        _refuse(value, name, f"a rate > 0 over a period > 0{hint}", config)
    return Rate(count, float(per))
