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
  ``limiter="unnamed"`` (`UNNAMED`): there is never one series per object, and keys of keyed
  limiters are never labels. A primitive that is dropped keeps its counts in its series'
  counters, so they never go down.

The metrics (see the README's "Metrics" section for the full table):

=====================================  =========  ==================================================
``admission_limiters``                 gauge      live primitives in the series
``admission_permits_in_use``           gauge      semaphore permits held
``admission_permits_limit``            gauge      semaphore limits
``admission_high_water``               gauge      most permits ever held at once
``admission_waiters``                  gauge      requests waiting now
``admission_oldest_wait_seconds``      gauge      how long the longest current waiter has waited
``admission_tokens_available``         gauge      cost ``try_acquire`` would admit now (rate limits)
``admission_tokens_capacity``          gauge      burst (token bucket) / limit (sliding window)
``admission_acquisitions_total``       counter    requests by ``outcome``
``admission_admitted_cost_total``      counter    sum of admitted costs (tokens, permits)
``admission_wait_seconds``             histogram  how long admitted requests waited
=====================================  =========  ==================================================

Other parts of the library (and applications) add their own families with `add_source`.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, final

from admission import _registry
from admission.concurrency import Semaphore
from admission.rate import SlidingWindow, TokenBucket
from admission.stats import WaitHistogram

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import CollectorRegistry

__all__ = [
    "PREFIX",
    "UNNAMED",
    "Exporter",
    "Family",
    "HistogramSample",
    "LimiterSeries",
    "Sample",
    "add_source",
    "collect",
    "limiters",
    "otel",
    "register",
    "remove_source",
    "serve",
    "unregister",
]

PREFIX = "admission_"
"""Prefix of every metric name."""
UNNAMED = "unnamed"
"""The ``limiter`` label of the series that aggregates the unnamed primitives of a kind."""

_log = logging.getLogger("admission.metrics")

Kind = Literal["semaphore", "token_bucket", "sliding_window"]
_OUTCOMES = ("admitted", "rejected", "timeout", "cancelled")


# ---------------------------------------------------------------------------------------------
# A neutral model of metric families, shared by the Prometheus and OpenTelemetry exporters
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sample:
    """One value of a gauge or counter family, with its labels."""

    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True, slots=True)
class HistogramSample:
    """One histogram: ``buckets`` are ``(upper bound, cumulative count)``, the last ``inf``."""

    labels: Mapping[str, str]
    buckets: tuple[tuple[float, int], ...]
    sum: float

    @property
    def count(self) -> int:
        return self.buckets[-1][1] if self.buckets else 0


@dataclass(frozen=True, slots=True)
class Family:
    """A metric family: a name, its type and its samples.

    Counter names carry no ``_total`` suffix here (``admission_acquisitions``); the Prometheus
    exposition adds it. Every sample of a family has the same label names.
    """

    name: str
    type: Literal["gauge", "counter", "histogram"]
    help: str
    samples: tuple[Sample, ...] | tuple[HistogramSample, ...]
    unit: str = ""


Source = Callable[[], Iterable[Family]]
"""Something that reports metric families at scrape time (see `add_source`)."""

_sources_lock = threading.Lock()
_sources: list[Source] = []


def add_source(source: Source) -> Callable[[], None]:
    """Adds a source of metric families to every exporter; returns a function removing it.

    ``source()`` is called at each scrape, on the exporter's thread: it should only read
    figures that are already kept (no I/O, no locks held for long). Families it returns with
    a name another source also returns are merged (their label names must then agree).
    Names should start with `PREFIX` (``admission_pool_in_use``, ...). A source that raises
    is logged and skipped for that scrape; the others are still exported.

    >>> import admission as adm
    >>> def queue_depth():
    ...     yield adm.metrics.Family("admission_demo_queue", "gauge", "Jobs queued.",
    ...                              (adm.metrics.Sample({"queue": "main"}, 3.0),))
    >>> remove = adm.metrics.add_source(queue_depth)
    >>> [f.samples for f in adm.metrics.collect() if f.name == "admission_demo_queue"]
    [(Sample(labels={'queue': 'main'}, value=3.0),)]
    >>> remove()
    """
    with _sources_lock:
        _sources.append(source)

    def remove() -> None:
        remove_source(source)

    return remove


def remove_source(source: Source) -> None:
    """Removes a source added with `add_source` (no error if it is not there)."""
    with _sources_lock:
        if source in _sources:
            _sources.remove(source)


