"""The metrics collector: what a scrape reports for every primitive type, exactly.

Each test scrapes a fresh ``CollectorRegistry`` and parses the exposition text with
prometheus_client's own parser. The set of live primitives is process-wide, so tests name
their primitives uniquely, and the unnamed-aggregation tests compare before/after deltas.
"""

from __future__ import annotations

import gc
import logging
import re
import threading
from typing import Any

import anyio
import anyio.lowlevel
import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import unique

import admission as adm
from admission import _native

Labels = dict[str, str]


class Scrape:
    """A parsed scrape: ``value(name, **labels)`` finds one sample."""

    def __init__(self, registry: prometheus_client.CollectorRegistry) -> None:
        text = prometheus_client.generate_latest(registry).decode()
        self.text = text
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.samples = [s for f in self.families.values() for s in f.samples]

    def find(self, name: str, **labels: str) -> list[Any]:
        return [
            s
            for s in self.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        ]

    def value(self, name: str, **labels: str) -> float:
        found = self.find(name, **labels)
        assert len(found) == 1, f"{name} {labels}: {found}"
        return float(found[0].value)

    def has(self, name: str, **labels: str) -> bool:
        return bool(self.find(name, **labels))

    def buckets(self, name: str, **labels: str) -> dict[str, float]:
        return {s.labels["le"]: s.value for s in self.find(name + "_bucket", **labels)}


def outcomes(scrape: Scrape, **labels: str) -> dict[str, float]:
    return {
        s.labels["outcome"]: s.value for s in scrape.find("admission_acquisitions_total", **labels)
    }


# ---------------------------------------------------------------------------------------------
# One test per primitive type
# ---------------------------------------------------------------------------------------------


def test_semaphore_series(registry: prometheus_client.CollectorRegistry) -> None:
    name = unique("sem")
    s = adm.Semaphore(5, name=name)
    assert s.try_acquire(3)
    assert not s.try_acquire(3)  # rejected
    with pytest.raises(adm.AcquireTimeout):
        s.acquire_blocking(3, timeout=0.01)  # timeout
    labels = {"kind": "semaphore", "limiter": name}
    m = Scrape(registry)
    assert m.value("admission_limiters", **labels) == 1
    assert m.value("admission_permits_in_use", **labels) == 3
    assert m.value("admission_permits_limit", **labels) == 5
    assert m.value("admission_high_water", **labels) == 3
    assert m.value("admission_waiters", **labels) == 0
    assert m.value("admission_oldest_wait_seconds", **labels) == 0
    assert outcomes(m, **labels) == {"admitted": 1, "rejected": 1, "timeout": 1, "cancelled": 0}
    assert m.value("admission_admitted_cost_total", **labels) == 3
    assert m.value("admission_wait_seconds_count", **labels) == 1
    assert m.value("admission_wait_seconds_sum", **labels) == 0
    buckets = m.buckets("admission_wait_seconds", **labels)
    assert buckets["0.0"] == 1
    assert buckets["+Inf"] == 1
    assert len(buckets) == len(_native.WAIT_BOUNDS) + 1
    assert not m.has("admission_tokens_available", **labels)
    # Families have the Prometheus types and the names documented.
    assert m.families["admission_acquisitions"].type == "counter"
    assert m.families["admission_wait_seconds"].type == "histogram"
    assert m.families["admission_permits_in_use"].type == "gauge"
    s.release(3)


