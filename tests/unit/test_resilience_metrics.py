"""The circuit breakers' and retries' metric families (issue 14), through every exporter: the
prometheus_client collector, the HTTP exporter's own exposition (`admission.metrics.exposition`)
and the OpenTelemetry bridge. Named breakers and retries only; a dropped one keeps its counts.

Breakers and retries are process-wide (like the limiters), so every test names its own.
"""

from __future__ import annotations

import gc
import logging
from typing import Any

import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import unique

import admission as adm
from admission.metrics import exposition
from admission.testing import ManualClock


def breaker(name: str | None, clock: ManualClock) -> adm.CircuitBreaker:
    """Opens after 2 calls at half failures; 10 s open; 1 probe."""
    return adm.CircuitBreaker(
        name,
        window=4,
        min_calls=2,
        open_for=10,
        half_open_calls=1,
        clock=clock,
        slow_call_duration=5,
    )


def fail(b: adm.CircuitBreaker) -> None:
    with pytest.raises(ConnectionError), b:
        raise ConnectionError("down")


def refused(b: adm.CircuitBreaker) -> None:
    with pytest.raises(adm.CircuitOpen), b:
        pass


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }


def state(scraped: dict[Any, float], name: str) -> float | None:
    return scraped.get(("admission_circuit_state", frozenset({("breaker", name)})))


def calls(scraped: dict[Any, float], name: str) -> dict[str, float]:
    out = {}
    for (metric, labels), v in scraped.items():
        d = dict(labels)
        if metric == "admission_circuit_calls_total" and d["breaker"] == name:
            out[d["outcome"]] = v
    return out


def retries(scraped: dict[Any, float], name: str) -> dict[str, float]:
    out = {}
    for (metric, labels), v in scraped.items():
        d = dict(labels)
        if metric == "admission_retries_total" and d["retry"] == name:
            out[d["outcome"]] = v
    return out


def scrapes(registry: prometheus_client.CollectorRegistry) -> list[dict[Any, float]]:
    """One scrape through each Prometheus path: the collector and the HTTP exporter's text."""
    collector = prometheus_client.generate_latest(registry).decode()
    native = b"".join(exposition.chunks()).decode()
    return [samples(collector), samples(native)]


def test_breaker_state_and_calls_in_every_state(
    registry: prometheus_client.CollectorRegistry,
) -> None:
    clock = ManualClock()
    name = unique("breaker")
    b = breaker(name, clock)
    with b:  # slow: a success that took slow_call_duration
        clock.advance(5)
    for scraped in scrapes(registry):
        assert state(scraped, name) == 0.0
        assert calls(scraped, name) == {"success": 0, "failure": 0, "slow": 1, "rejected": 0}
    fail(b)
    assert b.state == "open"
    refused(b)
    refused(b)
    for scraped in scrapes(registry):
        assert state(scraped, name) == 2.0
        assert calls(scraped, name) == {"success": 0, "failure": 1, "slow": 1, "rejected": 2}
    clock.advance(10)
    with b:  # the one probe: in flight, it makes the breaker half-open
        for scraped in scrapes(registry):
            assert state(scraped, name) == 1.0
        refused(b)  # the probe's place is taken
    assert b.state == "closed"
    for scraped in scrapes(registry):
        assert state(scraped, name) == 0.0
        assert calls(scraped, name) == {"success": 1, "failure": 1, "slow": 1, "rejected": 3}


def test_breakers_of_one_name_share_a_series_showing_the_worst_state(
    registry: prometheus_client.CollectorRegistry,
) -> None:
    clock = ManualClock()
    name = unique("shared")
    a, b = breaker(name, clock), breaker(name, clock)
    with a:
        pass
    fail(b)
    fail(b)
    assert (a.state, b.state) == ("closed", "open")
    for scraped in scrapes(registry):
        assert state(scraped, name) == 2.0
        assert calls(scraped, name) == {"success": 1, "failure": 2, "slow": 0, "rejected": 0}


def test_unnamed_breakers_and_retries_have_no_series(
    registry: prometheus_client.CollectorRegistry,
) -> None:
    clock = ManualClock()
    b = breaker(None, clock)
    fail(b)
    retry = adm.Retry(attempts=2, base=1, jitter="none", clock=clock)
    with pytest.raises(ConnectionError):
        retry.call_blocking(_raise)
    for scraped in scrapes(registry):
        labels = [
            dict(k[1]) for k in scraped if k[0].startswith(("admission_circuit", "admission_retr"))
        ]
        assert all(v not in ("", "unnamed", None) for d in labels for v in d.values())
    # The families are there even so (OpenTelemetry creates its instruments up front).
    text = prometheus_client.generate_latest(registry).decode()
    for family in ("admission_circuit_state", "admission_circuit_calls_total"):
        assert f"# TYPE {family} " in text


