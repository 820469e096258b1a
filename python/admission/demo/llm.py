"""The main demo: an agent fans out 2,000 calls to an LLM provider, without and with admission.

A local server (`admission.demo.server`) plays the provider: at most 20 requests at once and
200 requests/s by default, ``429 Too Many Requests`` beyond that. The client is
``httpx.AsyncClient``, run twice over the same calls:

1. **unbounded** — ``asyncio.gather(*calls)``, the anti-pattern: every call starts at once,
   the connection pool is generous, nothing is retried.
2. **admission** — ``adm.gather(*calls, limit=20)`` (at most the provider's concurrency in
   flight) and an ``adm.TokenBucket`` at the provider's rate with a small burst.
3. **admission transport** — ``asyncio.gather(*calls)`` again, through
   ``adm.httpx.AsyncTransport`` with ``adm.presets.openai(...)`` at the provider's limits:
   the client code stays naive; the transport paces, retries and settles tokens.

Progress is shown live; the end is a table of what each run did (calls, 429s, errors, peak
in-flight requests at the client and at the server, peak open sockets, wall time, latency).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import shutil
import sys
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

import httpx

import admission as adm
from admission.demo.server import ProviderLimits, ProviderServer, ServerStats

__all__ = ["DemoConfig", "DemoResult", "RunResult", "main", "run_demo"]

_FD_RESERVE = 256  # descriptors kept for everything that is not a demo socket


@dataclass(frozen=True)
class DemoConfig:
    """The demo's sizes and limits. ``None`` means: derived from the provider's limits."""

    calls: int = 2000
    server_concurrency: int = 20
    server_rate: float = 200.0
    server_burst: int | None = None  # default: a tenth of a second of the rate
    latency_ms: tuple[float, float] = (20.0, 60.0)
    client_limit: int | None = None  # default: the provider's concurrency
    client_rate: float | None = None  # default: the provider's rate
    client_burst: int | None = None  # default: a tenth of the provider's burst
    seed: int = 1
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("calls", "server_concurrency"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        for name in ("server_burst", "client_limit", "client_burst"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value!r}")
        for name in ("server_rate", "client_rate"):
            value = getattr(self, name)
            if value is not None and not 0 < value < float("inf"):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        low, high = self.latency_ms
        if not 0 <= low <= high < float("inf"):
            raise ValueError(f"latency_ms must be 0 <= low <= high, got {self.latency_ms!r}")

    @property
    def provider_burst(self) -> int:
        if self.server_burst is not None:
            return self.server_burst
        return max(1, round(self.server_rate / 10))

    @property
    def limit(self) -> int:
        return self.client_limit if self.client_limit is not None else self.server_concurrency

    @property
    def rate(self) -> float:
        return self.client_rate if self.client_rate is not None else self.server_rate

    @property
    def burst(self) -> int:
        if self.client_burst is not None:
            return self.client_burst
        # Small: what arrives at the provider is the client's pacing plus the jitter of two
        # event loops and the network; the provider's burst absorbs that jitter.
        return max(1, self.provider_burst // 10)

    def provider(self) -> ProviderLimits:
        low, high = self.latency_ms
        return ProviderLimits(
            concurrency=self.server_concurrency,
            rate=self.server_rate,
            burst=self.provider_burst,
            latency=(low / 1000, high / 1000),
            seed=self.seed,
        )


@dataclass(frozen=True)
class RunResult:
    """What one run did, seen from the client and from the server."""

    name: str
    calls: int
    ok: int
    rejected: int  # 429 Too Many Requests
    errors: int  # exceptions and statuses other than 200 and 429
    error_kinds: dict[str, int]
    peak_in_flight_client: int
    peak_in_flight_server: int  # received and not yet answered, 429s included
    peak_in_service_server: int  # admitted by the provider and being worked on
    peak_sockets: int  # accepted connections open at once, at the server
    connections: int  # connections the server accepted in this run
    wall: float  # seconds
    cpu: float  # seconds of CPU the client process spent (the server runs in another)
    p50: float | None  # seconds from sending a request to its answer (200 or 429)
    p99: float | None
    server: ServerStats
    retries: int = 0  # the transport's retries (the other runs retry nothing)
    tokens_wasted: int | None = None  # tokens charged beyond the responses' usage

    @property
    def goodput(self) -> float:
        """Successful calls per second."""
        return self.ok / self.wall if self.wall > 0 else 0.0


@dataclass(frozen=True)
class DemoResult:
    config: DemoConfig
    unbounded: RunResult
    bounded: RunResult
    notes: tuple[str, ...] = ()
    transport: RunResult | None = None

    @property
    def ok(self) -> bool:
        """The demo's claim: with admission, every call succeeded and none got a 429."""
        b = self.bounded
        return b.rejected == 0 and b.errors == 0 and b.ok == b.calls