def test_token_bucket_series(registry: prometheus_client.CollectorRegistry) -> None:
    name = unique("tb")
    clock = adm.testing.ManualClock()
    b = adm.TokenBucket(rate=1, per=1.0, burst=5, clock=clock, name=name)
    assert b.try_acquire(2)
    labels = {"kind": "token_bucket", "limiter": name}
    m = Scrape(registry)
    # tokens_available: the largest cost try_acquire would admit now.
    assert m.value("admission_tokens_available", **labels) == 3
    assert b.peek().remaining + 1 == 3
    assert m.value("admission_tokens_capacity", **labels) == 5
    assert not m.has("admission_permits_in_use", **labels)
    assert b.try_acquire(3)
    assert not b.try_acquire()
    b.acquire_blocking(2)  # waits 2 s of manual time
    with pytest.raises(adm.AcquireTimeout):
        b.acquire_blocking(5, timeout=1.0)
    m = Scrape(registry)
    assert m.value("admission_tokens_available", **labels) == 0
    assert outcomes(m, **labels) == {"admitted": 3, "rejected": 1, "timeout": 1, "cancelled": 0}
    assert m.value("admission_admitted_cost_total", **labels) == 7
    assert m.value("admission_wait_seconds_count", **labels) == 3
    assert m.value("admission_wait_seconds_sum", **labels) == pytest.approx(2.0)
    buckets = m.buckets("admission_wait_seconds", **labels)
    assert buckets["0.0"] == 2
    assert buckets["1.0"] == 2
    assert buckets["2.0"] == 3
    clock.advance(1.0)
    assert Scrape(registry).value("admission_tokens_available", **labels) == 1


def test_sliding_window_series(registry: prometheus_client.CollectorRegistry) -> None:
    name = unique("sw")
    clock = adm.testing.ManualClock()
    w = adm.SlidingWindow(limit=4, window=10.0, clock=clock, name=name)
    assert w.try_acquire()
    labels = {"kind": "sliding_window", "limiter": name}
    m = Scrape(registry)
    assert m.value("admission_tokens_available", **labels) == 3
    assert m.value("admission_tokens_capacity", **labels) == 4
    assert w.try_acquire(3)
    assert not w.try_acquire()
    m = Scrape(registry)
    assert m.value("admission_tokens_available", **labels) == 0
    assert outcomes(m, **labels) == {"admitted": 2, "rejected": 1, "timeout": 0, "cancelled": 0}
    assert m.value("admission_wait_seconds_count", **labels) == 2


@pytest.mark.anyio
async def test_waiters_and_cancellations_show(
    registry: prometheus_client.CollectorRegistry,
) -> None:
    sem_name, tb_name = unique("sem"), unique("tb")
    s = adm.Semaphore(1, name=sem_name)
    b = adm.TokenBucket(rate=1, per=60.0, burst=1, name=tb_name)
    assert s.try_acquire()
    assert b.try_acquire()
    async with anyio.create_task_group() as tg:
        tg.start_soon(s.acquire)
        tg.start_soon(s.acquire)
        tg.start_soon(b.acquire)
        for _ in range(200):
            await anyio.sleep(0.001)
            if s.waiting == 2 and b.waiting == 1:
                break
        m = Scrape(registry)
        sem = {"kind": "semaphore", "limiter": sem_name}
        tb = {"kind": "token_bucket", "limiter": tb_name}
        assert m.value("admission_waiters", **sem) == 2
        assert m.value("admission_waiters", **tb) == 1
        assert m.value("admission_oldest_wait_seconds", **sem) > 0
        assert m.value("admission_tokens_available", **tb) == 0
        tg.cancel_scope.cancel()
    m = Scrape(registry)
    assert outcomes(m, **sem)["cancelled"] == 2
    assert outcomes(m, **tb)["cancelled"] == 1
    assert m.value("admission_waiters", **sem) == 0
    assert m.value("admission_waiters", **tb) == 0
    s.release()


def test_loop_clock_limiter_outside_its_loop_has_no_token_reading(
    registry: prometheus_client.CollectorRegistry,
) -> None:
    name = unique("loop")
    b = adm.TokenBucket(rate=10, clock=adm.LoopClock(), name=name)
    m = Scrape(registry)
    labels = {"kind": "token_bucket", "limiter": name}
    assert m.value("admission_tokens_capacity", **labels) == 10
    assert not m.has("admission_tokens_available", **labels)
    del b


# ---------------------------------------------------------------------------------------------
# Aggregation and cardinality
# ---------------------------------------------------------------------------------------------


