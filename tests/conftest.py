"""Shared pytest configuration: hypothesis profiles (``HYPOTHESIS_PROFILE=ci|dev|thorough``),
and the ``registry`` fixture of the metrics tests (unit and integration)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, settings

if TYPE_CHECKING:
    import prometheus_client

settings.register_profile("dev", max_examples=100, deadline=None)
settings.register_profile(
    "ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("thorough", max_examples=2_000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


@pytest.fixture
def registry() -> Iterator[prometheus_client.CollectorRegistry]:
    """A fresh Prometheus registry with admission's collector registered (from then on, dropped
    primitives keep their counts in the series); unregistered after the test."""
    import prometheus_client

    import admission as adm

    reg = prometheus_client.CollectorRegistry()
    adm.metrics.register(reg)
    yield reg
    adm.metrics.unregister(reg)