@dataclass
class _Tally:
    """The client's live counters for one run (one event loop: no locks needed)."""

    done: int = 0
    ok: int = 0
    rejected: int = 0
    errors: int = 0
    in_flight: int = 0
    peak_in_flight: int = 0
    latencies: list[float] = field(default_factory=list)
    error_kinds: Counter[str] = field(default_factory=Counter)


# the client ---------------------------------------------------------------------------


def _payload(i: int) -> dict[str, Any]:
    return {
        "model": "demo-1",
        "messages": [
            {"role": "system", "content": "You are a terse assistant."},
            {"role": "user", "content": f"Summarise document #{i} in one line."},
        ],
    }


async def _call(client: httpx.AsyncClient, url: str, i: int, tally: _Tally) -> None:
    """One call. Never raises (but is cancellable): every outcome is counted."""
    tally.in_flight += 1
    tally.peak_in_flight = max(tally.peak_in_flight, tally.in_flight)
    start = time.perf_counter()
    try:
        response = await client.post(url, json=_payload(i))
    except Exception as exc:  # connection refused/reset, timeouts, too many open files...
        tally.errors += 1
        tally.error_kinds[type(exc).__name__] += 1
    else:
        tally.latencies.append(time.perf_counter() - start)
        if response.status_code == 200:
            tally.ok += 1
        elif response.status_code == 429:
            tally.rejected += 1
        else:
            tally.errors += 1
            tally.error_kinds[f"HTTP {response.status_code}"] += 1
    finally:
        tally.in_flight -= 1
        tally.done += 1


def _client(keepalive: int) -> httpx.AsyncClient:
    # Generous on purpose: the pool does not bound anything, so the unbounded run really
    # opens a socket per concurrent call (as many agents do). No retries (httpx's default).
    # Idle connections kept: as many as the bounded run uses (httpcore's pool does work
    # proportional to connections x idle connections on every request: keeping thousands
    # idle makes it crawl).
    return httpx.AsyncClient(
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=keepalive),
        timeout=httpx.Timeout(60.0),
        trust_env=False,  # loopback only: never through a proxy from the environment
    )


def _describe(name: str, config: DemoConfig, cap: int | None) -> str:
    if name == "unbounded":
        if cap is not None:
            return f"asyncio.gather(*calls): {cap} calls at once (the open-file limit)"
        return "asyncio.gather(*calls): every call at once"
    if name == "transport":
        return (
            f"asyncio.gather(*calls) through adm.httpx.AsyncTransport("
            f"presets.openai(rpm={config.rate:g}/s, concurrency={config.limit}))"
        )
    return (
        f"adm.gather(*calls, limit={config.limit}) + "
        f"TokenBucket(rate={config.rate:g}/s, burst={config.burst})"
    )


async def _unbounded(
    client: httpx.AsyncClient, url: str, calls: int, tally: _Tally, cap: int | None
) -> None:
    if cap is None:
        await asyncio.gather(*(_call(client, url, i, tally) for i in range(calls)))
        return
    # Only when the open-file limit cannot hold a socket per call (reported): at most `cap`
    # calls at once. (Capping httpx's pool instead queues the rest inside the pool, whose
    # bookkeeping then costs connections x queued requests on every step: minutes.)
    room = asyncio.Semaphore(cap)

    async def call(i: int) -> None:
        async with room:
            await _call(client, url, i, tally)

    await asyncio.gather(*(call(i) for i in range(calls)))


