"""Durations ("10s", "250ms", "1m30s") and rates ("60/min", "5/10s") as configuration values.

Everywhere the manager and the configuration take seconds or a rate, these strings work too.

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
A bad value raises `admission.ConfigError` (a `ValueError`) naming the key and the value.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal

from admission.errors import ConfigError

__all__ = ["Rate", "parse_duration", "parse_rate"]

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


def _number(value: float, key: str, expected: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"expected {expected}, got {value!r}", key=key)
    try:
        result = float(value)
    except OverflowError:  # an int beyond the largest float
        result = math.inf
    if not math.isfinite(result) or result < 0:
        raise ConfigError(f"expected {expected} (finite, >= 0), got {value!r}", key=key)
    return result


def parse_duration(value: str | float, key: str = "duration") -> float:
    """Seconds from a number or a duration string; ``key`` names the setting in errors.

    >>> parse_duration("1.5s"), parse_duration("1h"), parse_duration("100 us")
    (1.5, 3600.0, 0.0001)
    >>> parse_duration("-3s", key="timeout")
    Traceback (most recent call last):
    admission.errors.ConfigError: timeout: expected a duration such as "10s", ... got '-3s'
    """
    if not isinstance(value, str):
        return _number(value, key, _DURATION_EXPECTED)
    text = value.strip().lower()
    result: float | None = None
    if _BARE_NUMBER.fullmatch(text):
        result = float(text)
    elif _DURATION.fullmatch(text):
        parts = _PART.findall(text)
        units = [_UNITS.get(unit, Decimal(0)) for _, unit in parts]
        # Each unit once, largest first ("1h30m"): "30m1h" and "1s1s1s" are typos.
        if all(units) and all(a > b for a, b in itertools.pairwise(units)):
            result = float(sum(Decimal(n) * _UNITS[u] for n, u in parts))
    if result is not None and math.isfinite(result):
        return result
    raise ConfigError(f"expected {_DURATION_EXPECTED}, got {value!r}", key=key)


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
    """A `Rate` from a string (``"60/min"``), a number per second, or ``(count, period)``.

    >>> parse_rate("50/m"), parse_rate(10), parse_rate((100, "1m"))
    (Rate(count=50, per=60.0), Rate(count=10, per=1.0), Rate(count=100, per=60.0))
    >>> parse_rate("60 per minute")
    Rate(count=60, per=60.0)
    >>> parse_rate("0/min", key="limits.openai.rate")
    Traceback (most recent call last):
    admission.errors.ConfigError: limits.openai.rate: expected a rate > 0 ... got '0/min'
    """
    if isinstance(value, Rate):
        count, per = value
    elif isinstance(value, str):
        text = value.strip().lower()
        match = _RATE.fullmatch(text)
        if _BARE_NUMBER.fullmatch(text):
            count, per = _count(text.strip()), 1.0
        elif match is None:
            raise ConfigError(f"expected {_RATE_EXPECTED}, got {value!r}", key=key)
        else:
            period = match.group(2)
            # "60/min" means one minute; "5/10s" spells the period out.
            if not period[0].isdigit() and period[0] != ".":
                period = "1" + period
            try:
                per = parse_duration(period, key)
            except ConfigError:
                raise ConfigError(f"expected {_RATE_EXPECTED}, got {value!r}", key=key) from None
            count = _count(match.group(1))
    elif isinstance(value, Sequence) and len(value) == 2:
        raw_count, raw_per = value
        count = _number(raw_count, key, _RATE_EXPECTED)  # type: ignore[arg-type]
        if isinstance(raw_count, int) and not isinstance(raw_count, bool):
            count = raw_count
        per = parse_duration(raw_per, key)
    else:
        count, per = _number(value, key, _RATE_EXPECTED), 1.0  # type: ignore[arg-type]
        if isinstance(value, int):
            count = value
    if not (count > 0 and math.isfinite(count)) or not (per > 0 and math.isfinite(per)):
        raise ConfigError(
            f"expected a rate > 0 over a period > 0 (use 'none' for no rate limit), got {value!r}",
            key=key,
        )
    return Rate(count, float(per))
