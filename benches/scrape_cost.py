"""What a scrape costs with many named limiters (issue 12, case 7), and how long it stalls
the application.

For each size N: N named primitives (a third each semaphores, token buckets and sliding
windows, one admission each), so N ``(kind, limiter)`` series of ~39 samples. Paths:

- ``serve``: a scrape of ``adm.metrics.serve`` over HTTP on loopback by a client process
  (identity encoding; then ``Accept-Encoding: gzip``, as Prometheus sends it), timed by the
  client from connecting to the last byte;
- ``collector``: ``prometheus_client.generate_latest`` of a registry holding the collector
  installed by ``adm.metrics.register``;
- ``reference``: ``generate_latest`` of prometheus_client's own metrics with the same samples
  (per label set: 5 gauges, a counter with 4 outcomes, a counter, a histogram with admission's
  26 buckets; ``_created`` samples off), for scale.

Each round scrapes twice: once alone, once while an application thread runs
``try_acquire(); release()`` on a semaphore in a loop. The longest gap between two of its
iterations is the stall it saw; the same thread is then watched for as long with no scrape
(10 s at most), which gives the host's own noise. Times are wall clock, the median of
``--rounds``; stalls the longest over the rounds. Where the exporter renders natively, the
longest call of each native method during one exposition, in thread CPU time: how long one
call can hold the GIL (``Scrape.sort`` releases it). Last, the floor: the longest stall while
another thread merely runs Python for a second (the GIL is shared however little it does).

    .venv/bin/python benches/scrape_cost.py [N ...] [--rounds R] [--paths serve,collector,reference]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any, NamedTuple, Protocol

import prometheus_client

import admission as adm
from admission import _native


class AppThread:
    """An application thread doing acquire/release in a loop while it is watched (it sleeps
    otherwise); records the longest gap between two of its iterations."""

    def __init__(self) -> None:
        self.sem = adm.Semaphore(1, name="bench-app")
        self.worst = 0.0
        self._running = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        acquire, release, clock = self.sem.try_acquire, self.sem.release, time.perf_counter
        while not self._stop:
            self._running.wait()
            last = clock()
            while self._running.is_set() and not self._stop:
                acquire()
                release()
                now = clock()
                if now - last > self.worst:
                    self.worst = now - last
                last = now

    @contextmanager
    def watch(self) -> Iterator[list[float]]:
        """Runs the loop in the block; the list holds, afterwards, the longest gap in it."""
        out: list[float] = []
        self._running.set()
        time.sleep(0.02)  # it runs
        self.worst = 0.0
        try:
            yield out
        finally:
            out.append(self.worst)
            self._running.clear()

    def stop(self) -> None:
        self._stop = True
        self._running.set()
        self._thread.join()
        self._running.clear()


def make_limiters(n: int) -> list[Any]:
    keep: list[Any] = []
    for i in range(n):
        if i % 3 == 0:
            lim: Any = adm.Semaphore(10, name=f"bench-sem-{i}")
            lim.try_acquire()
            lim.release()
        elif i % 3 == 1:
            lim = adm.TokenBucket(rate=10, name=f"bench-tb-{i}")
            lim.try_acquire()
        else:
            lim = adm.SlidingWindow(limit=10, window=1.0, name=f"bench-sw-{i}")
            lim.try_acquire()
        keep.append(lim)
    return keep


# The scraper is another process, as Prometheus is: it competes for no GIL. It is started
# first (starting a process is not part of a scrape), then told to scrape; it times its own
# request (connecting to the last byte) and prints the seconds and the body's size.
_CLIENT = """
import http.client, sys, time
print("ready", flush=True)
sys.stdin.readline()
start = time.perf_counter()
conn = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=1800)
conn.request("GET", "/metrics", headers={"Accept-Encoding": sys.argv[2]})
response = conn.getresponse()
assert response.status == 200, response.status
size = 0
while chunk := response.read(1 << 20):
    size += len(chunk)