def test_unnamed_primitives_share_one_series(registry: prometheus_client.CollectorRegistry) -> None:
    gc.collect()
    labels = {"kind": "semaphore", "limiter": adm.metrics.UNNAMED}
    before = Scrape(registry)

    def value(m: Scrape, name: str) -> float:
        return m.value(name, **labels) if m.has(name, **labels) else 0.0

    sems = [adm.Semaphore(3) for _ in range(50)]
    for s in sems:
        assert s.try_acquire()
    after = Scrape(registry)
    assert len(after.find("admission_permits_limit", kind="semaphore")) == len(
        before.find("admission_permits_limit", kind="semaphore")
    ) + (0 if before.has("admission_permits_limit", **labels) else 1)
    assert len(after.find("admission_permits_limit", **labels)) == 1
    assert value(after, "admission_limiters") - value(before, "admission_limiters") == 50
    assert value(after, "admission_permits_limit") - value(before, "admission_permits_limit") == 150
    assert (
        value(after, "admission_permits_in_use") - value(before, "admission_permits_in_use") == 50
    )
    admitted = {"outcome": "admitted", **labels}
    assert (
        after.value("admission_acquisitions_total", **admitted)
        - (
            before.value("admission_acquisitions_total", **admitted)
            if before.has("admission_acquisitions_total", **admitted)
            else 0
        )
        == 50
    )
    for s in sems:
        s.release()


def test_named_primitives_with_one_name_are_added_up(
    registry: prometheus_client.CollectorRegistry,
) -> None:
    name = unique("pair")
    a, b = adm.Semaphore(2, name=name), adm.Semaphore(3, name=name)
    assert a.try_acquire(2)
    assert b.try_acquire(1)
    a.release(2)
    m = Scrape(registry)
    labels = {"kind": "semaphore", "limiter": name}
    assert m.value("admission_limiters", **labels) == 2
    assert m.value("admission_permits_limit", **labels) == 5
    assert m.value("admission_permits_in_use", **labels) == 1
    assert m.value("admission_high_water", **labels) == 3  # 2 + 1: summed per semaphore
    assert outcomes(m, **labels)["admitted"] == 2
    b.release()


def test_dropped_primitives_keep_their_counts(
    registry: prometheus_client.CollectorRegistry,
) -> None:
    name = unique("gone")
    labels = {"kind": "token_bucket", "limiter": name}
    b = adm.TokenBucket(rate=100, burst=100, name=name)
    for _ in range(5):
        assert b.try_acquire()
    assert outcomes(Scrape(registry), **labels)["admitted"] == 5
    del b
    gc.collect()
    m = Scrape(registry)
    assert outcomes(m, **labels)["admitted"] == 5
    assert m.value("admission_wait_seconds_count", **labels) == 5
    assert m.value("admission_limiters", **labels) == 0
    assert not m.has("admission_tokens_available", **labels)  # gauges go with the object
    # A new one with the same name continues the series' counters.
    b2 = adm.TokenBucket(rate=100, burst=100, name=name)
    assert b2.try_acquire()
    assert outcomes(Scrape(registry), **labels)["admitted"] == 6


def test_labels_are_only_kind_limiter_outcome_and_le(
    registry: prometheus_client.CollectorRegistry,
) -> None:
    # The limiters' families; the breakers' and retries' have their own label (issue 14),
    # the network stores' limiters theirs: the store and the fallback mode (issue 17).
    s = adm.Semaphore(1, name=unique("lbl"))
    b = adm.CircuitBreaker(unique("lbl"))
    r = adm.Retry(name=unique("lbl"))
    remote = adm.TokenBucket(
        rate=1, name=unique("lbl"), store=adm.stores.MemoryStore(), on_store_error="open"
    )
    m = Scrape(registry)
    own = {
        "admission_circuit": {"breaker"},
        "admission_retr": {"retry"},
        "admission_store_": {"store", "limiter", "mode"},
    }
    seen = set()
    for sample in m.samples:
        if sample.name.startswith("admission_"):
            prefix = next((k for k in own if sample.name.startswith(k)), None)
            allowed = own[prefix] if prefix is not None else {"kind", "limiter"}
            assert set(sample.labels) <= {*allowed, "outcome", "le"}, sample
            seen.add(prefix)
    assert seen == {*own, None}  # each kind of family was checked
    del s, b, r, remote


# ---------------------------------------------------------------------------------------------
# Exact counters under concurrency
# ---------------------------------------------------------------------------------------------


