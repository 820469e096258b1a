"""Dropped names leave the metrics (issue 12, case 8): the counts of dropped primitives stay
in their series for ``ttl`` after the name was last seen, for at most ``max_series`` names,
so dynamic names never make ``/metrics`` grow without bound. Counted in series, on a
manual clock."""

from __future__ import annotations

import gc
import logging
import re
from collections.abc import Iterator

import prometheus_client
import pytest
from support import unique

import admission as adm
from admission import _native
from admission.metrics import retired


def series(prefix: str) -> dict[str, adm.metrics.LimiterSeries]:
    return {s.limiter: s for s in adm.metrics.limiters() if s.limiter.startswith(prefix)}


@pytest.fixture
def clock(registry: prometheus_client.CollectorRegistry) -> Iterator[adm.testing.ManualClock]:
    """Retention on a manual clock; what other tests dropped is drained and seen earlier than
    anything this test drops (the clock moves on), so it goes first when the cap bites."""
    clock = adm.testing.ManualClock()
    adm.metrics.set_retention(ttl=600, max_series=1_000, clock=clock)
    gc.collect()
    adm.metrics.limiters()
    clock.advance(1.0)
    yield clock
    adm.metrics.set_retention()


def drop(objs: list[object]) -> None:
    objs.clear()
    gc.collect()


@pytest.mark.usefixtures("registry")
def test_default_cap_bounds_dropped_names(caplog: pytest.LogCaptureFixture) -> None:
    # The case with the defaults: 1,500 dynamic names created and dropped.
    prefix = unique("dyn")
    adm.metrics.limiters()  # drains what others dropped: seen before these
    objs: list[object] = []
    for i in range(1_500):
        b = adm.TokenBucket(rate=10, name=f"{prefix}-{i}")
        assert b.try_acquire()
        objs.append(b)
    del b
    assert len(series(prefix)) == 1_500
    drop(objs)
    with caplog.at_level(logging.WARNING, logger="admission.metrics"):
        kept = series(prefix)
    assert len(kept) == 1_000
    assert all(s.primitives == 0 and s.admitted == 1 for s in kept.values())
    # One line, counting these 500 and any older dropped names of other tests.
    (line,) = [r.getMessage() for r in caplog.records if "max_series=1000" in r.getMessage()]
    assert int(re.search(r"(\d+) names", line).group(1)) >= 500, line  # type: ignore[union-attr]
    assert len(series(prefix)) == 1_000  # the bound holds: nothing comes back


def test_cap_keeps_the_names_dropped_last(
    clock: adm.testing.ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    adm.metrics.set_retention(ttl=600, max_series=0, clock=clock)
    adm.metrics.limiters()  # what other tests dropped is gone: only these count below
    adm.metrics.set_retention(ttl=600, max_series=50, clock=clock)
    prefix = unique("cap")
    first = [adm.Semaphore(1, name=f"{prefix}-a{i}") for i in range(40)]
    drop(first)  # type: ignore[arg-type]
    assert len(series(prefix)) == 40
    clock.advance(1.0)
    second = [adm.Semaphore(1, name=f"{prefix}-b{i}") for i in range(40)]
    drop(second)  # type: ignore[arg-type]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="admission.metrics"):
        kept = series(prefix)
    # 50 at most: the 40 dropped last, and 10 of the first ones.
    assert len(kept) == 50
    assert sum(name.startswith(f"{prefix}-b") for name in kept) == 40
    warnings = [r for r in caplog.records if "max_series=50" in r.getMessage()]
    assert len(warnings) == 1
    assert "30 names" in warnings[0].getMessage()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="admission.metrics"):
        assert len(series(prefix)) == 50
    assert not caplog.records  # one line when names are dropped, not at every scrape