# ---------------------------------------------------------------------------------------------
# The primitives, aggregated per (kind, name)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LimiterSeries:
    """The figures of one ``(kind, limiter)`` series at one instant: the sum over the live
    primitives of that kind and name (and, for the counters and the histogram, over the
    dropped ones). Gauges that do not apply to the kind are None."""

    kind: Kind
    limiter: str
    primitives: int
    """Live primitives in the series."""
    waiters: int
    admitted: int
    admitted_cost: int
    rejected: int
    timed_out: int
    cancelled: int
    wait: WaitHistogram
    oldest_wait: float = 0.0
    in_use: int | None = None
    limit: int | None = None
    high_water: int | None = None
    tokens_available: int | None = None
    tokens_capacity: int | None = None

    @property
    def utilization(self) -> float | None:
        """How full the series is, 0.0 to 1.0 (more if a semaphore's limit was lowered below
        its holders): ``in_use / limit`` for semaphores, ``1 - tokens_available /
        tokens_capacity`` for rate limiters. None when no live primitive is in the series."""
        if self.primitives == 0:
            return None
        if self.in_use is not None and self.limit:
            return self.in_use / self.limit
        if self.tokens_available is not None and self.tokens_capacity:
            return 1.0 - self.tokens_available / self.tokens_capacity
        return None


def _kind_of(obj: object) -> Kind | None:
    if isinstance(obj, Semaphore):
        return "semaphore"
    if isinstance(obj, TokenBucket):
        return "token_bucket"
    if isinstance(obj, SlidingWindow):
        return "sliding_window"
    return None


def _tokens_available(limiter: TokenBucket | SlidingWindow) -> int | None:
    """The largest cost ``try_acquire`` would admit right now: ``peek(1).remaining + 1`` when a
    cost of 1 would be admitted, else 0 (nothing fits, or waiters are ahead)."""
    try:
        d = limiter.peek(1)
    except Exception:
        # A LoopClock limiter outside its loop (the exporter's thread): no reading.
        return None
    return d.remaining + 1 if d.allowed else 0


class _Acc:
    """Accumulates one series."""

    __slots__ = (
        "available",
        "capacity",
        "counters",
        "counts",
        "high_water",
        "in_use",
        "limit",
        "oldest",
        "primitives",
        "sum",
        "waiters",
    )

    def __init__(self) -> None:
        self.primitives = 0
        self.waiters = 0
        self.oldest = 0.0
        self.counters = [0, 0, 0, 0, 0]
        self.counts: list[int] | None = None
        self.sum = 0.0
        self.in_use = 0
        self.limit = 0
        self.high_water = 0
        self.available: int | None = None
        self.capacity = 0

    def add_counts(self, counters: Iterable[int], counts: list[int], total: float) -> None:
        self.counters = [a + b for a, b in zip(self.counters, counters, strict=True)]
        self.counts = (
            counts
            if self.counts is None
            else [a + b for a, b in zip(self.counts, counts, strict=True)]
        )
        self.sum += total


def limiters() -> list[LimiterSeries]:
    """Every ``(kind, limiter)`` series now, sorted by kind and name.

    >>> import admission as adm
    >>> a, b = adm.TokenBucket(10, name="doc-api"), adm.TokenBucket(10, name="doc-api")
    >>> a.try_acquire(3), b.try_acquire()
    (True, True)
    >>> api = next(s for s in adm.metrics.limiters() if s.limiter == "doc-api")
    >>> api.primitives, api.admitted, api.admitted_cost, api.tokens_available
    (2, 2, 4, 16)
    """
    objs, retired = _registry.snapshot()
    accs: dict[tuple[Kind, str], _Acc] = {}

    def acc(kind: Kind, name: str | None) -> _Acc:
        key = (kind, UNNAMED if name is None else name)
        a = accs.get(key)
        if a is None:
            a = accs[key] = _Acc()
        return a

    for obj in objs:
        kind = _kind_of(obj)
        if kind is None:
            continue
        a = acc(kind, obj.name)
        a.primitives += 1
        _bounds, counts, total = obj._wait_histogram()
        a.add_counts(obj._counters(), counts, total)
        a.waiters += obj.waiting
        if isinstance(obj, Semaphore):
            a.in_use += obj.in_use
            a.limit += obj.limit
            a.high_water += obj.high_water
            a.oldest = max(a.oldest, obj._oldest_wait())
        else:
            tokens = _tokens_available(obj)
            if tokens is not None:
                a.available = tokens + (a.available or 0)
            a.capacity += obj.burst if isinstance(obj, TokenBucket) else obj.limit
    for (kind_s, name), r in retired.items():
        kind = _kind_of_name(kind_s)
        if kind is not None:
            acc(kind, name).add_counts(r.counters, r.counts, r.sum)

    out = []
    for (kind, label), a in sorted(accs.items()):
        hist = (
            WaitHistogram.empty()
            if a.counts is None
            else WaitHistogram(WaitHistogram.empty().bounds, tuple(a.counts), a.sum)
        )
        admitted, admitted_cost, rejected, timed_out, cancelled = a.counters
        live = a.primitives > 0
        sem = kind == "semaphore"
        out.append(
            LimiterSeries(
                kind=kind,
                limiter=label,
                primitives=a.primitives,
                waiters=a.waiters,
                admitted=admitted,
                admitted_cost=admitted_cost,
                rejected=rejected,
                timed_out=timed_out,
                cancelled=cancelled,
                wait=hist,
                oldest_wait=a.oldest,
                in_use=a.in_use if sem and live else None,
                limit=a.limit if sem and live else None,
                high_water=a.high_water if sem and live else None,
                tokens_available=a.available if not sem and live else None,
                # (None too when no limiter of the series could be read: see _tokens_available)
                tokens_capacity=a.capacity if not sem and live else None,
            )
        )
    return out


