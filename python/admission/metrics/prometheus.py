"""The Prometheus side: a prometheus_client collector (`register`) and an HTTP exporter
(`serve`), both reading `admission.metrics.collect` at scrape time."""

from __future__ import annotations

import errno
import math
import threading
from collections.abc import Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, final

from admission import _registry
from admission._extras import require
from admission.errors import PortInUseError
from admission.metrics.families import HistogramSample, Sample
from admission.metrics.limiters import collect

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import CollectorRegistry

__all__ = ["Exporter", "PortInUseError", "register", "serve", "unregister"]


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
    require("prometheus_client", "metrics", "admission.metrics.register()")
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
    require("prometheus_client", "metrics", "admission.metrics.unregister()")
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


def _is_addr_in_use(e: OSError) -> bool:
    # POSIX errno, or Windows' WSAEADDRINUSE.
    return e.errno == errno.EADDRINUSE or getattr(e, "winerror", None) == 10048


def serve(
    port: int = 9464, addr: str = "127.0.0.1", registry: CollectorRegistry | None = None
) -> Exporter:
    """Serves ``/metrics`` over HTTP on ``addr:port`` (on a daemon thread) and returns the
    running `Exporter`; call its ``stop()`` to shut it down. ``port=0`` picks a free port.

    Registers the collector in ``registry`` first (default ``prometheus_client.REGISTRY``,
    which also carries prometheus_client's process and runtime metrics). The default address
    is loopback: exposing metrics beyond the host is a decision to make explicitly.

    One exporter per process: the figures are the process's own limits. With several worker
    processes, give each its own port (the README's "Metrics" section).

    Raises:
        TypeError: ``port`` is not an int (a bool is refused), or ``addr`` not a str.
        ValueError: ``port`` is outside 0..65535.
        PortInUseError: the port is taken (an `OSError`, ``errno.EADDRINUSE``), e.g. by
            another worker process that called ``serve`` with the same port. The collector
            is left as it was (not registered by this call).
    """
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"port must be an int in 0..65535 (0: a free port), got {port!r}")
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be in 0..65535 (0: a free port), got {port!r}")
    if not isinstance(addr, str):
        raise TypeError(f"addr must be a str (an IP address or host name), got {addr!r}")
    require("prometheus_client", "metrics", "admission.metrics.serve()")
    from prometheus_client import REGISTRY, start_http_server

    registry = REGISTRY if registry is None else registry
    with _registered_lock:
        was_registered = id(registry) in _registered
    register(registry)
    try:
        server, thread = start_http_server(port, addr=addr, registry=registry)
    except OSError as e:
        if not was_registered:
            unregister(registry)
        if _is_addr_in_use(e):
            raise PortInUseError(port, addr) from e
        raise
    return Exporter(server, thread, addr)