print(time.perf_counter() - start, size, flush=True)
"""


class Scrape(Protocol):
    def prepare(self) -> None: ...
    def run(self) -> tuple[float, int]:
        """(seconds, bytes) of one scrape."""


class HttpScrape:
    def __init__(self, port: int, gzip: bool) -> None:
        self.args = [sys.executable, "-c", _CLIENT, str(port), "gzip" if gzip else "identity"]
        self.child: subprocess.Popen[str] | None = None

    def prepare(self) -> None:
        self.child = subprocess.Popen(
            self.args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.child.stdout is not None
        assert self.child.stdout.readline().strip() == "ready"

    def run(self) -> tuple[float, int]:
        assert self.child is not None
        assert self.child.stdin is not None
        assert self.child.stdout is not None
        with self.child:
            self.child.stdin.write("go\n")
            self.child.stdin.flush()
            seconds, size = self.child.stdout.readline().split()
        assert self.child.wait(timeout=60) == 0
        return float(seconds), int(size)


class InProcess:
    def __init__(self, fn: Callable[[], bytes]) -> None:
        self.fn = fn

    def prepare(self) -> None:
        pass

    def run(self) -> tuple[float, int]:
        start = time.perf_counter()
        size = len(self.fn())
        return time.perf_counter() - start, size


def reference_registry(n: int) -> prometheus_client.CollectorRegistry:
    prometheus_client.disable_created_metrics()
    registry = prometheus_client.CollectorRegistry()
    labels = ["kind", "limiter"]
    gauges = [
        prometheus_client.Gauge(f"ref_gauge_{i}", "A gauge.", labels, registry=registry)
        for i in range(5)
    ]
    outcomes = prometheus_client.Counter(
        "ref_acquisitions", "By outcome.", [*labels, "outcome"], registry=registry
    )
    cost = prometheus_client.Counter("ref_cost", "Cost.", labels, registry=registry)
    hist = prometheus_client.Histogram(
        "ref_wait_seconds", "Waits.", labels, registry=registry, buckets=_native.WAIT_BOUNDS
    )
    for i in range(n):
        lv = ("semaphore", f"ref-{i}")
        for g in gauges:
            g.labels(*lv).set(1)
        for o in ("admitted", "rejected", "timeout", "cancelled"):
            outcomes.labels(*lv, o).inc()
        cost.labels(*lv).inc()
        hist.labels(*lv).observe(0.0)
    return registry


class Row(NamedTuple):
    alone: float
    """Seconds, the application thread asleep."""
    busy: float
    """Seconds, the application thread running."""
    stall: float
    """Longest gap of the application thread during the scrape, seconds."""
    idle_stall: float
    """Longest gap of the application thread during as long a time with no scrape."""
    size: int


def measure(app: AppThread, scrape: Scrape) -> Row:
    scrape.prepare()
    alone, size = scrape.run()
    scrape.prepare()
    with app.watch() as worst:
        busy, _ = scrape.run()
    with app.watch() as idle:
        time.sleep(min(busy, 10.0))
    return Row(alone, busy, worst[0], idle[0], size)


def longest_native_calls() -> dict[str, float]:
    """The longest call of each method of the native scrape during one exposition, in thread
    CPU time (what a call can hold the GIL for; the sort runs without it). Only where the
    exporter renders natively (not before issue 12 case 7)."""
    if not hasattr(_native, "Scrape"):
        return {}
    from admission.metrics import exposition

    worst: dict[str, float] = {}
    started: list[float] = []

    def hook(frame: Any, event: str, arg: Any) -> None:
        name = getattr(arg, "__qualname__", "")
        if not name.startswith("Scrape."):
            return
        if event == "c_call":
            started.append(time.thread_time())
        elif event in ("c_return", "c_exception") and started:
            took = time.thread_time() - started.pop()
            worst[name] = max(worst.get(name, 0.0), took)

    sys.setprofile(hook)
    try:
        for _ in exposition.chunks():
            pass
    finally:
        sys.setprofile(None)
    return worst


def python_thread_floor(app: AppThread) -> float:
    """The longest stall the application thread sees while another thread runs plain Python
    for a second: what sharing the GIL costs, whatever that thread does."""

    def spin() -> None:
        end = time.perf_counter() + 1.0
        while time.perf_counter() < end:
            pass

    with app.watch() as worst:
        other = threading.Thread(target=spin)
        other.start()
        other.join()
    return worst[0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("sizes", nargs="*", type=int, default=[10_000, 100_000])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--paths", default="serve,collector,reference")
    args = parser.parse_args()
    paths = args.paths.split(",")
    app = AppThread()
    table: list[tuple[int, str, Row]] = []
    for n in args.sizes:
        keep = make_limiters(n)
        gc.collect()
        runs: dict[str, Scrape] = {}
        registry = prometheus_client.CollectorRegistry()
        exporter = None
        if "serve" in paths:
            exporter = adm.metrics.serve(port=0, registry=registry)
            runs["serve (HTTP)"] = HttpScrape(exporter.port, gzip=False)
            runs["serve (HTTP, gzip)"] = HttpScrape(exporter.port, gzip=True)
        if "collector" in paths:
            adm.metrics.register(registry)
            runs["collector: generate_latest"] = InProcess(
                partial(prometheus_client.generate_latest, registry)
            )
        if "reference" in paths:
            runs["reference: prometheus_client metrics"] = InProcess(
                partial(prometheus_client.generate_latest, reference_registry(n))
            )
        for label, scrape in runs.items():
            results = [measure(app, scrape) for _ in range(args.rounds)]
            row = Row(
                statistics.median(r.alone for r in results),
                statistics.median(r.busy for r in results),
                max(r.stall for r in results),
                max(r.idle_stall for r in results),
                results[-1].size,
            )
            table.append((n, label, row))
            print(
                f"{n:>7,} {label:38} {row.alone:8.3f} s {row.busy:8.3f} s  stall "
                f"{row.stall * 1e3:7.1f} ms (idle {row.idle_stall * 1e3:5.1f})  "
                f"{row.size / 2**20:6.1f} MiB",
                flush=True,
            )
        holds = longest_native_calls()
        if holds:
            print(
                f"{n:>7,} longest native calls (thread CPU ms): "
                + ", ".join(f"{k} {v * 1e3:.2f}" for k, v in sorted(holds.items())),
                flush=True,
            )
        if exporter is not None:
            exporter.stop()
        adm.metrics.unregister(registry)
        del keep, runs
        gc.collect()
    floor = python_thread_floor(app)
    app.stop()
    print()
    print(
        f"Floor: another thread running plain Python for 1 s stalls the application thread "
        f"for up to {floor * 1e3:.1f} ms (the GIL's switch interval is "
        f"{sys.getswitchinterval() * 1e3:g} ms)."
    )
    print(f"Median of {args.rounds} round(s); stalls: the longest over the rounds.")
    print()
    print(
        "| series | path | scrape, s | scrape with a busy app thread, s "
        "| longest app stall, ms | same without a scrape, ms | body, MiB |"
    )
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for n, label, r in table:
        print(
            f"| {n:,} | {label} | {r.alone:.3f} | {r.busy:.3f} | {r.stall * 1e3:.1f} "
            f"| {r.idle_stall * 1e3:.1f} | {r.size / 2**20:.1f} |"
        )


if __name__ == "__main__":
    main()
