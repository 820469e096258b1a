"""The rate limiters' other immediate paths, against their own ``try_acquire`` (issue 11).

- **with bucket (thread)**: ``with bucket: pass`` in a thread, on a bucket that never refuses
  during the run; the reference is ``bucket.try_acquire()`` on the same bucket (target:
  ``with`` at most 3x ``try_acquire``), the floor ``time.monotonic_ns()``.
- **all_of(rpm, tpm).acquire uncontended**: ``await all_of(rpm, tpm).acquire(costs=(1, 850))``
  against ``await bucket.acquire()`` (target: at most 2.5x), both driven without an event loop
  (uncontended, neither suspends), and ``all_of(...).try_acquire(costs=...)``.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

import admission as adm

WITH = "rate limiter `with` in a thread"
ALL_OF = "all_of(rpm, tpm) uncontended"
BIG = 10**9


def _bucket() -> adm.TokenBucket:
    # 1 ns per token and a burst that 850 tokens a call cannot drain in a run: never refuses.
    return adm.TokenBucket(rate=1e9, burst=10**15)


@pytest.mark.benchmark(group=WITH)
def test_with_bucket(measure: Any) -> None:
    bucket = _bucket()
    measured = measure(
        key="admission.TokenBucket.with",
        impl="admission `with bucket: pass`",
        role="admission",
        baseline=True,
        stmt="with bucket: pass",
        env={"bucket": bucket},
    )
    assert bucket.stats().admitted == measured.total_calls


@pytest.mark.benchmark(group=WITH)
def test_with_window(measure: Any) -> None:
    window = adm.SlidingWindow(limit=BIG, window=1.0)
    measure(
        key="admission.SlidingWindow.with",
        impl="admission `with window: pass`",
        role="admission",
        stmt="with window: pass",
        env={"window": window},
    )


@pytest.mark.benchmark(group=WITH)
def test_try_acquire_reference(measure: Any) -> None:
    bucket = _bucket()
    measure(
        key="admission.TokenBucket.try_acquire",
        impl="admission bucket.try_acquire()",
        role="reference",
        stmt="try_acquire()",
        env={"try_acquire": bucket.try_acquire},
    )


@pytest.mark.benchmark(group=WITH)
def test_with_floor(measure: Any) -> None:
    measure(
        key="monotonic_ns",
        impl="time.monotonic_ns()",
        role="floor",
        stmt="now()",
        env={"now": time.monotonic_ns},
    )


@pytest.mark.benchmark(group=ALL_OF)
def test_all_of_acquire(measure: Any) -> None:
    rpm, tpm = _bucket(), _bucket()
    both = adm.all_of(rpm, tpm)
    measured = measure(
        key="admission.all_of.acquire",
        impl="await all_of(rpm, tpm).acquire(costs=(1, 850))",
        role="admission",
        baseline=True,
        stmt="await acquire(costs=(1, 850))",
        env={"acquire": both.acquire},
        is_async=True,
    )
    assert rpm.stats().admitted == measured.total_calls


@pytest.mark.benchmark(group=ALL_OF)
def test_all_of_try_acquire(measure: Any) -> None:
    both = adm.all_of(_bucket(), _bucket())
    measure(
        key="admission.all_of.try_acquire",
        impl="all_of(rpm, tpm).try_acquire(costs=(1, 850))",
        role="admission",
        stmt="try_acquire(costs=(1, 850))",
        env={"try_acquire": both.try_acquire},
    )


@pytest.mark.benchmark(group=ALL_OF)
def test_one_bucket_acquire(measure: Any) -> None:
    bucket = _bucket()
    measure(
        key="admission.TokenBucket.acquire",
        impl="await bucket.acquire()",
        role="reference",
        stmt="await acquire()",
        env={"acquire": bucket.acquire},
        is_async=True,
    )