def _transport_client(config: DemoConfig, port: int) -> tuple[httpx.AsyncClient, Any]:
    """The third run's client: its transport holds the limits (and a tokens limit large
    enough never to bind: it shows the estimate settled at the usage)."""
    preset = adm.presets.openai(
        rpm=config.rate,
        tpm=config.rate * 1000,
        concurrency=config.limit,
        period=1.0,
        default_max_tokens=16,
    )
    transport = adm.httpx.AsyncTransport(
        httpx.AsyncHTTPTransport(limits=httpx.Limits(max_keepalive_connections=config.limit)),
        limits={f"127.0.0.1:{port}": preset},
        retry_post=True,
    )
    client = httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(60.0), trust_env=False)
    return client, transport


async def _bounded(client: httpx.AsyncClient, url: str, config: DemoConfig, tally: _Tally) -> None:
    bucket = adm.TokenBucket(rate=config.rate, per=1.0, burst=config.burst, name="provider-rps")

    async def admitted(i: int) -> None:
        # Concurrency first, then the rate: a token is taken only by a call that can go now,
        # so calls leave at the bucket's pace and not in clumps.
        await bucket.acquire()
        await _call(client, url, i, tally)

    await adm.gather(*(admitted(i) for i in range(config.calls)), limit=config.limit)


# progress -----------------------------------------------------------------------------


class _Progress:
    """A single status line, redrawn 5 times per second (only on a terminal).

    Drawn from a thread of its own: an unbounded run keeps its event loop too busy to
    redraw on time (that is part of what it shows). The thread only reads counters.
    """

    def __init__(self, stream: TextIO | None, label: str, total: int, tally: _Tally) -> None:
        self.stream = stream
        self.label = label
        self.total = total
        self.tally = tally
        self.sockets = 0  # at the server, refreshed by `poll`
        self.start = time.perf_counter()
        encoding = (getattr(stream, "encoding", None) or "ascii").lower()
        self.full, self.empty = ("█", "░") if "utf" in encoding else ("#", ".")
        self._stop = threading.Event()

    def line(self) -> str:
        t = self.tally
        width = 20
        filled = width * t.done // max(1, self.total)
        bar = self.full * filled + self.empty * (width - filled)
        text = (
            f"  {self.label:<10} {bar} {t.done:>{len(str(self.total))}}/{self.total} done"
            f" | ok {t.ok} | 429 {t.rejected} | errors {t.errors} | in flight {t.in_flight}"
            f" | sockets {self.sockets} | {time.perf_counter() - self.start:4.1f} s"
        )
        columns = shutil.get_terminal_size((120, 20)).columns
        return text[: max(20, columns - 1)]

    def _draw(self, final: bool = False) -> None:
        assert self.stream is not None
        self.stream.write("\r" + self.line() + "\x1b[K" + ("\n" if final else ""))
        self.stream.flush()

    def _loop(self) -> None:
        while not self._stop.wait(0.2):
            self._draw()

    async def _poll(self, server: ProviderServer) -> None:
        """Keeps ``sockets`` current (on the event loop: the server is asked over a pipe)."""
        while True:
            self.sockets = (await server.stats()).open_connections
            await asyncio.sleep(0.2)

    @contextlib.asynccontextmanager
    async def shown(self, server: ProviderServer) -> AsyncIterator[None]:
        if self.stream is None:
            yield
            return
        self._draw()
        thread = threading.Thread(target=self._loop, name="demo-progress", daemon=True)
        thread.start()
        poller = asyncio.ensure_future(self._poll(server))
        try:
            yield
        finally:
            poller.cancel()
            await asyncio.gather(poller, return_exceptions=True)
            self._stop.set()
            thread.join()
            self._draw(final=True)


# one run ------------------------------------------------------------------------------


def _percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