def test_counters_exact_under_threads(registry: prometheus_client.CollectorRegistry) -> None:
    sem_name, tb_name = unique("tsem"), unique("ttb")
    s = adm.Semaphore(3, name=sem_name)
    b = adm.TokenBucket(rate=1e9, burst=10**9, name=tb_name)
    per_thread = 1500
    tried = [0] * 8
    got = [0] * 8

    def worker(i: int) -> None:
        for k in range(per_thread):
            if k % 2:
                s.acquire_blocking()
                s.release()
            elif s.try_acquire():
                got[i] += 1
                s.release()
            else:
                tried[i] += 1
            assert b.try_acquire()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    m = Scrape(registry)
    sem = {"kind": "semaphore", "limiter": sem_name}
    admitted = 8 * per_thread // 2 + sum(got)
    assert outcomes(m, **sem) == {
        "admitted": admitted,
        "rejected": sum(tried),
        "timeout": 0,
        "cancelled": 0,
    }
    assert m.value("admission_wait_seconds_count", **sem) == admitted
    assert m.value("admission_permits_in_use", **sem) == 0
    tb = {"kind": "token_bucket", "limiter": tb_name}
    assert outcomes(m, **tb)["admitted"] == 8 * per_thread
    assert m.value("admission_wait_seconds_count", **tb) == 8 * per_thread


@pytest.mark.anyio
async def test_counters_exact_under_tasks(registry: prometheus_client.CollectorRegistry) -> None:
    sem_name, tb_name = unique("asem"), unique("atb")
    s = adm.Semaphore(4, name=sem_name)
    b = adm.TokenBucket(rate=1e9, burst=10**9, name=tb_name)
    timeouts = 0

    async def worker(i: int) -> None:
        nonlocal timeouts
        await b.acquire()
        if i % 10 == 0:
            try:
                await s.acquire(timeout=0)
            except adm.AcquireTimeout:
                timeouts += 1
                return
            s.release()
            return
        async with s:
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        for i in range(300):
            tg.start_soon(worker, i)
    m = Scrape(registry)
    sem = {"kind": "semaphore", "limiter": sem_name}
    got = outcomes(m, **sem)
    assert got["admitted"] + got["timeout"] == 300
    assert got["timeout"] == timeouts
    assert m.value("admission_wait_seconds_count", **sem) == got["admitted"]
    tb = {"kind": "token_bucket", "limiter": tb_name}
    assert outcomes(m, **tb)["admitted"] == 300


# ---------------------------------------------------------------------------------------------
# The collector itself
# ---------------------------------------------------------------------------------------------


def test_register_is_idempotent_and_unregister_removes() -> None:
    reg = prometheus_client.CollectorRegistry()
    first = adm.metrics.register(reg)
    assert adm.metrics.register(reg) is first
    name = unique("once")
    s = adm.Semaphore(1, name=name)
    m = Scrape(reg)
    assert len(m.find("admission_permits_limit", limiter=name)) == 1
    adm.metrics.unregister(reg)
    assert not Scrape(reg).has("admission_permits_limit", limiter=name)
    adm.metrics.unregister(reg)  # no error
    del s


