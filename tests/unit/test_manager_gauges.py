"""A reload that replaces a rate limiter: the exporter's gauges show the new bucket only, its
counters never go down, and `ConcurrencyManager.stats` keeps the old bucket's counts."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import prometheus_client
import pytest
from support import unique, wait_until

import admission as adm
from admission.manager import ConcurrencyManager

pytestmark = pytest.mark.usefixtures("no_admission_variables")


class Series:
    """The exporter's figures for one token bucket series."""

    def __init__(self, registry: prometheus_client.CollectorRegistry, limiter: str) -> None:
        self.registry = registry
        self.labels = {"kind": "token_bucket", "limiter": limiter}
        self.seen_admitted = 0.0

    def value(self, metric: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(metric, {**self.labels, **labels})

    def admitted(self) -> float:
        """The admitted counter; fails if it ever went down since the last call."""
        value = self.value("admission_acquisitions_total", outcome="admitted")
        assert value is not None
        assert value >= self.seen_admitted, (
            f"the counter went down: {self.seen_admitted} -> {value}"
        )
        self.seen_admitted = value
        return value


def limits(name: str, rate: str, burst: int) -> dict[str, object]:
    return {"limits": {name: {"rate": rate, "burst": burst, "concurrency": "none"}}}


def test_reload_replaces_the_bucket_in_the_gauges_and_keeps_the_counters(
    registry: prometheus_client.CollectorRegistry,
) -> None:
    name = unique("gauge-reload")
    clock = adm.testing.ManualClock()
    m = ConcurrencyManager.from_dict(limits(name, "60/min", 5), clock=clock)
    series = Series(registry, f"{name}.rate")
    for _ in range(3):
        with m.limit(name):
            pass
    assert series.value("admission_tokens_capacity") == 5
    assert series.admitted() == 3

    for step, burst in enumerate((20, 8, 12)):
        m.reload(limits(name, f"{60 + step}/min", burst))
        # Only the new bucket is in the gauges: the old one was not kept alive.
        assert series.value("admission_tokens_capacity") == burst
        assert series.value("admission_limiters") == 1
        assert series.admitted() == 3 + step  # the old bucket's counts stayed in the series
        with m.limit(name):
            pass
        assert series.admitted() == 4 + step
    rate = m.stats()[name].rate
    assert rate is not None
    assert (rate.name, rate.admitted, rate.waiting) == (f"{name}.rate", 6, 0)


@pytest.mark.anyio
async def test_a_waiter_on_the_replaced_bucket_is_still_counted(
    registry: prometheus_client.CollectorRegistry,
) -> None:
    """A request sleeping on the old bucket at the reload is admitted by it, and counted
    both by the manager (which holds the old bucket while someone waits on it) and by the
    exporter (whose gauges count the old bucket only as long as it lives)."""
    name = unique("gauge-waiter")
    m = ConcurrencyManager.from_dict(limits(name, "20/s", 1))  # real clock: waits 50 ms
    series = Series(registry, f"{name}.rate")

    def waiting() -> int:
        rate = m.stats()[name].rate
        assert rate is not None
        return rate.waiting

    async with anyio.create_task_group() as tg:
        async with m.limit(name):  # takes the only token
            pass

        async def waiter() -> None:
            async with m.limit(name, timeout=None):  # sleeps until the next token
                pass

        tg.start_soon(waiter)
        await wait_until(lambda: waiting() == 1, "the waiter sleeping for the next token")
        m.reload(limits(name, "40/s", 2))
        # While the waiter sleeps, the old bucket lives: both are in the gauges.
        assert series.value("admission_tokens_capacity") == 1 + 2
    assert waiting() == 0
    rate = m.stats()[name].rate
    assert rate is not None
    assert rate.admitted == 2
    assert series.admitted() == 2
    assert series.value("admission_tokens_capacity") == 2  # the old bucket is gone
    async with m.limit(name):
        pass
    assert series.admitted() == 3
    rate = m.stats()[name].rate
    assert rate is not None
    assert rate.admitted == 3