def test_a_dropped_name_leaves_after_the_ttl(clock: adm.testing.ManualClock) -> None:
    adm.metrics.set_retention(ttl="1m", max_series=1_000, clock=clock)
    name = unique("ttl")
    b = adm.TokenBucket(rate=10, name=name)
    assert b.try_acquire(3)
    del b
    gc.collect()
    s = series(name)[name]
    assert (s.primitives, s.admitted, s.admitted_cost) == (0, 1, 3)
    clock.advance(59.0)
    assert name in series(name)
    clock.advance(1.0)
    assert series(name) == {}
    # Back after it left: a new series, from the new primitive's counts (a counter reset).
    again = adm.TokenBucket(rate=10, name=name)
    assert again.try_acquire()
    assert series(name)[name].admitted == 1
    del again


def test_a_live_name_keeps_its_dropped_counts(clock: adm.testing.ManualClock) -> None:
    adm.metrics.set_retention(ttl=10, max_series=0, clock=clock)
    name = unique("live")
    stays = adm.Semaphore(2, name=name)
    goes = adm.Semaphore(2, name=name)
    assert goes.try_acquire()
    goes.release()
    del goes
    gc.collect()
    for _ in range(3):
        clock.advance(100.0)
        s = series(name)[name]
        assert (s.primitives, s.admitted) == (1, 1)  # counters never go down while it lives
    del stays
    gc.collect()
    assert series(name) == {}  # max_series=0: gone once no primitive is left


def test_ttl_zero_and_none(clock: adm.testing.ManualClock) -> None:
    adm.metrics.set_retention(ttl=0, clock=clock)
    name = unique("zero")
    b = adm.Semaphore(1, name=name)
    del b
    gc.collect()
    assert series(name) == {}
    adm.metrics.set_retention(ttl=None, max_series=1_000, clock=clock)
    name = unique("forever")
    b = adm.Semaphore(1, name=name)
    del b
    gc.collect()
    assert name in series(name)
    clock.advance(10.0**9)
    assert name in series(name)


def test_native_buffer_is_bounded_between_scrapes(
    clock: adm.testing.ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    prefix = unique("pending")
    _native._track_retired(True, 3)
    try:
        objs: list[object] = [adm.Semaphore(1, name=f"{prefix}-{i}") for i in range(10)]
        drop(objs)
        with caplog.at_level(logging.WARNING, logger="admission.metrics"):
            assert len(series(prefix)) == 3
    finally:
        _native._track_retired(True, retired.MAX_PENDING)
    assert any("counts of 7 dropped primitives" in r.getMessage() for r in caplog.records)


def test_native_buffer_keeps_counts_only_while_tracking_and_gives_them_once() -> None:
    adm.metrics.limiters()  # empties the buffer
    on = adm.Semaphore(1, name=unique("on"))
    assert on.try_acquire()
    _native._track_retired(False, retired.MAX_PENDING)
    try:
        off = adm.Semaphore(1, name=unique("off"))
        del off
        gc.collect()
    finally:
        _native._track_retired(True, retired.MAX_PENDING)
    names = {on.name}
    twice = [adm.Semaphore(1, name=on.name) for _ in range(2)]
    del on
    twice.clear()
    gc.collect()
    entries, discarded = _native._drain_retired()
    mine = [e for e in entries if e[1] in names]
    assert discarded == 0
    # One entry for the name: three primitives, one admission; none for the one dropped
    # while tracking was off.
    assert [(kind, counters[0], sum(counts)) for kind, _, counters, counts, _ in mine] == [
        ("semaphore", 1, 1)
    ]
    assert not [e for e in _native._drain_retired()[0] if e[1] in names]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"ttl": -1}, ValueError, "ttl must be"),
        ({"ttl": float("nan")}, ValueError, "ttl must be"),
        ({"ttl": "soon"}, ValueError, "ttl"),
        ({"ttl": True}, TypeError, "ttl must be"),
        ({"max_series": -1}, ValueError, "max_series must be"),
        ({"max_series": 1.5}, TypeError, "max_series must be"),
    ],
)
def test_set_retention_checks_its_arguments(
    kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        adm.metrics.set_retention(**kwargs)  # type: ignore[arg-type]