def _kind_of_name(kind: str) -> Kind | None:
    if kind == "semaphore":
        return "semaphore"
    if kind == "token_bucket":
        return "token_bucket"
    if kind == "sliding_window":
        return "sliding_window"
    return None


def _gauge(
    name: str, help: str, series: list[LimiterSeries], value: Callable[[LimiterSeries], Any]
) -> Family:
    samples = tuple(
        Sample({"kind": s.kind, "limiter": s.limiter}, float(v))
        for s in series
        if (v := value(s)) is not None
    )
    return Family(PREFIX + name, "gauge", help, samples)


def _primitive_families() -> list[Family]:
    series = limiters()
    live = [s for s in series if s.primitives > 0]
    acquisitions = tuple(
        Sample({"kind": s.kind, "limiter": s.limiter, "outcome": outcome}, float(v))
        for s in series
        for outcome, v in zip(
            _OUTCOMES, (s.admitted, s.rejected, s.timed_out, s.cancelled), strict=True
        )
    )
    histograms = tuple(
        HistogramSample(
            {"kind": s.kind, "limiter": s.limiter},
            tuple(zip((*s.wait.bounds, math.inf), s.wait.cumulative(), strict=True)),
            s.wait.sum,
        )
        for s in series
    )
    return [
        _gauge("limiters", "Live primitives in the series.", series, lambda s: s.primitives),
        _gauge("permits_in_use", "Semaphore permits held now.", live, lambda s: s.in_use),
        _gauge("permits_limit", "Semaphore permit limits.", live, lambda s: s.limit),
        _gauge(
            "high_water",
            "Most semaphore permits ever held at once (summed over the series' semaphores).",
            live,
            lambda s: s.high_water,
        ),
        _gauge("waiters", "Requests waiting to be admitted now.", live, lambda s: s.waiters),
        _gauge(
            "oldest_wait_seconds",
            "How long the longest current semaphore waiter has waited so far.",
            [s for s in live if s.kind == "semaphore"],
            lambda s: s.oldest_wait,
        ),
        _gauge(
            "tokens_available",
            "Largest cost a rate limiter's try_acquire would admit now "
            "(peek(1).remaining + 1, or 0 when nothing fits or waiters are ahead).",
            live,
            lambda s: s.tokens_available,
        ),
        _gauge(
            "tokens_capacity",
            "Rate limiter capacity: a token bucket's burst, a sliding window's limit.",
            live,
            lambda s: s.tokens_capacity,
        ),
        Family(
            PREFIX + "acquisitions",
            "counter",
            "Requests by outcome: admitted, rejected (refused at once), timeout, cancelled.",
            acquisitions,
        ),
        Family(
            PREFIX + "admitted_cost",
            "counter",
            "Sum of the costs (tokens, permits) of the admitted requests.",
            tuple(
                Sample({"kind": s.kind, "limiter": s.limiter}, float(s.admitted_cost))
                for s in series
            ),
        ),
        Family(
            PREFIX + "wait_seconds",
            "histogram",
            "How long admitted requests waited for admission (0 for immediate admissions).",
            histograms,
            unit="seconds",
        ),
    ]


