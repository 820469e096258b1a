"""Bad input gets a clear error at once, naming the argument: never a hang, never a silent
wrong answer. ``ValueError`` for a value out of range, ``TypeError`` for a wrong type,
`CapacityError` for a request that can never fit."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest

import admission as adm

NAN = math.nan
INF = math.inf


def clock() -> adm.testing.ManualClock:
    return adm.testing.ManualClock()


def check(call: Callable[[], Any], exc: type[Exception], arg: str) -> None:
    with pytest.raises(exc, match=rf"\b{arg}\b"):
        call()


# --------------------------------------------------------------------------------------------
# Constructors
# --------------------------------------------------------------------------------------------

BUCKET_ARGS = [
    # rate
    ({"rate": 0}, ValueError, "rate"),
    ({"rate": -1}, ValueError, "rate"),
    ({"rate": -0.0}, ValueError, "rate"),
    ({"rate": NAN}, ValueError, "rate"),
    ({"rate": INF}, ValueError, "rate"),
    ({"rate": -INF}, ValueError, "rate"),
    ({"rate": 1e10}, ValueError, "rate"),  # finer than 1 ns per token
    ({"rate": 1e-300}, ValueError, "rate"),  # one token per 70+ years
    ({"rate": b"1"}, TypeError, "rate"),  # strings are rates ("60/min"); bytes are not
    ({"rate": "sixty"}, ValueError, "rate"),
    ({"rate": True}, TypeError, "rate"),
    ({"rate": False}, TypeError, "rate"),
    ({"rate": None}, TypeError, "rate"),
    ({"rate": [1]}, TypeError, "rate"),
    # per
    ({"rate": 1, "per": 0}, ValueError, "per"),
    ({"rate": 1, "per": -1.0}, ValueError, "per"),
    ({"rate": 1, "per": NAN}, ValueError, "per"),
    ({"rate": 1, "per": INF}, ValueError, "per"),
    ({"rate": 1, "per": b"1"}, TypeError, "per"),
    ({"rate": 1, "per": "a while"}, ValueError, "per"),
    ({"rate": 1, "per": True}, TypeError, "per"),
    # burst
    ({"rate": 1, "burst": 0}, ValueError, "burst"),
    ({"rate": 1, "burst": -1}, ValueError, "burst"),
    ({"rate": 1, "burst": 2**70}, ValueError, "burst"),
    ({"rate": 1, "burst": 2**62}, ValueError, "burst"),  # burst * T beyond any clock span
    ({"rate": 1, "burst": 1.5}, TypeError, "burst"),
    ({"rate": 1, "burst": 2.0}, TypeError, "burst"),
    ({"rate": 1, "burst": True}, TypeError, "burst"),
    ({"rate": 1, "burst": "2"}, TypeError, "burst"),
]


@pytest.mark.parametrize(("kwargs", "exc", "arg"), BUCKET_ARGS, ids=repr)
def test_token_bucket_configuration(kwargs: dict[str, Any], exc: type[Exception], arg: str) -> None:
    check(lambda: adm.TokenBucket(**kwargs), exc, arg)


WINDOW_ARGS = [
    ({"limit": 0, "window": 1.0}, ValueError, "limit"),
    ({"limit": -1, "window": 1.0}, ValueError, "limit"),
    ({"limit": 2**32, "window": 1.0}, ValueError, "limit"),
    ({"limit": 2**70, "window": 1.0}, ValueError, "limit"),
    ({"limit": 1.5, "window": 1.0}, TypeError, "limit"),
    ({"limit": 3.0, "window": 1.0}, TypeError, "limit"),
    ({"limit": True, "window": 1.0}, TypeError, "limit"),
    ({"limit": "3", "window": 1.0}, TypeError, "limit"),
    ({"limit": None, "window": 1.0}, TypeError, "limit"),
    ({"limit": 1, "window": 0}, ValueError, "window"),
    ({"limit": 1, "window": -1.0}, ValueError, "window"),
    ({"limit": 1, "window": NAN}, ValueError, "window"),
    ({"limit": 1, "window": INF}, ValueError, "window"),
    ({"limit": 1, "window": 1e-12}, ValueError, "window"),  # under 1 ns
    ({"limit": 1, "window": 1e12}, ValueError, "window"),  # beyond any clock span
    ({"limit": 1, "window": None}, TypeError, "window"),
    ({"limit": 1, "window": b"1"}, TypeError, "window"),
    ({"limit": 1, "window": "a while"}, ValueError, "window"),
    ({"limit": 1, "window": True}, TypeError, "window"),
]


@pytest.mark.parametrize(("kwargs", "exc", "arg"), WINDOW_ARGS, ids=repr)
def test_sliding_window_configuration(
    kwargs: dict[str, Any], exc: type[Exception], arg: str
) -> None:
    check(lambda: adm.SlidingWindow(**kwargs), exc, arg)


SEMAPHORE_LIMITS = [
    (0, ValueError),
    (-1, ValueError),
    (adm.MAX_PERMITS + 1, ValueError),
    (2**70, ValueError),
    (1.5, TypeError),
    (2.0, TypeError),
    (True, TypeError),
    ("3", TypeError),
    (None, TypeError),
]


@pytest.mark.parametrize(("limit", "exc"), SEMAPHORE_LIMITS, ids=repr)
def test_semaphore_limit(limit: Any, exc: type[Exception]) -> None:
    check(lambda: adm.Semaphore(limit), exc, "limit")


@pytest.mark.parametrize(("limit", "exc"), SEMAPHORE_LIMITS, ids=repr)
def test_semaphore_resize_to_a_bad_limit_changes_nothing(limit: Any, exc: type[Exception]) -> None:
    s = adm.Semaphore(2)
    assert s.try_acquire()

    def resize() -> None:
        s.limit = limit

    check(resize, exc, "limit")
    assert (s.limit, s.in_use, s.available) == (2, 1, 1)


def test_semaphore_accepts_the_extreme_limits() -> None:
    assert adm.Semaphore(1).limit == 1
    assert adm.Semaphore(adm.MAX_PERMITS).limit == adm.MAX_PERMITS


# --------------------------------------------------------------------------------------------
# Costs and permit counts, on every method that takes one
# --------------------------------------------------------------------------------------------

BAD_COUNTS = [
    (-1, ValueError),
    (2**64, ValueError),
    (1.0, TypeError),
    (1.5, TypeError),
    (True, TypeError),
    (False, TypeError),
    ("1", TypeError),
]


def limiters() -> list[tuple[str, Any, str]]:
    """(label, object, name of its count argument) for every primitive."""
    return [
        ("bucket", adm.TokenBucket(rate=1, per=1.0, burst=3, clock=clock()), "cost"),
        ("window", adm.SlidingWindow(limit=3, window=1.0, clock=clock()), "cost"),
        ("semaphore", adm.Semaphore(3), "n"),
    ]


METHODS = {
    "bucket": ["try_acquire", "peek", "acquire_blocking"],
    "window": ["try_acquire", "peek", "acquire_blocking"],
    "semaphore": ["try_acquire", "acquire_blocking", "release"],
}
CASES = [(kind, method) for kind, methods in METHODS.items() for method in methods]


def get(kind: str) -> tuple[Any, str]:
    for label, obj, arg in limiters():
        if label == kind:
            return obj, arg
    raise AssertionError(kind)


@pytest.mark.parametrize(("kind", "method"), CASES)
@pytest.mark.parametrize(("value", "exc"), BAD_COUNTS, ids=repr)
def test_bad_counts_are_refused_naming_the_argument(
    kind: str, method: str, value: Any, exc: type[Exception]
) -> None:
    obj, arg = get(kind)
    if method == "release":
        assert obj.try_acquire(3)
    check(lambda: getattr(obj, method)(value), exc, arg)
    check(lambda: getattr(obj, method)(**{arg: value}), exc, arg)
    # Nothing happened: not admitted, not counted, nothing released.
    stats = obj.stats()
    assert stats.admitted == (1 if method == "release" else 0)
    assert stats.attempts == stats.admitted


@pytest.mark.parametrize(("kind", "method"), [c for c in CASES if c[1] != "release"])
def test_a_cost_that_can_never_fit_is_a_capacity_error_at_once(kind: str, method: str) -> None:
    obj, _ = get(kind)
    with pytest.raises(adm.CapacityError) as info:
        getattr(obj, method)(4)  # acquire_blocking without a timeout: must not wait forever
    assert (info.value.cost, info.value.capacity) == (4, 3)
    assert isinstance(info.value, ValueError)
    # Refused by an error at call time: counted as rejected, charged nothing (peek counts none;
    # issue 11, case 9).
    stats = obj.stats()
    expected = 0 if method == "peek" else 1
    assert (stats.attempts, stats.rejected) == (expected, expected)
    assert stats.admitted == 0


# --------------------------------------------------------------------------------------------
# Timeouts
# --------------------------------------------------------------------------------------------

BAD_TIMEOUTS = [
    (-1, ValueError),
    (-0.001, ValueError),
    (NAN, ValueError),
    (-INF, ValueError),
    (b"1", TypeError),  # duration strings ("1s") are timeouts; bytes are not
    ("soon", ValueError),
    ("-1s", ValueError),
    (True, TypeError),
    ([1.0], TypeError),
]


@pytest.mark.parametrize("kind", ["bucket", "window", "semaphore"])
@pytest.mark.parametrize(("timeout", "exc"), BAD_TIMEOUTS, ids=repr)
def test_bad_timeouts_are_refused(kind: str, timeout: Any, exc: type[Exception]) -> None:
    obj, _ = get(kind)
    check(lambda: obj.acquire_blocking(1, timeout=timeout), exc, "timeout")
    assert obj.stats().attempts == 0


# --------------------------------------------------------------------------------------------
# ManualClock
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seconds", [-1, -1e-9, NAN, INF, -INF], ids=repr)
def test_manual_clock_refuses_to_go_backwards_or_to_infinity(seconds: float) -> None:
    c = adm.testing.ManualClock(5.0)
    check(lambda: c.advance(seconds), ValueError, "seconds")
    assert c.now_ns() == 5_000_000_000


@pytest.mark.parametrize("start", [-1.0, NAN, INF], ids=repr)
def test_manual_clock_start_must_be_a_finite_time(start: float) -> None:
    check(lambda: adm.testing.ManualClock(start), ValueError, "start")


@pytest.mark.parametrize("seconds", ["1", None, True], ids=repr)
def test_manual_clock_advance_refuses_non_numbers(seconds: Any) -> None:
    c = adm.testing.ManualClock()
    check(lambda: c.advance(seconds), TypeError, "seconds")
    assert c.now_ns() == 0


def test_manual_clock_advances_by_whole_nanoseconds() -> None:
    c = adm.testing.ManualClock()
    assert c.advance(0) == 0.0
    assert c.advance(1e-9) == 1e-9
    assert c.now_ns() == 1
    c.advance(0.4e-9)  # rounds to the nearest ns: no movement
    assert c.now_ns() == 1
    for ns in (3, 15, 63, 8_333_334, 333_333_334, 10**15 + 7):
        before = c.now_ns()
        c.advance(ns / 1e9)
        assert c.now_ns() - before == ns
    assert c.now() == c.now_ns() / 1e9
