"""Metrics overhead (issue 4): the hot paths with the metrics collector registered vs not.

The collector reads the native counters at scrape time and the wait histogram is written only
by waiters, so registering metrics must not change the cost of a call. Each hot path is timed
four times in one run, alternating: *off* (no collector anywhere, dropped primitives not
tracked), *on* (a collector registered in a registry, dropped-primitive tracking on, the
registry scraped once before timing), *off* again, *on* again. The two *off* rows give the
run-to-run noise; the *on* rows must be within it. Every primitive is the same object
across the four rows, so only the metrics state differs.

Paths: ``TokenBucket.try_acquire()`` admitted (the issue-2 headline path),
``Semaphore.try_acquire(); release()``, and ``await sem.acquire(); sem.release()`` on the
immediate path (driven without an event loop, as in bench_semaphore.py).

A fifth group times one scrape (``generate_latest`` of the registry) with 100 live named
primitives in 10 series plus 100 unnamed ones, for scale.

    .venv/bin/python -m pytest benches/bench_metrics.py -q --benchmark-only \
        --benchmark-json=/tmp/metrics.json
    .venv/bin/python benches/report.py /tmp/metrics.json --no-targets
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import prometheus_client
import pytest

import admission as adm
from admission import _native
from admission.metrics.retired import MAX_PENDING

BUCKET = adm.TokenBucket(rate=1e9, burst=10**9, name="bench-metrics")
SEM = adm.Semaphore(10**6, name="bench-metrics")
ASEM = adm.Semaphore(10**6, name="bench-metrics-async")

VARIANTS = ["off-1", "on-1", "off-2", "on-2"]


@pytest.fixture
def metrics_state(request: pytest.FixtureRequest) -> Iterator[str]:
    """Puts the process in the variant's metrics state; yields the variant."""
    variant: str = request.param
    registry = prometheus_client.CollectorRegistry()
    if variant.startswith("on"):
        adm.metrics.register(registry)
        _native._track_retired(True, MAX_PENDING)
        prometheus_client.generate_latest(registry)  # a scrape before timing
    else:
        _native._track_retired(False, MAX_PENDING)
    try:
        yield variant
    finally:
        adm.metrics.unregister(registry)


def _run(
    measure: Any,
    variant: str,
    key: str,
    impl: str,
    stmt: str,
    env: dict[str, Any],
    is_async: bool = False,
) -> None:
    measure(
        key=f"{key}.{variant}",
        impl=f"{impl}, metrics {variant}",
        role="admission",
        baseline=variant == "off-1",
        stmt=stmt,
        env=env,
        is_async=is_async,
    )


@pytest.mark.benchmark(group="metrics: TokenBucket.try_acquire admitted")
@pytest.mark.parametrize("metrics_state", VARIANTS, indirect=True)
def test_token_bucket(measure: Any, metrics_state: str) -> None:
    before = BUCKET.stats().admitted
    _run(
        measure,
        metrics_state,
        "admission.TokenBucket",
        "TokenBucket.try_acquire()",
        "acquire()",
        {"acquire": BUCKET.try_acquire},
    )
    stats = BUCKET.stats()
    assert stats.rejected == 0
    assert stats.admitted > before
    assert stats.wait.count == stats.admitted
    assert stats.wait.waited == 0


@pytest.mark.benchmark(group="metrics: Semaphore try_acquire+release")
@pytest.mark.parametrize("metrics_state", VARIANTS, indirect=True)
def test_semaphore(measure: Any, metrics_state: str) -> None:
    _run(
        measure,
        metrics_state,
        "admission.Semaphore",
        "Semaphore try_acquire(); release()",
        "acquire(); release()",
        {"acquire": SEM.try_acquire, "release": SEM.release},
    )
    assert SEM.in_use == 0
    assert SEM.stats().rejected == 0


@pytest.mark.benchmark(group="metrics: await Semaphore.acquire()+release")
@pytest.mark.parametrize("metrics_state", VARIANTS, indirect=True)
def test_semaphore_async(measure: Any, metrics_state: str) -> None:
    _run(
        measure,
        metrics_state,
        "admission.Semaphore.async",
        "await acquire(); release()",
        "await acquire(); release()",
        {"acquire": ASEM.acquire, "release": ASEM.release},
        is_async=True,
    )
    assert ASEM.in_use == 0


@pytest.mark.benchmark(group="metrics: one scrape (200 primitives, 12 series)")
def test_scrape(measure: Any) -> None:
    keep = [adm.Semaphore(10, name=f"bench-scrape-{i % 10}") for i in range(100)]
    keep += [adm.TokenBucket(rate=10) for _ in range(100)]
    registry = prometheus_client.CollectorRegistry()
    adm.metrics.register(registry)
    try:
        measure(
            key="admission.metrics.scrape",
            impl="generate_latest(registry)",
            role="admission",
            stmt="scrape(registry)",
            env={"scrape": prometheus_client.generate_latest, "registry": registry},
        )
    finally:
        adm.metrics.unregister(registry)
    del keep
