"""The exporter over real HTTP: `adm.metrics.serve` on a free loopback port, scraped with urllib
and parsed with prometheus_client's parser."""

from __future__ import annotations

import socket
import subprocess
import sys
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


def test_a_second_process_on_the_same_port_gets_a_clear_error() -> None:
    # Issue 12 (9): uvicorn --workers 2, each worker calling serve(port=...) with one port.
    registry = prometheus_client.CollectorRegistry()
    with adm.metrics.serve(port=0, registry=registry) as exporter:
        script = (
            "import admission as adm\n"
            f"try:\n    adm.metrics.serve(port={exporter.port})\n"
            "except adm.metrics.PortInUseError as e:\n"
            "    import errno; assert e.errno == errno.EADDRINUSE and isinstance(e, OSError)\n"
            "    print(e.port, e)\n"
            "else:\n    raise SystemExit('served')\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"{exporter.port} cannot serve metrics on 127.0.0.1:")
        assert "own port" in done.stdout
        # The first exporter still serves.
        assert scrape(exporter.url)
    adm.metrics.unregister(registry)


def test_port_in_use_leaves_the_registry_as_it_was() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        sem = adm.Semaphore(3, name=f"in-use-{uuid.uuid4().hex[:8]}")
        labels = {"kind": "semaphore", "limiter": sem.name or ""}
        registry = prometheus_client.CollectorRegistry()
        with pytest.raises(adm.metrics.PortInUseError, match=rf"port={port}\b"):
            adm.metrics.serve(port=port, registry=registry)
        assert registry.get_sample_value("admission_permits_limit", labels) is None
        # Registered before: stays registered.
        adm.metrics.register(registry)
        with pytest.raises(OSError, match="already in use"):
            adm.metrics.serve(port=port, registry=registry)
        assert registry.get_sample_value("admission_permits_limit", labels) == 3
        adm.metrics.unregister(registry)