def collect() -> list[Family]:
    """Every family now: the primitives', then each source's, merged by name."""
    families = _primitive_families()
    with _sources_lock:
        sources = list(_sources)
    for source in sources:
        try:
            families.extend(source())
        except Exception:
            _log.exception("metrics source %r failed; skipped in this scrape", source)
    merged: dict[str, Family] = {}
    for f in families:
        prev = merged.get(f.name)
        if prev is None:
            merged[f.name] = f
        elif prev.type != f.type:
            _log.error(
                "metric family %s reported as %s and %s; kept the first", f.name, prev.type, f.type
            )
        else:
            samples: Any = prev.samples + f.samples
            merged[f.name] = Family(prev.name, prev.type, prev.help, samples, prev.unit)
    return list(merged.values())


# ---------------------------------------------------------------------------------------------
# Prometheus
# ---------------------------------------------------------------------------------------------


def _float_str(v: float) -> str:
    if v == math.inf:
        return "+Inf"
    return repr(float(v))


class _Collector:
    """A prometheus_client custom collector: reads everything at scrape time."""

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.metrics_core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        for f in collect():
            names = list(f.samples[0].labels) if f.samples else []
            if f.type == "histogram":
                h = HistogramMetricFamily(f.name, f.help, labels=names, unit=f.unit)
                for s in f.samples:
                    assert isinstance(s, HistogramSample)
                    h.add_metric(
                        [s.labels[n] for n in names],
                        [(_float_str(le), float(c)) for le, c in s.buckets],
                        s.sum,
                    )
                yield h
                continue
            fam: GaugeMetricFamily | CounterMetricFamily
            if f.type == "counter":
                fam = CounterMetricFamily(f.name, f.help, labels=names, unit=f.unit)
            else:
                fam = GaugeMetricFamily(f.name, f.help, labels=names, unit=f.unit)
            for s in f.samples:
                assert isinstance(s, Sample)
                fam.add_metric([s.labels[n] for n in names], s.value)
            yield fam

    def describe(self) -> list[Metric]:
        # Nothing to check at registration; names come and go with the primitives.
        return []


_registered_lock = threading.Lock()
_registered: dict[int, tuple[Any, _Collector]] = {}


def register(registry: CollectorRegistry | None = None) -> _Collector:
    """Installs the collector in ``registry`` (default: ``prometheus_client.REGISTRY``).

    Zero work per call: a scrape reads the native counters of every live primitive. Calling
    it again for the same registry returns the installed collector. From the first call on,
    dropped primitives keep their counts in their series (see the module docs).
    """
    if registry is None:
        from prometheus_client import REGISTRY

        registry = REGISTRY
    with _registered_lock:
        found = _registered.get(id(registry))
        if found is not None and found[0] is registry:
            return found[1]
        _registry.track_retired()
        collector = _Collector()
        registry.register(collector)
        _registered[id(registry)] = (registry, collector)
        return collector


def unregister(registry: CollectorRegistry | None = None) -> None:
    """Removes the collector installed by `register` from ``registry`` (if any)."""
    if registry is None:
        from prometheus_client import REGISTRY

        registry = REGISTRY
    with _registered_lock:
        found = _registered.pop(id(registry), None)
    if found is not None:
        registry.unregister(found[1])


@final
class Exporter:
    """A running HTTP exporter started by `serve`. Stop it with `stop` (or ``with``)."""

    __slots__ = ("_server", "_thread", "addr", "port")

    def __init__(self, server: Any, thread: threading.Thread, addr: str) -> None:
        self._server = server
        self._thread = thread
        self.addr = addr
        self.port: int = server.server_port
        """The port it listens on (the one chosen by the system when ``serve(port=0)``)."""

    @property
    def url(self) -> str:
        host = f"[{self.addr}]" if ":" in self.addr else self.addr
        return f"http://{host}:{self.port}/metrics"

    def stop(self) -> None:
        """Stops serving and waits for the server's thread. Idempotent."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()

    def __enter__(self) -> Exporter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"Exporter({self.url!r})"


def serve(
    port: int = 9464, addr: str = "127.0.0.1", registry: CollectorRegistry | None = None
) -> Exporter:
    """Serves ``/metrics`` over HTTP on ``addr:port`` (on a daemon thread) and returns the
    running `Exporter`; call its ``stop()`` to shut it down. ``port=0`` picks a free port.

    Registers the collector in ``registry`` first (default ``prometheus_client.REGISTRY``,
    which also carries prometheus_client's process and runtime metrics). The default address
    is loopback: exposing metrics beyond the host is a decision to make explicitly.
    """
    from prometheus_client import REGISTRY, start_http_server

    registry = REGISTRY if registry is None else registry
    register(registry)
    server, thread = start_http_server(port, addr=addr, registry=registry)
    return Exporter(server, thread, addr)


# `adm.metrics.otel.register(meter)`; imports OpenTelemetry only when called.
from admission.metrics import otel  # noqa: E402