async def _run_once(
    name: str,
    config: DemoConfig,
    server: ProviderServer,
    cap: int | None,
    progress: TextIO | None,
    out: TextIO,
) -> RunResult:
    await _quiesce(server)
    await server.stats(reset=True)  # a fresh count, a full provider bucket
    out.write(f"  {name:<10} {_describe(name, config, cap)}\n")
    out.flush()
    tally = _Tally()
    transport = None
    if name == "transport":
        client, transport = _transport_client(config, server.port)
    else:
        client = _client(config.limit)
    async with client:
        start, cpu = time.perf_counter(), time.process_time()
        async with _Progress(progress, name, config.calls, tally).shown(server):
            if name == "admission":
                await _bounded(client, server.url, config, tally)
            else:  # the unbounded fan-out (the transport run's too: it bounds itself)
                await _unbounded(client, server.url, config.calls, tally, cap)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    stats = await server.stats()
    retries, wasted = 0, None
    if transport is not None:
        (host,) = transport.stats().values()
        tally.rejected = host.rate_limited  # 429s seen (retried), not calls that failed
        retries = host.retries
        tokens = transport._config.hosts.get(httpx.URL(server.url)).tokens_bucket
        wasted = tokens.stats().admitted_cost - host.tokens_settled
    latencies = sorted(tally.latencies)
    return RunResult(
        name=name,
        calls=config.calls,
        ok=tally.ok,
        rejected=tally.rejected,
        errors=tally.errors,
        error_kinds=dict(tally.error_kinds),
        peak_in_flight_client=tally.peak_in_flight,
        peak_in_flight_server=stats.peak_in_flight,
        peak_in_service_server=stats.peak_in_service,
        peak_sockets=stats.peak_connections,
        connections=stats.connections,
        wall=wall,
        cpu=cpu,
        p50=_percentile(latencies, 0.50),
        p99=_percentile(latencies, 0.99),
        server=stats,
        retries=retries,
        tokens_wasted=wasted,
    )


async def _quiesce(server: ProviderServer, timeout: float = 10.0) -> None:
    """Waits until the server has closed the previous run's connections."""
    for _ in range(round(timeout / 0.01)):
        if not (await server.stats()).open_connections:
            return
        await asyncio.sleep(0.01)


# open files ---------------------------------------------------------------------------


@contextlib.contextmanager
def _open_files(calls: int) -> Iterator[tuple[int | None, list[str]]]:
    """Makes room for the unbounded run's sockets (two per call: client and server side).

    Raises the soft RLIMIT_NOFILE to the hard limit if needed (restored afterwards); if even
    that is too small, yields a cap on the unbounded run's calls at once, and a note.
    """
    notes: list[str] = []
    if sys.platform == "win32":  # pragma: no cover
        yield None, notes
        return
    import resource

    need = 2 * calls + _FD_RESERVE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= need:
        yield None, notes
        return
    raised = soft
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        raised = hard
    if raised == resource.RLIM_INFINITY or raised > soft:
        notes.append(f"raised the open-file limit (RLIMIT_NOFILE) from {soft} to {raised}")
    cap: int | None = None
    if raised != resource.RLIM_INFINITY and raised < need:
        cap = max(1, (raised - _FD_RESERVE) // 2)
        notes.append(
            f"the open-file limit is {raised}: the unbounded run is capped at {cap} calls "
            f"at once (raise `ulimit -n` to {need} to see them all)"
        )
    try:
        yield cap, notes
    finally:
        if raised != soft:
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# the demo -----------------------------------------------------------------------------


async def run_demo(
    config: DemoConfig, *, out: TextIO | None = None, progress: TextIO | None = None
) -> DemoResult:
    """Runs both runs against one local provider and returns what happened.

    ``out`` receives the narrative and the table (default: nothing); ``progress`` the live
    status line (default: none; pass a terminal stream).
    """
    sink: TextIO = out if out is not None else io.StringIO()
    show = progress if config.progress else None
    limits = config.provider()
    low, high = config.latency_ms
    with _open_files(config.calls) as (cap, notes):
        # Started after the open-file limit is raised: the child inherits it.
        async with ProviderServer(limits, backlog=config.calls) as server:
            sink.write(
                f"A local LLM provider on {server.url}\n"
                f"  allows {limits.concurrency} requests at once and {limits.rate:g} requests/s "
                f"(burst {limits.burst}); answers 429 beyond that; takes {low:g}-{high:g} ms\n"
                f"{config.calls} calls with httpx.AsyncClient, three times (the first two "
                "retrying nothing):\n"
            )
            for note in notes:
                sink.write(f"  note: {note}\n")
            sink.flush()
            unbounded = await _run_once("unbounded", config, server, cap, show, sink)
            bounded = await _run_once("admission", config, server, None, show, sink)
            transport = await _run_once("transport", config, server, cap, show, sink)
    result = DemoResult(config, unbounded, bounded, tuple(notes), transport)
    sink.write("\n" + report(result))
    sink.flush()
    return result


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:,.0f} ms"


