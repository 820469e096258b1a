"""Sync ``try_acquire`` on one bucket: admission against its peers, in the same run.

Two paths, each its own pytest-benchmark group:

- **admitted**: a limit so large it never refuses during the run (10**9 per second, bursts of
  10**9; admission's token bucket: ``rate=1e9, burst=10**9``, the finest rate its nanosecond
  GCRA accepts);
- **rejected**: an exhausted limit (one unit per 1,000 s, capacity 1, taken once before timing).

Peers are configured equivalently, each in its fastest in-memory mode, and called through
their fastest public call (looked up in their installed source):

- limits: ``FixedWindowRateLimiter`` / ``MovingWindowRateLimiter`` /
  ``SlidingWindowCounterRateLimiter`` over ``MemoryStorage``, ``hit(item, key)``. The moving
  window keeps one list entry per admitted hit and *prepends* to that list, so its cost grows
  with the number of hits inside the window; on the admitted path its storage is emptied
  before every round (outside the timing), i.e. it is measured with at most one round's hits
  (tens) in the window, its best case;
- pyrate-limiter (v4; >= 4.5 for ``StateBucket``): ``Limiter(Rate(n, Duration.SECOND))``
  (the default in-memory sliding-log bucket) and ``Limiter(StateBucket([rate]))`` (its
  GCRA), called as ``try_acquire(name, 1, False)`` (non-blocking: returns a bool, never
  raises or sleeps);
- throttled-py: ``Throttled(using=token_bucket | gcra, store=MemoryStore(), timeout=-1)``,
  called as ``throttle.limiter.limit(key)``, which skips ``Throttled.limit``'s argument
  checks (about 0.6 µs cheaper);
- token-bucket: ``Limiter(rate, capacity, MemoryStorage()).consume(key)``.

The floor is ``time.monotonic_ns()``: a rate decision needs at least one clock read and one
Python call, which is what it costs.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import limits
import pyrate_limiter
import pytest
import throttled
import token_bucket
from limits.storage import MemoryStorage
from limits.strategies import (
    FixedWindowRateLimiter,
    MovingWindowRateLimiter,
    SlidingWindowCounterRateLimiter,
)

import admission as adm
from admission import _native

BIG = 10**9  # admitted path: limit per second and burst; never reached in a run
KEY = "bench"

ADMITTED = "try_acquire admitted"
REJECTED = "try_acquire rejected"


@dataclass
class Case:
    """One implementation on one path."""

    stmt: str
    env: dict[str, Any]
    #: One more call after the run: True if it was admitted (None: not a limiter).
    decide: Callable[[], bool] | None = None
    setup: Callable[[], None] | None = None
    #: Exact checks from the limiter's own counters, given the number of timed calls.
    verify: Callable[[int], None] | None = None
    close: Callable[[], None] = field(default=lambda: None)


@dataclass
class Impl:
    key: str
    impl: str
    role: str
    build: Callable[[bool], Case]
    baseline: bool = False


# ---------------------------------------------------------------------------------------------
# admission


def _token_bucket(admitted: bool) -> Case:
    if admitted:
        bucket = adm.TokenBucket(rate=1e9, burst=BIG)  # 1 ns per token: the finest rate
    else:
        bucket = adm.TokenBucket(rate=1e-3, burst=1)
    if not admitted:
        assert bucket.try_acquire()
    return _admission_case(bucket, admitted)


def _sliding_window(admitted: bool) -> Case:
    window = (
        adm.SlidingWindow(limit=BIG, window=1.0)
        if admitted
        else adm.SlidingWindow(limit=1, window=1000.0)
    )
    if not admitted:
        assert window.try_acquire()
    return _admission_case(window, admitted)


def _admission_case(limiter: adm.TokenBucket | adm.SlidingWindow, admitted: bool) -> Case:
    before = limiter.stats()

    def verify(calls: int) -> None:
        stats = limiter.stats()
        if admitted:
            assert (stats.admitted - before.admitted, stats.rejected) == (calls, 0)
        else:
            assert (stats.admitted, stats.rejected - before.rejected) == (1, calls)

    return Case(
        stmt="acquire()",
        env={"acquire": limiter.try_acquire},
        decide=limiter.try_acquire,
        verify=verify,
    )


# ---------------------------------------------------------------------------------------------
# floor and reference


def _monotonic_ns(admitted: bool) -> Case:
    return Case(stmt="clock()", env={"clock": time.monotonic_ns})


def _native_clock(admitted: bool) -> Case:
    return Case(stmt="clock()", env={"clock": _native.monotonic_ns})


# ---------------------------------------------------------------------------------------------
# limits


def _limits(strategy: type[Any]) -> Callable[[bool], Case]:
    def build(admitted: bool) -> Case:
        storage = MemoryStorage()
        limiter = strategy(storage)
        if admitted:
            item = limits.RateLimitItemPerSecond(BIG)
        else:
            item = limits.RateLimitItemPerSecond(1, 1000)  # 1 per 1,000 s
            assert limiter.hit(item, KEY)
        reset = storage.reset if admitted and strategy is MovingWindowRateLimiter else None

        def setup() -> None:
            assert reset is not None
            reset()

        return Case(
            stmt="hit(item, key)",
            env={"hit": limiter.hit, "item": item, "key": KEY},
            decide=lambda: limiter.hit(item, KEY),
            setup=setup if reset is not None else None,
            close=lambda: storage.timer.cancel(),
        )

    return build


# ---------------------------------------------------------------------------------------------
# pyrate-limiter


def _pyrate(state: bool) -> Callable[[bool], Case]:
    Duration, Rate = pyrate_limiter.Duration, pyrate_limiter.Rate

    def build(admitted: bool) -> Case:
        rate = Rate(BIG, Duration.SECOND) if admitted else Rate(1, Duration.SECOND * 1000)
        limiter = pyrate_limiter.Limiter(pyrate_limiter.StateBucket([rate]) if state else rate)
        acquire = limiter.try_acquire
        if not admitted:
            assert acquire(KEY, 1, False) is True

        def decide() -> bool:
            result = acquire(KEY, 1, False)
            assert isinstance(result, bool), result
            return result

        return Case(
            stmt="acquire(key, 1, False)",
            env={"acquire": acquire, "key": KEY},
            decide=decide,
            close=limiter.close,
        )

    return build


# ---------------------------------------------------------------------------------------------
# throttled-py


def _throttled(using: str) -> Callable[[bool], Case]:
    def build(admitted: bool) -> Case:
        quota = (
            throttled.per_sec(BIG, burst=BIG)
            if admitted
            else throttled.per_duration(datetime.timedelta(seconds=1000), 1, burst=1)
        )
        throttle = throttled.Throttled(
            key=KEY, using=using, quota=quota, store=throttled.MemoryStore(), timeout=-1
        )
        limit = throttle.limiter.limit
        if not admitted:
            assert not limit(KEY).limited
        return Case(
            stmt="limit(key)",
            env={"limit": limit, "key": KEY},
            decide=lambda: not limit(KEY).limited,
        )

    return build


# ---------------------------------------------------------------------------------------------
# token-bucket


def _token_bucket_pkg(admitted: bool) -> Case:
    rate, capacity = (1e9, BIG) if admitted else (1e-3, 1)
    limiter = token_bucket.Limiter(rate, capacity, token_bucket.MemoryStorage())
    if not admitted:
        assert limiter.consume(KEY)
    return Case(
        stmt="consume(key)",
        env={"consume": limiter.consume, "key": KEY},
        decide=lambda: limiter.consume(KEY),
    )


IMPLS = [
    Impl("admission.TokenBucket", "admission TokenBucket (GCRA)", "admission", _token_bucket, True),
    Impl("admission.SlidingWindow", "admission SlidingWindow", "admission", _sliding_window),
    Impl("time.monotonic_ns", "time.monotonic_ns() (floor)", "floor", _monotonic_ns),
    Impl("limits.fixed", "limits FixedWindowRateLimiter", "peer", _limits(FixedWindowRateLimiter)),
    Impl(
        "limits.moving",
        "limits MovingWindowRateLimiter",
        "peer",
        _limits(MovingWindowRateLimiter),
    ),
    Impl(
        "limits.sliding",
        "limits SlidingWindowCounterRateLimiter",
        "peer",
        _limits(SlidingWindowCounterRateLimiter),
    ),
    Impl("pyrate.inmemory", "pyrate-limiter InMemoryBucket (log)", "peer", _pyrate(state=False)),
    Impl("pyrate.gcra", "pyrate-limiter StateBucket (GCRA)", "peer", _pyrate(state=True)),
    Impl("throttled.token_bucket", "throttled-py token bucket", "peer", _throttled("token_bucket")),
    Impl("throttled.gcra", "throttled-py GCRA", "peer", _throttled("gcra")),
    Impl("token_bucket", "token-bucket Limiter", "peer", _token_bucket_pkg),
]
REFERENCE = Impl(
    "admission.clock",
    "admission clock read alone (_native.monotonic_ns)",
    "reference",
    _native_clock,
)


def _run(measure: Any, spec: Impl, admitted: bool) -> None:
    case = spec.build(admitted)
    try:
        measured = measure(
            key=spec.key,
            impl=spec.impl,
            role=spec.role,
            baseline=spec.baseline,
            stmt=case.stmt,
            env=case.env,
            setup=case.setup,
        )
        # The path measured is the path claimed: counters where the limiter has exact ones,
        # and one more decision after the run for everyone.
        if case.verify is not None:
            case.verify(measured.total_calls)
        if case.decide is not None:
            assert case.decide() is admitted, f"{spec.key}: expected admitted={admitted}"
    finally:
        case.close()


@pytest.mark.benchmark(group=ADMITTED)
@pytest.mark.parametrize("spec", [*IMPLS, REFERENCE], ids=lambda s: s.key)
def test_admitted(measure: Any, spec: Impl) -> None:
    _run(measure, spec, admitted=True)


@pytest.mark.benchmark(group=REJECTED)
@pytest.mark.parametrize("spec", IMPLS, ids=lambda s: s.key)
def test_rejected(measure: Any, spec: Impl) -> None:
    _run(measure, spec, admitted=False)
