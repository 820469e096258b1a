"""OpenTelemetry export of the same figures as the Prometheus collector (optional).

Needs ``opentelemetry-api`` (and an SDK with a reader/exporter configured by the application).
`register` creates one observable instrument per metric family; their callbacks read the
native counters when the SDK collects, so, as with Prometheus, nothing is done per call.

>>> import admission as adm
>>> from opentelemetry.sdk.metrics import MeterProvider
>>> from opentelemetry.sdk.metrics.export import InMemoryMetricReader
>>> reader = InMemoryMetricReader()
>>> meter = MeterProvider(metric_readers=[reader]).get_meter("admission")
>>> s = adm.Semaphore(4, name="doc-otel")
>>> s.try_acquire()
True
>>> handle = adm.metrics.otel.register(meter)
>>> data = reader.get_metrics_data()
>>> names = {m.name for rm in data.resource_metrics for sm in rm.scope_metrics
...          for m in sm.metrics}
>>> {"admission_permits_in_use", "admission_wait_seconds_bucket"} <= names
True
>>> handle.stop()

Mapping: gauges become observable gauges and counters observable counters (names without the
``_total`` suffix: ``admission_acquisitions``), with the same attributes as the Prometheus
labels. OpenTelemetry has no asynchronous histogram, so ``admission_wait_seconds`` is exported
as three observable counters in the Prometheus layout: ``admission_wait_seconds_bucket``
(cumulative, attribute ``le``: the bucket's upper bound, ``"+Inf"`` last),
``admission_wait_seconds_count`` and ``admission_wait_seconds_sum`` (unit ``s``).

The SDK keeps at most 2,000 attribute sets per instrument by default (its cardinality limit)
and folds the rest into one overflow series; the wait histogram has 27 per limiter (its
buckets), so with more than about 70 named limiters raise the limit with a view:
``MeterProvider(..., views=[View(instrument_name="admission_*",
aggregation_cardinality_limit=100_000)])``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, final

from admission.metrics import retired
from admission.metrics.families import Family, Sample, le_label
from admission.metrics.limiters import collect

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, Meter, Observation

__all__ = ["Registration", "register"]

_UNITS = {"seconds": "s", "": "1"}
# Every instrument's callback runs within one SDK collection: read the primitives once for
# all of them.
_CACHE_SECONDS = 0.5


@final
class Registration:
    """The instruments created by `register`. ``stop()`` makes them report nothing more
    (OpenTelemetry has no way to delete an instrument)."""

    __slots__ = ("_cache", "_lock", "_stopped", "instruments")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cache: tuple[float, dict[str, Family]] | None = None
        self._stopped = False
        self.instruments: list[str] = []
        """Names of the instruments created."""

    def stop(self) -> None:
        self._stopped = True

    def _families(self) -> dict[str, Family]:
        now = time.monotonic()
        with self._lock:
            if self._cache is not None and now - self._cache[0] < _CACHE_SECONDS:
                return self._cache[1]
            families = {f.name: f for f in collect()}
            self._cache = (now, families)
            return families

    def _observe(self, name: str, part: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        from opentelemetry.metrics import Observation

        def callback(options: CallbackOptions) -> Iterable[Observation]:
            if self._stopped:
                return []
            family = self._families().get(name)
            if family is None:
                return []
            out: list[Observation] = []
            for s in family.samples:
                attrs = dict(s.labels)
                if isinstance(s, Sample):
                    out.append(Observation(s.value, attrs))
                elif part == "bucket":
                    for le, count in s.buckets:
                        out.append(Observation(count, {**attrs, "le": le_label(le)}))
                elif part == "count":
                    out.append(Observation(s.count, attrs))
                else:
                    out.append(Observation(s.sum, attrs))
            return out

        return callback


def register(meter: Meter) -> Registration:
    """Creates observable instruments on ``meter`` for every metric family reported now
    (the primitives' and those of every source added with `admission.metrics.add_source`).

    Call it once per meter, after the sources are added: a family that a source only starts
    reporting later has no instrument (OpenTelemetry instruments are created up front).
    """
    reg = Registration()
    retired.track()
    for family in collect():
        unit = _UNITS.get(family.unit, family.unit)
        if family.type == "gauge":
            meter.create_observable_gauge(
                family.name,
                callbacks=[reg._observe(family.name, "value")],
                unit=unit,
                description=family.help,
            )
            reg.instruments.append(family.name)
        elif family.type == "counter":
            meter.create_observable_counter(
                family.name,
                callbacks=[reg._observe(family.name, "value")],
                unit=unit,
                description=family.help,
            )
            reg.instruments.append(family.name)
        else:
            for part, part_unit in (("bucket", "1"), ("count", "1"), ("sum", unit)):
                meter.create_observable_counter(
                    f"{family.name}_{part}",
                    callbacks=[reg._observe(family.name, part)],
                    unit=part_unit,
                    description=f"{family.help} ({part})",
                )
                reg.instruments.append(f"{family.name}_{part}")
    return reg
