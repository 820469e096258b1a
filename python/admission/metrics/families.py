"""The neutral model of metric families and the registry of their sources.

`Family`, `Sample` and `HistogramSample` describe what a scrape reports, independently of the
exporter (Prometheus, OpenTelemetry); `add_source` adds a source of families to every exporter.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from admission.stats import WaitHistogram

__all__ = [
    "PREFIX",
    "UNNAMED",
    "Family",
    "HistogramSample",
    "Sample",
    "Source",
    "add_source",
    "le_label",
    "remove_source",
]

PREFIX = "admission_"
"""Prefix of every metric name."""
UNNAMED = "unnamed"
"""The ``limiter`` label of the series that aggregates the unnamed primitives of a kind."""

_OUTCOMES = ("admitted", "rejected", "timeout", "cancelled")


def le_label(bound: float) -> str:
    """A histogram bucket's upper bound as its ``le`` label: ``"0.001"``, ``"1e-06"``,
    ``"+Inf"`` (Python's float repr, as every admission exporter has written them)."""
    return "+Inf" if bound == math.inf else repr(float(bound))


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

    @classmethod
    def of(cls, labels: Mapping[str, str], wait: WaitHistogram) -> HistogramSample:
        """The sample of a wait histogram (its buckets made cumulative, ``+Inf`` last)."""
        bounds = (*wait.bounds, math.inf)
        return cls(labels, tuple(zip(bounds, wait.cumulative(), strict=True)), wait.sum)


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
