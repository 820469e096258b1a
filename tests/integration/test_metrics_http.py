"""The exporter over real HTTP: `adm.metrics.serve` on a free loopback port, scraped with urllib
and parsed with prometheus_client's parser."""

from __future__ import annotations

import urllib.error
import urllib.request
import uuid

import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families

import admission as adm


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_serve_scrape_parse_stop() -> None:
    name = f"http-{uuid.uuid4().hex[:8]}"
    sem = adm.Semaphore(8, name=name)
    bucket = adm.TokenBucket(rate=10, burst=10, name=name)
    assert sem.try_acquire(3)
    assert bucket.try_acquire(4)
    assert not bucket.try_acquire(7)
    registry = prometheus_client.CollectorRegistry()
    exporter = adm.metrics.serve(port=0, addr="127.0.0.1", registry=registry)
    try:
        assert exporter.port > 0
        assert exporter.url == f"http://127.0.0.1:{exporter.port}/metrics"
        samples = scrape(exporter.url)
        sem_labels = {("kind", "semaphore"), ("limiter", name)}
        tb_labels = {("kind", "token_bucket"), ("limiter", name)}
        assert samples[("admission_permits_in_use", frozenset(sem_labels))] == 3
        assert samples[("admission_permits_limit", frozenset(sem_labels))] == 8
        assert samples[("admission_tokens_capacity", frozenset(tb_labels))] == 10
        assert samples[("admission_tokens_available", frozenset(tb_labels))] >= 6
        rejected = frozenset(tb_labels | {("outcome", "rejected")})
        assert samples[("admission_acquisitions_total", rejected)] == 1
        inf = frozenset(tb_labels | {("le", "+Inf")})
        assert samples[("admission_wait_seconds_bucket", inf)] == 1
        # Later calls show at the next scrape: nothing is cached.
        sem.release(3)
        assert scrape(exporter.url)[("admission_permits_in_use", frozenset(sem_labels))] == 0
    finally:
        exporter.stop()
        adm.metrics.unregister(registry)
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(exporter.url, timeout=2)
    exporter.stop()  # idempotent


def test_exporter_is_a_context_manager() -> None:
    registry = prometheus_client.CollectorRegistry()
    with adm.metrics.serve(port=0, registry=registry) as exporter:
        assert scrape(exporter.url)
    adm.metrics.unregister(registry)
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(exporter.url, timeout=2)