def report(result: DemoResult) -> str:
    """The final table: one column per run, and the provider's limit where there is one."""
    config = result.config
    limits = config.provider()
    runs: tuple[RunResult, ...] = (result.unbounded, result.bounded)
    if result.transport is not None:
        runs += (result.transport,)
    rows: list[tuple[str, list[str], str]] = [
        ("calls", [f"{r.calls:,}" for r in runs], ""),
        ("  succeeded (200)", [f"{r.ok:,}" for r in runs], ""),
        ("  rejected (429)", [f"{r.rejected:,}" for r in runs], ""),
        ("  errors", [f"{r.errors:,}" for r in runs], ""),
        ("  retries", [f"{r.retries:,}" for r in runs], ""),
        (
            "tokens wasted (over-estimates)",
            ["-" if r.tokens_wasted is None else f"{r.tokens_wasted:,}" for r in runs],
            "",
        ),
        ("peak in flight, client", [f"{r.peak_in_flight_client:,}" for r in runs], ""),
        (
            "peak in flight, server",
            [f"{r.peak_in_flight_server:,}" for r in runs],
            f"{limits.concurrency}",
        ),
        ("peak open sockets", [f"{r.peak_sockets:,}" for r in runs], ""),
        ("wall time", [f"{r.wall:.2f} s" for r in runs], ""),
        ("client CPU time", [f"{r.cpu:.2f} s" for r in runs], ""),
        ("succeeded per second", [f"{r.goodput:,.0f}" for r in runs], f"{limits.rate:g}"),
        ("latency p50", [_ms(r.p50) for r in runs], ""),
        ("latency p99", [_ms(r.p99) for r in runs], ""),
    ]
    head = ("", "unbounded gather", "with admission", "admission transport")[: 1 + len(runs)]
    head += ("provider limit",)
    widths = [max(len(head[0]), *(len(label) for label, _, _ in rows))]
    widths += [
        max(len(head[1 + i]), *(len(cells[i]) for _, cells, _ in rows)) for i in range(len(runs))
    ]
    widths.append(len(head[-1]))

    def line(*cells: str) -> str:
        first, *rest = cells
        text = f"{first:<{widths[0]}}" + "".join(
            f"  {c:>{w}}" for c, w in zip(rest, widths[1:], strict=True)
        )
        return text.rstrip() + "\n"

    text = line(*head)
    text += line(*("-" * w for w in widths))
    for label, cells, limit in rows:
        text += line(label, *cells, limit)
    for r in runs:
        if r.error_kinds:
            kinds = ", ".join(f"{k} x{v}" for k, v in sorted(r.error_kinds.items()))
            text += f"{r.name} errors: {kinds}\n"
    text += (
        "\npeak in flight, server: requests received and not yet answered (429s included);"
        "\nlatency: from sending a request to its answer (200 or 429); client CPU time: the"
        "\nclient process only (the provider runs in a process of its own).\n\n"
    )
    u, b = result.unbounded, result.bounded
    text += (
        f"unbounded: {u.peak_in_flight_client:,} calls in flight and {u.peak_sockets:,} sockets "
        f"at once; {u.rejected:,} of {u.calls:,} calls ({100 * u.rejected / u.calls:.0f} %) "
        f"refused with 429.\n"
    )
    if result.ok:
        text += (
            f"admission: all {b.calls:,} calls succeeded, no 429, at {b.goodput:,.0f}/s "
            f"(the provider allows {limits.rate:g}/s), with at most {b.peak_in_flight_client} "
            f"in flight and {b.peak_sockets} sockets.\n"
        )
    else:
        text += (
            f"admission: {b.ok:,} of {b.calls:,} calls succeeded, {b.rejected:,} 429s and "
            f"{b.errors:,} errors (client limit {config.limit}, rate {config.rate:g}/s, burst "
            f"{config.burst}: are they above the provider's?).\n"
        )
    return text


def main(config: DemoConfig) -> int:
    """Runs the demo on stdout (progress on stderr, when it is a terminal).

    Returns 0 when the bounded run had no 429s and no errors, else 1.
    """
    progress = sys.stderr if config.progress and sys.stderr.isatty() else None
    result = asyncio.run(run_demo(config, out=sys.stdout, progress=progress))
    return 0 if result.ok else 1