def test_sources_extend_every_exporter(
    registry: prometheus_client.CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    def pools() -> list[adm.metrics.Family]:
        return [
            adm.metrics.Family(
                "admission_pool_in_use",
                "gauge",
                "Connections in use.",
                (adm.metrics.Sample({"pool": "rag"}, 4.0),),
            )
        ]

    def more_pools() -> list[adm.metrics.Family]:
        return [
            adm.metrics.Family(
                "admission_pool_in_use",
                "gauge",
                "Connections in use.",
                (adm.metrics.Sample({"pool": "users"}, 1.0),),
            )
        ]

    def broken() -> list[adm.metrics.Family]:
        raise RuntimeError("boom")

    removers = [adm.metrics.add_source(f) for f in (pools, broken, more_pools)]
    try:
        with caplog.at_level(logging.ERROR, logger="admission.metrics"):
            m = Scrape(registry)
        assert m.value("admission_pool_in_use", pool="rag") == 4
        assert m.value("admission_pool_in_use", pool="users") == 1
        assert "boom" in caplog.text
        assert m.has("admission_acquisitions_total")  # the rest is still exported
    finally:
        for remove in removers:
            remove()
    assert not Scrape(registry).has("admission_pool_in_use")
    adm.metrics.remove_source(pools)  # already gone: no error


def test_limiters_snapshot_and_utilization() -> None:
    name = unique("util")
    s = adm.Semaphore(4, name=name)
    assert s.try_acquire(3)
    (series,) = [x for x in adm.metrics.limiters() if x.limiter == name]
    assert series.kind == "semaphore"
    assert series.utilization == 0.75
    clock = adm.testing.ManualClock()
    b = adm.TokenBucket(rate=1, burst=4, clock=clock, name=name)
    assert b.try_acquire()
    (tb,) = [x for x in adm.metrics.limiters() if x.limiter == name and x.kind == "token_bucket"]
    assert tb.utilization == 0.25
    s.release(3)


def test_opentelemetry_export() -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.metrics.view import View

    name = unique("otel")
    s = adm.Semaphore(4, name=name)
    assert s.try_acquire(2)
    assert not s.try_acquire(3)
    reader = InMemoryMetricReader()
    # The SDK keeps 2,000 attribute sets per instrument by default, and the wait histogram
    # has 27 per limiter: the limiters earlier tests left (retired ones are still reported)
    # would push this one's into the overflow series. As the module's docs tell a user to.
    everything = View(instrument_name="admission_*", aggregation_cardinality_limit=1_000_000)
    provider = MeterProvider(metric_readers=[reader], views=[everything])
    handle = adm.metrics.otel.register(provider.get_meter("admission"))
    try:
        data = reader.get_metrics_data()
        assert data is not None
        points: dict[str, list[Any]] = {}
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    points[metric.name] = list(metric.data.data_points)

        def value(metric: str, **attrs: str) -> float:
            found = [
                p.value
                for p in points[metric]
                if all(p.attributes.get(k) == v for k, v in attrs.items())
            ]
            assert len(found) == 1, (metric, attrs, found)
            return float(found[0])

        labels = {"kind": "semaphore", "limiter": name}
        assert value("admission_permits_in_use", **labels) == 2
        assert value("admission_permits_limit", **labels) == 4
        assert value("admission_acquisitions", outcome="admitted", **labels) == 1
        assert value("admission_acquisitions", outcome="rejected", **labels) == 1
        assert value("admission_wait_seconds_count", **labels) == 1
        assert value("admission_wait_seconds_bucket", le="+Inf", **labels) == 1
        assert value("admission_wait_seconds_bucket", le="0.0", **labels) == 1
        assert value("admission_wait_seconds_sum", **labels) == 0
        assert "admission_wait_seconds_bucket" in handle.instruments
    finally:
        handle.stop()
        provider.shutdown()
    s.release(2)


@pytest.mark.parametrize(
    ("port", "error"),
    [
        (-1, ValueError),
        (70000, ValueError),
        (65536, ValueError),
        ("abc", TypeError),
        (True, TypeError),
        (9464.0, TypeError),
        (None, TypeError),
    ],
)
def test_serve_refuses_a_bad_port_naming_it(port: object, error: type[Exception]) -> None:
    # Issue 12 (9): checked before anything is registered or bound.
    registry = prometheus_client.CollectorRegistry()
    with pytest.raises(error, match=rf"^port must be .*got {re.escape(repr(port))}$"):
        adm.metrics.serve(port=port, registry=registry)  # type: ignore[arg-type]
    assert list(registry.collect()) == []


def test_port_in_use_error_is_an_oserror_naming_the_port() -> None:
    import errno
    import pickle

    e = adm.metrics.PortInUseError(9464, "127.0.0.1")
    assert adm.PortInUseError is adm.metrics.PortInUseError
    assert isinstance(e, OSError)
    assert isinstance(e, adm.AdmissionError)
    assert e.errno == errno.EADDRINUSE
    assert (e.port, e.addr) == (9464, "127.0.0.1")
    assert "127.0.0.1:9464 (port=9464)" in str(e)
    assert "own port" in str(e)
    assert "[::1]:9464" in str(adm.metrics.PortInUseError(9464, "::1"))
    copy = pickle.loads(pickle.dumps(e))
    assert (type(copy), str(copy), copy.port) == (type(e), str(e), 9464)
