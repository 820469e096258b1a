"""The ``admission_pool_*`` families without a database: shapes, aggregation by pool name,
registration with the exporters, and the README's table (tests/integration/test_pool_metrics.py
checks the values against a real PostgreSQL)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import admission as adm
from admission.metrics import HistogramSample, Sample
from admission.pools import metrics as pool_metrics
from admission.pools.metrics import OUTCOMES, families
from admission.stats import WaitHistogram

README = Path(__file__).parents[2] / "README.md"


def stats(name: str = "rag", **changes: object) -> adm.PoolStats:
    pools = adm.PoolManager({name: adm.PoolConfig("postgresql://app:pw@db/rag", max_size=4)})
    return dataclasses.replace(pools.stats(name), **changes)  # type: ignore[arg-type]


def by_name(fams: list[adm.metrics.Family]) -> dict[str, adm.metrics.Family]:
    return {f.name: f for f in fams}


def test_every_family_is_there_even_without_pools() -> None:
    fams = families([])
    assert all(f.samples == () for f in fams)
    assert {f.name for f in fams} == {f.name for f in families([stats()])}
    assert len({f.name for f in fams}) == len(fams)


def test_one_series_per_pool_name_and_same_names_added_up() -> None:
    wait = WaitHistogram.empty()
    one_wait = WaitHistogram(wait.bounds, (1, *wait.counts[1:]), 0.0)
    a = stats(state="up", in_use=2, size=3, acquired=10, timed_out=1, reconnects=1, wait=one_wait)
    a = dataclasses.replace(a, capacity=2, capacity_limited=True, capacity_refusals=3)
    b = stats(state="down", in_use=1, size=1, acquired=5, unavailable=7, wait=one_wait)
    b = dataclasses.replace(b, capacity=4, capacity_refusals=1)
    other = stats("other", state="up", in_use=4, capacity=4)
    f = by_name(families([a, b, other]))

    def value(name: str, pool: str, **labels: str) -> float:
        (sample,) = [
            s
            for s in f[name].samples
            if isinstance(s, Sample) and s.labels == {"pool": pool, **labels}
        ]
        return sample.value

    assert value("admission_pool_up", "rag") == 0  # one of them is down
    assert value("admission_pool_up", "other") == 1
    assert value("admission_pool_in_use", "rag") == 3
    assert value("admission_pool_size", "rag") == 4
    assert value("admission_pool_max_size", "rag") == 8
    assert value("admission_pool_acquisitions", "rag", outcome="acquired") == 15
    assert value("admission_pool_acquisitions", "rag", outcome="timeout") == 1
    assert value("admission_pool_acquisitions", "rag", outcome="unavailable") == 7
    assert value("admission_pool_reconnects", "rag") == 1
    assert value("admission_pool_capacity_limited", "rag") == 1  # one of them is limited
    assert value("admission_pool_capacity_limited", "other") == 0
    assert value("admission_pool_capacity", "rag") == 6
    assert value("admission_pool_capacity_refusals", "rag") == 4
    outcomes = {s.labels["outcome"] for s in f["admission_pool_acquisitions"].samples}
    assert outcomes == set(OUTCOMES)
    assert f["admission_pool_acquisitions"].type == "counter"
    hist = f["admission_pool_acquire_wait_seconds"]
    assert hist.type == "histogram"
    rag = [s for s in hist.samples if s.labels == {"pool": "rag"}]
    assert len(rag) == 1
    assert isinstance(rag[0], HistogramSample)
    assert rag[0].count == 2
    # Only the pool label (and the outcome): never a DSN, a host or a connection.
    labels = {k for fam in f.values() for s in fam.samples for k in s.labels}
    assert labels == {"pool", "outcome"}


def test_a_pool_is_exported_while_tracked() -> None:
    pools = adm.PoolManager({"tracked-pool": adm.PoolConfig("postgresql://app@db/x")})
    pool = pools._pools["tracked-pool"]

    def exported() -> set[str]:
        return {
            f.name
            for f in adm.metrics.collect()
            if any(s.labels.get("pool") == "tracked-pool" for s in f.samples)
        }

    assert exported() == set()
    pool_metrics.track(pool)
    try:
        assert "admission_pool_in_use" in exported()
    finally:
        pool_metrics.untrack(pool)
    assert exported() == set()


def test_the_readme_documents_every_pool_metric() -> None:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Metrics") :]
    documented = set(re.findall(r"^\| `(admission_pool_[a-z_]+)` \|", section, re.MULTILINE))
    exported = {f.name + ("_total" if f.type == "counter" else "") for f in families([stats()])}
    assert documented == exported
