"""The Prometheus side: a prometheus_client collector (`register`) and an HTTP exporter
(`serve`), both reading the primitives' native figures at scrape time.

The collector hands prometheus_client one object per sample, which its exposition then
formats one by one: fine for hundreds of series. `serve` renders admission's families
itself (natively, in chunks, see `admission.metrics.exposition`) and asks prometheus_client
only for the registry's other metrics: a scrape of 10,000 series takes tens of milliseconds.
"""

from __future__ import annotations

import errno
import os
import socket
import threading
import zlib
from collections.abc import Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, final

from admission._extras import require
from admission._validate import duration_seconds, positive_int
from admission.errors import PortInUseError
from admission.metrics import exposition, retired
from admission.metrics.families import HistogramSample, Sample, le_label
from admission.metrics.limiters import collect
from admission.metrics.server import App, Request, Response, Server

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import CollectorRegistry

__all__ = ["Exporter", "PortInUseError", "register", "serve", "unregister"]


# ---------------------------------------------------------------------------------------------
# The prometheus_client collector
# ---------------------------------------------------------------------------------------------

# Set on the exporter's thread while it asks prometheus_client for the registry's other
# metrics: the collector then reports nothing, as the exporter renders those families itself.
_exporting = threading.local()


class _Collector:
    """A prometheus_client custom collector: reads everything at scrape time."""

    def collect(self) -> Iterator[Metric]:
        if getattr(_exporting, "active", False):
            return
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
                        [(le_label(le), float(c)) for le, c in s.buckets],
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
    dropped primitives keep their counts in their series, within the bounds of
    `admission.metrics.set_retention`.

    prometheus_client formats each sample in Python: with many thousands of series, export
    with `serve`, which renders admission's families natively.
    """
    require("prometheus_client", "metrics", "admission.metrics.register()")
    if registry is None:
        from prometheus_client import REGISTRY

        registry = REGISTRY
    with _registered_lock:
        found = _registered.get(id(registry))
        if found is not None and found[0] is registry:
            return found[1]
        retired.track()
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


# ---------------------------------------------------------------------------------------------
# The HTTP exporter
# ---------------------------------------------------------------------------------------------


@final
class Exporter:
    """A running HTTP exporter started by `serve`. Stop it with `stop` (or ``with``)."""

    __slots__ = ("_server", "_thread", "addr", "port")

    def __init__(self, server: Server, thread: threading.Thread, addr: str, port: int) -> None:
        self._server = server
        self._thread = thread
        self.addr = addr
        self.port = port
        """The port it listens on (the one chosen by the system when ``serve(port=0)``)."""

    @property
    def url(self) -> str:
        host = f"[{self.addr}]" if ":" in self.addr else self.addr
        return f"http://{host}:{self.port}/metrics"

    @property
    def connections(self) -> int:
        """Client connections open now (at most ``max_connections``)."""
        return self._server.connections

    def stop(self) -> None:
        """Stops serving, closes every connection and waits for the server's thread.
        Idempotent."""
        self._server.stop()
        self._thread.join()

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


def _listen(addr: str, port: int) -> socket.socket:
    family, kind, proto, _, sockaddr = socket.getaddrinfo(
        addr, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        if os.name != "nt":  # on Windows it would let another process take the port
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    return sock


def _accepts_gzip(request: Request) -> bool:
    for item in request.headers.get("accept-encoding", "").split(","):
        coding, _, params = item.partition(";")
        if coding.strip().lower() == "gzip":
            q = params.strip().replace(" ", "")
            return q not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


def _metrics_body(registry: CollectorRegistry, names: list[str] | None) -> Iterator[bytes]:
    yield from exposition.chunks(names)
    from prometheus_client import generate_latest

    _exporting.active = True
    try:
        rest = registry if names is None else registry.restricted_registry(names)
        others = generate_latest(rest)
    finally:
        _exporting.active = False
    if others:
        yield others


def _gzip(body: Iterator[bytes]) -> Iterator[bytes]:
    # Level 1: scrape bodies are repetitive text (about 30:1 even so), and time matters more.
    z = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    try:
        for chunk in body:
            if out := z.compress(chunk):
                yield out
        yield z.flush()
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()


def _app(registry: CollectorRegistry) -> App:
    def app(request: Request) -> Response:
        if request.path == "/favicon.ico":
            return Response(404, [("Content-Length", "0")])
        body = _metrics_body(registry, request.query.get("name[]"))
        headers = [("Content-Type", exposition.CONTENT_TYPE)]
        if _accepts_gzip(request):
            headers.append(("Content-Encoding", "gzip"))
            return Response(200, headers, _gzip(body))
        return Response(200, headers, body)

    return app


def serve(
    port: int = 9464,
    addr: str = "127.0.0.1",
    registry: CollectorRegistry | None = None,
    *,
    max_connections: int = 16,
    idle_timeout: float | str = 10.0,
    send_timeout: float | str = 30.0,
) -> Exporter:
    """Serves ``/metrics`` over HTTP on ``addr:port`` (on one daemon thread) and returns the
    running `Exporter`; call its ``stop()`` to shut it down. ``port=0`` picks a free port.

    Registers the collector in ``registry`` first (default ``prometheus_client.REGISTRY``,
    which also carries prometheus_client's process and runtime metrics): a scrape returns
    admission's families, rendered natively in chunks, and the registry's other metrics.
    The default address is loopback: exposing metrics beyond the host is a decision to make
    explicitly. Every path answers the metrics (in the text format 0.0.4, gzipped when the
    client accepts it), with prometheus_client's ``?name[]=`` filter.

    The server never grows with its clients: one thread; at most ``max_connections``
    connections (one more closes the one that has waited longest for a request, or is
    refused when all are sending); ``idle_timeout`` seconds (or a duration string) to send a
    request after connecting or after the previous response, so idle, half-open and
    trickling clients are closed; ``send_timeout`` for a client to take a whole response.
    A response is rendered as the client reads it: a slow reader holds one chunk of about
    256 KiB and the figures of its scrape, never the whole body.

    One exporter per process: the figures are the process's own limits. With several worker
    processes, give each its own port (the README's "Metrics" section).

    Raises:
        TypeError: ``port`` is not an int (a bool is refused), or ``addr`` not a str;
            ``max_connections`` not an int; a timeout not a number or duration string.
        ValueError: ``port`` is outside 0..65535; ``max_connections`` < 1; a timeout <= 0.
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
    max_connections = positive_int(max_connections, "max_connections")
    idle = duration_seconds(idle_timeout, "idle_timeout", positive=True)
    send = duration_seconds(send_timeout, "send_timeout", positive=True)
    require("prometheus_client", "metrics", "admission.metrics.serve()")
    from prometheus_client import REGISTRY

    registry = REGISTRY if registry is None else registry
    with _registered_lock:
        was_registered = id(registry) in _registered
    register(registry)
    try:
        sock = _listen(addr, port)
    except OSError as e:
        if not was_registered:
            unregister(registry)
        if _is_addr_in_use(e):
            raise PortInUseError(port, addr) from e
        raise
    bound_port: int = sock.getsockname()[1]
    server = Server(
        sock,
        _app(registry),
        max_connections=max_connections,
        idle_timeout=idle,
        send_timeout=send,
    )
    thread = threading.Thread(
        target=server.serve_forever, name=f"admission-metrics-{bound_port}", daemon=True
    )
    thread.start()
    return Exporter(server, thread, addr, bound_port)