def test_a_dropped_breaker_keeps_its_counts_and_leaves_the_state_gauge(
    registry: prometheus_client.CollectorRegistry,
) -> None:
    clock = ManualClock()
    name = unique("dropped")

    def use() -> None:
        b = breaker(name, clock)
        with b:
            pass
        fail(b)
        refused(b)

    use()
    use()
    gc.collect()
    for scraped in scrapes(registry):
        assert calls(scraped, name) == {"success": 2, "failure": 2, "slow": 0, "rejected": 2}
        assert state(scraped, name) is None


def test_dropping_a_breaker_while_the_metrics_lock_is_held_does_not_deadlock() -> None:
    from admission import breaker as breaker_module

    name = unique("in-lock")
    b = breaker(name, ManualClock())
    with b:
        pass
    with breaker_module._live_lock:
        del b  # the last reference: its counts are handed over here, lock held
    scraped = {f.name: f for f in breaker_module._families()}
    (success,) = [
        s.value
        for s in scraped["admission_circuit_calls"].samples
        if s.labels == {"breaker": name, "outcome": "success"}
    ]
    assert success == 1.0


def _raise() -> None:
    raise ConnectionError("down")


def test_retries_total_by_outcome(registry: prometheus_client.CollectorRegistry) -> None:
    clock = ManualClock()
    name = unique("retry")
    budget = adm.RetryBudget(ratio=0.0, min_per_second=0.0, clock=clock)  # no retry at all
    retry = adm.Retry(attempts=2, base=1, jitter="none", clock=clock, name=name)
    with pytest.raises(ConnectionError):
        retry.call_blocking(_raise)  # retried once, then no attempts left
    starved = adm.Retry(attempts=5, base=1, jitter="none", clock=clock, name=name, budget=budget)
    with pytest.raises(ConnectionError):
        starved.call_blocking(_raise)
    for scraped in scrapes(registry):
        assert retries(scraped, name) == {
            "retried": 1,
            "refused_attempts": 1,
            "refused_deadline": 0,
            "refused_budget": 1,
        }


def test_opentelemetry_bridge_exports_breakers_and_retries() -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    clock = ManualClock()
    name = unique("otel")
    b = breaker(name, clock)
    fail(b)
    fail(b)
    refused(b)
    retry = adm.Retry(attempts=3, base=1, jitter="none", clock=clock, name=name)
    with pytest.raises(ConnectionError):
        retry.call_blocking(_raise)
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    handle = adm.metrics.otel.register(provider.get_meter("admission"))
    try:
        data = reader.get_metrics_data()
        assert data is not None
        points: dict[tuple[str, frozenset[tuple[str, Any]]], float] = {}
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    for p in metric.data.data_points:
                        points[(metric.name, frozenset(p.attributes.items()))] = p.value
        assert points[("admission_circuit_state", frozenset({("breaker", name)}))] == 2
        key = frozenset({("breaker", name), ("outcome", "rejected")})
        assert points[("admission_circuit_calls", key)] == 1
        key = frozenset({("breaker", name), ("outcome", "failure")})
        assert points[("admission_circuit_calls", key)] == 2
        key = frozenset({("retry", name), ("outcome", "retried")})
        assert points[("admission_retries", key)] == 2
    finally:
        handle.stop()
        provider.shutdown()


def test_opentelemetry_instruments_exist_before_any_breaker() -> None:
    from admission import breaker as breaker_module

    families = {f.name for f in breaker_module._families()}
    assert families == {"admission_circuit_state", "admission_circuit_calls"}


def test_every_transition_is_an_event_on_the_alerts_logger(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = ManualClock()
    name = unique("events")
    b = breaker(name, clock)
    caplog.set_level(logging.INFO, logger="admission.alerts")
    fail(b)
    fail(b)  # closed -> open
    clock.advance(10)
    with pytest.raises(ConnectionError), b:  # open -> half_open, then the probe fails
        raise ConnectionError("still down")
    clock.advance(20)  # opened again for twice as long
    with b:  # open -> half_open -> closed
        pass
    events = [
        (r.old_state, r.state, r.levelno)  # type: ignore[attr-defined]
        for r in caplog.records
        if r.name == "admission.alerts"
    ]
    assert events == [
        ("closed", "open", logging.WARNING),
        ("open", "half_open", logging.INFO),
        ("half_open", "open", logging.WARNING),
        ("open", "half_open", logging.INFO),
        ("half_open", "closed", logging.INFO),
    ]
    assert all(getattr(r, "breaker", None) == name for r in caplog.records)
