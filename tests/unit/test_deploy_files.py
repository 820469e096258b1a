"""The user-facing monitoring stack (docker-compose.yml, Prometheus config, Grafana dashboard)
is never run in CI, so it is checked here: every file parses, the pieces point at each other,
and every metric the dashboard queries is one the exporter really reports."""

from __future__ import annotations

import asyncio
import json
import os
import re
from pathlib import Path
from typing import Any

import httpx
import prometheus_client
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

import admission as adm
from admission.pools.metrics import families as pool_families

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "admission.json"
PROVISIONING = ROOT / "deploy" / "grafana" / "provisioning"


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Host path (resolved from the repository root) -> container path."""
    out = {}
    for volume in service.get("volumes", []):
        host, container, *_ = volume.split(":")
        if host.startswith("."):
            out[str((ROOT / host).resolve())] = container
    return out


def test_compose_has_the_three_services_wired_to_the_repo_files() -> None:
    compose = load_yaml(COMPOSE)
    services = compose["services"]
    assert set(services) >= {"postgres", "prometheus", "grafana"}
    assert services["postgres"]["image"].startswith("postgres:")
    prom = services["prometheus"]
    assert prom["image"].startswith("prom/prometheus:")
    assert mounts(prom)[str(PROMETHEUS)] == "/etc/prometheus/prometheus.yml"
    assert "--config.file=/etc/prometheus/prometheus.yml" in prom["command"]
    graf = services["grafana"]
    assert graf["image"].startswith("grafana/grafana:")
    graf_mounts = mounts(graf)
    assert graf_mounts[str(PROVISIONING)] == "/etc/grafana/provisioning"
    assert graf_mounts[str(DASHBOARD.parent)] == "/var/lib/grafana/dashboards"
    # Every named volume used is declared.
    declared = set(compose.get("volumes", {}))
    for service in services.values():
        for volume in service.get("volumes", []):
            host = volume.split(":")[0]
            if not host.startswith((".", "/")):
                assert host in declared, host


def test_prometheus_scrapes_the_exporter_default_port() -> None:
    config = load_yaml(PROMETHEUS)
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "admission"]
    targets = [t for sc in job["static_configs"] for t in sc["targets"]]
    assert "127.0.0.1:9464" in targets
    assert job.get("metrics_path", "/metrics") == "/metrics"
    # 9464 is serve()'s default port.
    assert adm.metrics.serve.__defaults__ is not None
    assert adm.metrics.serve.__defaults__[0] == 9464


def test_grafana_provisioning_points_at_prometheus_and_the_dashboard() -> None:
    (ds,) = load_yaml(PROVISIONING / "datasources" / "prometheus.yml")["datasources"]
    assert ds["type"] == "prometheus"
    assert ds["url"] == "http://127.0.0.1:9090"
    compose = load_yaml(COMPOSE)
    assert "--web.listen-address=127.0.0.1:9090" in compose["services"]["prometheus"]["command"]
    (provider,) = load_yaml(PROVISIONING / "dashboards" / "admission.yml")["providers"]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == ds["uid"], panel["title"]


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [v["definition"] for v in dashboard["templating"]["list"]]
    return exprs


def test_dashboard_covers_the_issue_panels() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    titles = {p["title"] for p in dashboard["panels"]}
    assert {"Utilization per limiter", "Wait time (all limiters)", "Pool usage"} <= titles
    assert any(p["type"] == "heatmap" for p in dashboard["panels"])
    assert any("rejected" in e for e in dashboard_exprs())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


@pytest.fixture
def exported_names(registry: prometheus_client.CollectorRegistry) -> set[str]:
    """Every sample and family name the exporter reports, with one primitive of each kind
    (in every state the dashboard looks at), a named circuit breaker and retry, a bucket in
    a network store, and a
    PoolManager's pool (its figures, as an open pool reports them:
    tests/integration/test_pool_metrics.py checks those against a real server)."""
    clock = adm.testing.ManualClock()
    sem = adm.Semaphore(2, name="deploy-test")
    bucket = adm.TokenBucket(rate=1, burst=1, clock=clock, name="deploy-test")
    window = adm.SlidingWindow(limit=1, window=1.0, clock=clock, name="deploy-test")
    assert sem.try_acquire()
    assert bucket.try_acquire()
    assert window.try_acquire()
    breaker = adm.CircuitBreaker("deploy-test", min_calls=1, clock=clock)
    with pytest.raises(ConnectionError), breaker:
        raise ConnectionError("down")
    retry = adm.Retry(attempts=2, base=1, clock=clock, name="deploy-test")
    with pytest.raises(adm.CircuitOpen):
        retry.call_blocking(breaker.call_blocking, lambda: None)
    pools = adm.PoolManager({"deploy-test": adm.PoolConfig("postgresql://app:pw@db/test")})
    # An httpx transport that served one host (issue 15): its per-host families.
    transport = adm.httpx.Transport(httpx.MockTransport(lambda request: httpx.Response(200)))
    with httpx.Client(transport=transport) as client:
        client.get("https://deploy-test/")
    # A keyed limiter (issue 16): its families are per limiter, never per key.
    keyed = adm.KeyedTokenBucket(rate=1, name="deploy-test")
    assert keyed.try_acquire("user:1")
    # A shared-memory store (issue 16) exported by this process: its host-wide families.
    shared = adm.stores.SharedMemory(f"deploy-test-{os.getpid()}")
    try:
        shared_limiters = [
            adm.Semaphore(2, name="deploy-test", store=shared),
            adm.KeyedTokenBucket(rate=1, name="deploy-test-keyed", store=shared, max_keys=16),
        ]
        assert shared_limiters[1].try_acquire("user:1")
    except BaseException:
        shared.unlink()
        raise
    remove_shared = shared.export_metrics()
    # A bucket in a network store (issue 17) whose store failed once ("open": admitted).
    store = adm.stores.MemoryStore()
    remote = adm.TokenBucket(rate=1, name="deploy-test", store=store, on_store_error="open")
    store.fail()
    asyncio.run(remote.acquire())
    remove_pools = adm.metrics.add_source(lambda: pool_families([pools.stats("deploy-test")]))
    try:
        text = prometheus_client.generate_latest(registry).decode()
    finally:
        remove_pools()
        remove_shared()
        shared.unlink()
        sem.release()
    del keyed, shared_limiters  # (alive until the scrape above)
    names = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(s.name for s in family.samples)
    return names


def test_every_metric_the_dashboard_queries_is_exported(exported_names: set[str]) -> None:
    queried = {m for e in dashboard_exprs() for m in re.findall(r"\badmission_[a-z0-9_]+", e)}
    assert queried, "the dashboard queries no admission metric?"
    missing = queried - exported_names
    assert not missing, f"the dashboard queries metrics the exporter does not report: {missing}"
    # And the panels together show every family the exporter has (nothing left unshown).
    families = {n for n in exported_names if n.startswith("admission_")}
    shown = {re.sub(r"_(bucket|sum|count|total)$", "", m) for m in queried}
    unshown = {f for f in families if re.sub(r"_(bucket|sum|count|total)$", "", f) not in shown}
    assert not unshown, f"exported but on no panel: {unshown}"
