"""One check of durations, timeouts and rates (issue 13, case 7).

Whether a value reaches the library as a call argument (native or Python, async or blocking)
or in configuration, the same mistake gets the same words: ``name must be E, got V`` as a
`ValueError` or `TypeError` for a call argument (never a `ConfigError`), ``key: expected E,
got V`` as a `ConfigError` for configuration.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import admission as adm


def _call(make: Callable[[], Any]) -> None:
    result = make()
    if isinstance(result, Awaitable):

        async def wait() -> None:
            await result

        asyncio.run(wait())


def _manager() -> adm.ConcurrencyManager:
    return adm.ConcurrencyManager.from_dict({"limits": {"x": {}}})


# Every way a timeout is passed to a call: native methods (their first step is Rust) and
# Python ones, async and blocking.
TIMEOUT_TAKERS: dict[str, Callable[[Any], Any]] = {
    "Semaphore.acquire": lambda t: adm.Semaphore(1).acquire(timeout=t),
    "Semaphore.acquire_blocking": lambda t: adm.Semaphore(1).acquire_blocking(timeout=t),
    "TokenBucket.acquire": lambda t: adm.TokenBucket(1).acquire(timeout=t),
    "TokenBucket.acquire_blocking": lambda t: adm.TokenBucket(1).acquire_blocking(timeout=t),
    "SlidingWindow.acquire": lambda t: adm.SlidingWindow(1, 1).acquire(timeout=t),
    "all_of.acquire": lambda t: adm.all_of(adm.TokenBucket(1)).acquire(timeout=t),
    "all_of.acquire_blocking": lambda t: adm.all_of(adm.TokenBucket(1)).acquire_blocking(timeout=t),
    "TaskPool": lambda t: adm.TaskPool(1, timeout=t),
    "ConcurrencyManager.limit": lambda t: _manager().limit("x", timeout=t),
}

TIMEOUT_MISTAKES = [
    # value, exception, what is expected
    (math.nan, ValueError, "a number of seconds >= 0 or None"),
    (-1, ValueError, "a number of seconds >= 0 or None"),
    (-math.inf, ValueError, "a number of seconds >= 0 or None"),
    ("ten", ValueError, 'a duration such as "10s", "250ms", "1.5m", "1h30m" or a number of'),
    ("-1s", ValueError, 'a duration such as "10s", "250ms", "1.5m", "1h30m" or a number of'),
    (True, TypeError, "a number of seconds, a duration string or None"),
    ([], TypeError, "a number of seconds, a duration string or None"),
    (b"1s", TypeError, "a number of seconds, a duration string or None"),
]


@pytest.mark.parametrize("taker", TIMEOUT_TAKERS, ids=str)
@pytest.mark.parametrize(("value", "error", "expected"), TIMEOUT_MISTAKES, ids=repr)
def test_every_timeout_argument_gets_the_same_error(
    taker: str, value: object, error: type[Exception], expected: str
) -> None:
    with pytest.raises(error) as info:
        _call(lambda: TIMEOUT_TAKERS[taker](value))
    assert type(info.value) is error  # a call argument: not a ConfigError
    message = str(info.value)
    assert message.startswith(f"timeout must be {expected}")
    assert message.endswith(f", got {value!r}")


@pytest.mark.parametrize("taker", TIMEOUT_TAKERS, ids=str)
@pytest.mark.parametrize("value", ["2m", 120, 120.0, math.inf, 10**400, None])
def test_every_timeout_argument_takes_the_same_values(taker: str, value: object) -> None:
    _call(lambda: TIMEOUT_TAKERS[taker](value))  # free: admitted (or built) at once


DURATION_TAKERS: dict[str, Callable[[Any], Any]] = {
    "TokenBucket per": lambda v: adm.TokenBucket(1, per=v),
    "SlidingWindow window": lambda v: adm.SlidingWindow(1, window=v),
    "watch interval": lambda v: _manager().watch("/nonexistent.toml", interval=v),
    "PoolConfig connect_timeout": lambda v: adm.PoolConfig("postgresql://db/x", connect_timeout=v),
}
NAMES = {
    "TokenBucket per": "per",
    "SlidingWindow window": "window",
    "watch interval": "interval",
    "PoolConfig connect_timeout": "connect_timeout",
}

DURATION_MISTAKES = [
    (0, ValueError, "a finite number of seconds > 0"),
    ("0s", ValueError, "a finite number of seconds > 0"),
    (math.nan, ValueError, "a finite number of seconds > 0"),
    (math.inf, ValueError, "a finite number of seconds > 0"),
    (
        "a while",
        ValueError,
        'a duration such as "10s", "250ms", "1.5m", "1h30m" or a number of seconds',
    ),
    (True, TypeError, "a number of seconds, a duration string"),
    ([1], TypeError, "a number of seconds, a duration string"),
]


@pytest.mark.parametrize("taker", DURATION_TAKERS, ids=str)
@pytest.mark.parametrize(("value", "error", "expected"), DURATION_MISTAKES, ids=repr)
def test_every_positive_duration_argument_gets_the_same_error(
    taker: str, value: object, error: type[Exception], expected: str
) -> None:
    with pytest.raises(error) as info:
        DURATION_TAKERS[taker](value)
    assert type(info.value) is error
    assert str(info.value) == f"{NAMES[taker]} must be {expected}, got {value!r}"


@pytest.mark.parametrize(
    ("value", "error", "expected"),
    [
        (0, ValueError, "a rate > 0 over a period > 0"),
        ("0/min", ValueError, "a rate > 0 over a period > 0"),
        (math.nan, ValueError, "a rate > 0 over a period > 0"),
        (10**400, ValueError, "a rate > 0 over a period > 0"),
        ("sixty", ValueError, 'a rate such as "60/min", "10/s", "1000/h", "5/10s" or a number'),
        (True, TypeError, 'a rate such as "60/min", "10/s", "1000/h", "5/10s" or a number'),
    ],
    ids=repr,
)
def test_a_rate_argument_is_checked_as_configuration_is(
    value: object, error: type[Exception], expected: str
) -> None:
    with pytest.raises(error) as info:
        adm.TokenBucket(value)  # type: ignore[arg-type]
    assert type(info.value) is error
    assert str(info.value).startswith(f"rate must be {expected}")
    # Configuration: the same words, as a ConfigError naming the key.
    with pytest.raises(adm.ConfigError) as config:
        adm.Config.from_dict({"limits": {"x": {"rate": value}}})
    assert re.match(rf"<dict>: limits\.x\.rate: expected {re.escape(expected)}", str(config.value))


@pytest.mark.parametrize(
    ("value", "error", "expected"),
    [
        ("ten", ValueError, 'a duration such as "10s", "250ms", "1.5m", "1h30m" or a number of s'),
        (-1, ValueError, "a finite number of seconds >= 0"),
        (True, TypeError, "a number of seconds, a duration string"),
    ],
    ids=repr,
)
def test_configuration_says_the_same_with_the_key(
    value: object, error: type[Exception], expected: str
) -> None:
    with pytest.raises(adm.ConfigError) as config:
        adm.Config.from_dict({"limits": {"x": {"timeout": value}}})
    assert str(config.value).startswith(f"<dict>: limits.x.timeout: expected {expected}")
    assert str(config.value).endswith(f", got {value!r}")
    with pytest.raises(error) as call:
        adm.PoolConfig("postgresql://db/x", close_timeout=value)  # type: ignore[arg-type]
    assert type(call.value) is error
    assert str(call.value).startswith(f"close_timeout must be {expected}")
    assert str(call.value).endswith(f", got {value!r}")


def test_the_breakers_duration_strings_are_call_arguments_too() -> None:
    with pytest.raises(ValueError, match=r"^open_for") as info:
        adm.CircuitBreaker("x", open_for="ten")
    assert type(info.value) is ValueError
    assert str(info.value) == (
        'open_for must be a duration such as "10s", "250ms", "1.5m", "1h30m" or a number of '
        "seconds, got 'ten'"
    )
