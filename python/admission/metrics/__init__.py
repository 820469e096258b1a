"""Metrics: every limit in the process, read from the native counters at scrape time.

Nothing is counted for the exporter: the primitives already keep exact native counters (and a
wait-time histogram written only by waiters), and a scrape reads them. Calls cost the same
with metrics registered or not.

>>> import admission as adm
>>> import prometheus_client
>>> registry = prometheus_client.CollectorRegistry()
>>> llm = adm.Semaphore(10, name="doc-llm")
>>> llm.try_acquire()
True
>>> collector = adm.metrics.register(registry)
>>> registry.get_sample_value(
...     "admission_permits_in_use", {"kind": "semaphore", "limiter": "doc-llm"})
1.0
>>> registry.get_sample_value("admission_acquisitions_total",
...     {"kind": "semaphore", "limiter": "doc-llm", "outcome": "admitted"})
1.0
>>> llm.release()
>>> adm.metrics.unregister(registry)

Series and labels:

- ``kind``: ``semaphore``, ``token_bucket`` or ``sliding_window``.
- ``limiter``: the primitive's ``name``. Primitives of one kind with the same name share one
  series (their figures are added up), and so do all unnamed primitives of a kind, under
  ``limiter="unnamed"`` (`UNNAMED`): there is never one series per object. A primitive that
  is dropped keeps its counts in its series' counters, so they never go down; a name whose
  primitives are all dropped leaves the exporters after a while, and only so many such names
  are kept (`set_retention`).

The metrics (see the README's "Metrics" section for the full table):

========================================  =========  ===============================================
``admission_limiters``                    gauge      live primitives in the series
``admission_permits_in_use``              gauge      semaphore permits held
``admission_permits_limit``               gauge      semaphore limits
``admission_high_water``                  gauge      most permits ever held at once
``admission_waiters``                     gauge      requests waiting now
``admission_oldest_wait_seconds``         gauge      how long the longest current waiter has waited
``admission_tokens_available``            gauge      cost ``try_acquire`` admits now (rate limits)
``admission_tokens_capacity``             gauge      burst (token bucket) / limit (sliding window)
``admission_acquisitions_total``          counter    requests by ``outcome``
``admission_admitted_cost_total``         counter    sum of admitted costs (tokens, permits)
``admission_wait_seconds``                histogram  how long admitted requests waited
``admission_circuit_state``               gauge      a named circuit breaker's state (0, 1, 2)
``admission_circuit_calls_total``         counter    calls through a named breaker by ``outcome``
``admission_retries_total``               counter    a named retry's decisions by ``outcome``
``admission_retry_calls_total``           counter    calls through a named retry by ``outcome``
``admission_store_errors_total``          counter    failed round trips to a network store
``admission_store_fallbacks_total``       counter    requests decided without the store, by ``mode``
``admission_store_acquisitions_total``    counter    network-store limiters' requests by ``outcome``
========================================  =========  ===============================================

Four of the last seven are the sources of `admission.breaker` and `admission.retry` (label
``breaker`` or ``retry``: the name; unnamed ones have no series); the last three,
`admission.stores.remote`'s (labels ``store``, the store's label without credentials, and
``limiter``: this process's requests to limiters in PostgreSQL or Redis).

Other parts of the library (and applications) add their own families with `add_source`.
"""

from __future__ import annotations

# `adm.metrics.otel.register(meter)`; imports OpenTelemetry only when called.
from admission.metrics import otel
from admission.metrics.families import (
    PREFIX,
    UNNAMED,
    Family,
    HistogramSample,
    Sample,
    add_source,
    remove_source,
)
from admission.metrics.families import Source as Source
from admission.metrics.limiters import Kind as Kind
from admission.metrics.limiters import LimiterSeries, collect, limiters
from admission.metrics.prometheus import (
    Exporter,
    PortInUseError,
    register,
    serve,
    unregister,
)
from admission.metrics.retired import set_retention

__all__ = [
    "PREFIX",
    "UNNAMED",
    "Exporter",
    "Family",
    "HistogramSample",
    "LimiterSeries",
    "PortInUseError",
    "Sample",
    "add_source",
    "collect",
    "limiters",
    "otel",
    "register",
    "remove_source",
    "serve",
    "set_retention",
    "unregister",
]
