"""The retry demo: a provider outage, naive retries against `adm.Retry` + breaker + budget.

The local provider (`admission.demo.server`) takes ``server_rate`` requests/s (429 with
``Retry-After`` beyond, as real APIs do) and, from ``outage_start`` seconds into each run,
fails ``failure_rate`` of the requests with ``503`` for ``outage_seconds``. Calls arrive at a
steady ``calls_per_second`` (open loop: one task per call, as requests reach a service) for
``duration`` seconds; by default 40 calls/s for 8 s against a provider that takes 42/s, 30 %
failing from 1 s to 4 s. Each strategy (`Strategy`) makes them its own way:

1. **naive retries**: up to 5 attempts, a fixed 1 s between them, no jitter, ``Retry-After``
   ignored: what hand-written retry loops do.
2. **adm.Retry + breaker + budget**: ``adm.Retry`` (full jitter, the server's hints honoured)
   through an ``adm.CircuitBreaker``, within an ``adm.RetryBudget`` of 20 % of the calls.

For each, the report shows the requests sent to the provider in every second, the calls that
succeeded, and the retry amplification factor (requests sent / calls). A strategy is a name,
a description and a function making one call, so adding a column is adding a `Strategy` to
the list given to `run_outage`.
"""

from __future__ import annotations

import asyncio
import io
import math
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TextIO

import httpx

import admission as adm
from admission.demo.server import ProviderLimits, ProviderServer, ServerStats

__all__ = [
    "STRATEGIES",
    "OutageConfig",
    "OutageResult",
    "OutageRun",
    "Strategy",
    "main",
    "report",
    "run_outage",
]

Send = Callable[[], Awaitable[httpx.Response]]
"""One request to the provider: the response of a 200, else ``httpx.HTTPStatusError`` (or a
transport error). Counted (per second, per status) by the run."""
Call = Callable[[Send], Awaitable[bool]]
"""One call made the strategy's way, with as many requests as it decides: True if it got an
answer in the end."""


@dataclass(frozen=True)
class OutageConfig:
    """The scenario's sizes. Seconds are counted from the start of each run."""

    calls_per_second: float = 40.0
    batch: int = 1
    """Calls that arrive together (an agent fanning out), ``batch / calls_per_second`` s
    apart."""
    duration: float = 8.0
    outage_start: float = 1.0
    outage_seconds: float = 3.0
    failure_rate: float = 0.3
    server_rate: float = 42.0
    """A little above ``calls_per_second``: room for the calls, not for many retries."""
    server_burst: int = 8
    server_concurrency: int = 100
    latency_ms: tuple[float, float] = (10.0, 30.0)
    seed: int = 1

    def __post_init__(self) -> None:
        for name in ("calls_per_second", "duration", "server_rate"):
            value = getattr(self, name)
            if not 0 < value < math.inf:
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        for name in ("outage_start", "outage_seconds"):
            value = getattr(self, name)
            if not 0 <= value < math.inf:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        if not 0 <= self.failure_rate <= 1:
            raise ValueError(f"failure_rate must be in [0, 1], got {self.failure_rate!r}")
        if self.server_burst < 1:
            raise ValueError(f"server_burst must be >= 1, got {self.server_burst!r}")
        if self.batch < 1:
            raise ValueError(f"batch must be >= 1, got {self.batch!r}")
        if self.server_concurrency < 1:
            raise ValueError(f"server_concurrency must be >= 1, got {self.server_concurrency!r}")

    @property
    def calls(self) -> int:
        return max(1, round(self.calls_per_second * self.duration))

    @property
    def outage(self) -> range:
        """The whole seconds of a run the outage overlaps."""
        return range(int(self.outage_start), math.ceil(self.outage_start + self.outage_seconds))

    @property
    def after(self) -> range:
        """The whole seconds of a run from the end of the outage to the last arrival."""
        return range(self.outage.stop, max(self.outage.stop, math.ceil(self.duration)))

    def arrival(self, i: int) -> float:
        """When call ``i`` arrives, in seconds from the start of the run."""
        return (i - i % self.batch) / self.calls_per_second

    def provider(self) -> ProviderLimits:
        low, high = self.latency_ms
        return ProviderLimits(
            concurrency=self.server_concurrency,
            rate=self.server_rate,
            burst=self.server_burst,
            latency=(low / 1000, high / 1000),
            seed=self.seed,
        )


@dataclass(frozen=True)
class Strategy:
    """A way of making calls: ``make()`` is called once per run (fresh state) and returns the
    function that makes one call."""

    name: str
    """The report's column title."""
    description: str
    make: Callable[[], Call]


# ---------------------------------------------------------------------------------------------
# The strategies
# ---------------------------------------------------------------------------------------------

NAIVE_ATTEMPTS = 5


def _naive() -> Call:
    async def call(send: Send) -> bool:
        for attempt in range(NAIVE_ATTEMPTS):
            try:
                await send()
                return True
            except (httpx.HTTPStatusError, httpx.TransportError):
                if attempt == NAIVE_ATTEMPTS - 1:
                    return False
                # The anti-pattern this demo shows: fixed, no jitter, Retry-After ignored.
                await asyncio.sleep(1.0)  # noqa: ADM401
        return False  # pragma: no cover - the loop returns

    return call


def _admission() -> Call:
    # Errors that say the provider is struggling (429, 5xx, connection errors) count against
    # the breaker; at 30 % failures it stays closed (it opens at half), and takes over when
    # an outage gets worse than that.
    breaker = adm.CircuitBreaker(
        "demo-provider",
        failure_rate=0.5,
        window="2s",
        min_calls=20,
        open_for="1s",
        open_for_max="8s",
        failure_on=(httpx.HTTPStatusError, httpx.TransportError),
    )
    budget = adm.RetryBudget(ratio=0.2, min_per_second=2, window="5s")
    retry = adm.Retry(
        attempts=NAIVE_ATTEMPTS,
        deadline="10s",
        base="500ms",
        cap="4s",
        jitter="full",
        budget=budget,
        breaker=breaker,
        name="demo-provider",
    )

    async def call(send: Send) -> bool:
        try:
            await retry.call(send)
        except Exception:  # gave up: the last failure (or CircuitOpen)
            return False
        return True

    return call


STRATEGIES: tuple[Strategy, ...] = (
    Strategy(
        "naive retries", "5 attempts, a fixed 1 s apart, Retry-After ignored", lambda: _naive()
    ),
    Strategy(
        "adm.Retry + breaker + budget",
        "adm.Retry(attempts=5, base=500ms, cap=4s, jitter='full') through an adm.CircuitBreaker, "
        "within adm.RetryBudget(ratio=0.2)",
        lambda: _admission(),
    ),
)
"""The strategies `make demo` compares, in column order."""


# ---------------------------------------------------------------------------------------------
# One run
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OutageRun:
    """What one strategy did."""

    name: str
    calls: int
    succeeded: int
    failed: int
    unsent: int
    """Calls that failed without sending any request (refused by an open breaker)."""
    requests: int
    """Requests sent to the provider."""
    statuses: dict[str, int]
    """Answers by status (``"200"``, ``"429"``, ``"503"``) and errors by type."""
    per_second: tuple[int, ...]
    """Requests sent in each second of the run (the last ones: retries after the calls)."""
    arrivals: tuple[int, ...]
    """Calls that arrived in each second of the run."""
    wall: float
    server: ServerStats

    @property
    def amplification(self) -> float:
        """Requests sent per call: 1.0 means no retry at all."""
        return self.requests / self.calls if self.calls else 0.0

    def amplification_in(self, seconds: range) -> float:
        """Requests sent in those seconds of the run per call that arrived in them."""
        sent = sum(self.per_second[s] for s in seconds if s < len(self.per_second))
        arrived = sum(self.arrivals[s] for s in seconds if s < len(self.arrivals))
        return sent / arrived if arrived else 0.0


@dataclass(frozen=True)
class OutageResult:
    config: OutageConfig
    runs: tuple[OutageRun, ...]


@dataclass
class _Sent:
    """The requests of one run (one event loop: no locks needed)."""

    start: float
    per_second: Counter[int] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)


def _sender(client: httpx.AsyncClient, url: str, sent: _Sent) -> Send:
    body = {"model": "demo-1", "messages": [{"role": "user", "content": "Summarise this."}]}

    async def send() -> httpx.Response:
        sent.per_second[int(time.perf_counter() - sent.start)] += 1
        try:
            response = await client.post(url, json=body)
        except httpx.TransportError as exc:
            sent.statuses[type(exc).__name__] += 1
            raise
        sent.statuses[str(response.status_code)] += 1
        return response.raise_for_status()

    return send


async def _run_once(
    strategy: Strategy, config: OutageConfig, server: ProviderServer, out: TextIO
) -> OutageRun:
    await server.stats(reset=True)  # a fresh count, a full provider bucket, no outage
    out.write(f"  {strategy.name}: {strategy.description}\n")
    out.flush()
    call = strategy.make()
    async with httpx.AsyncClient(
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=200),
        timeout=httpx.Timeout(30.0),
        trust_env=False,  # loopback only: never through a proxy from the environment
    ) as client:
        loop = asyncio.get_running_loop()
        sent = _Sent(time.perf_counter())
        send = _sender(client, server.url, sent)
        begin = loop.time()

        async def outage() -> None:
            await asyncio.sleep(config.outage_start)
            await server.outage(config.failure_rate, config.outage_seconds)

        async def arrive(i: int) -> tuple[bool, int]:
            # Open loop: each call arrives at its time, whatever happened to the others.
            await asyncio.sleep(max(0.0, begin + config.arrival(i) - loop.time()))
            attempts = 0

            async def counted() -> httpx.Response:
                nonlocal attempts
                attempts += 1
                return await send()

            return await call(counted), attempts

        outcomes, _ = await asyncio.gather(
            asyncio.gather(*(arrive(i) for i in range(config.calls))), outage()
        )
        wall = time.perf_counter() - sent.start
    stats = await server.stats()
    seconds = max(sent.per_second, default=-1) + 1
    arrivals = Counter(int(config.arrival(i)) for i in range(config.calls))
    return OutageRun(
        name=strategy.name,
        calls=config.calls,
        succeeded=sum(ok for ok, _ in outcomes),
        failed=sum(not ok for ok, _ in outcomes),
        unsent=sum(attempts == 0 for _, attempts in outcomes),
        requests=sum(sent.per_second.values()),
        statuses=dict(sent.statuses),
        per_second=tuple(sent.per_second[s] for s in range(seconds)),
        arrivals=tuple(arrivals[s] for s in range(max(arrivals) + 1)),
        wall=wall,
        server=stats,
    )


async def run_outage(
    config: OutageConfig,
    strategies: Sequence[Strategy] = STRATEGIES,
    *,
    out: TextIO | None = None,
) -> OutageResult:
    """Runs each strategy against one local provider, one after the other, and returns what
    happened. ``out`` receives the narrative and the report (default: nothing)."""
    sink: TextIO = out if out is not None else io.StringIO()
    limits = config.provider()
    end = config.outage_start + config.outage_seconds
    async with ProviderServer(limits) as server:
        sink.write(
            f"\nRetries during an outage. The provider takes {limits.rate:g} requests/s (429 "
            f"with Retry-After beyond) and fails {100 * config.failure_rate:g} % of them with "
            f"503 from t={config.outage_start:g} s to t={end:g} s;\n"
            f"{config.calls_per_second:g} calls/s arrive for {config.duration:g} s "
            f"({config.calls:,} calls), made with:\n"
        )
        sink.flush()
        runs = tuple([await _run_once(s, config, server, sink) for s in strategies])
    result = OutageResult(config, runs)
    sink.write("\n" + report(result))
    sink.flush()
    return result


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------


def report(result: OutageResult) -> str:
    """The table: one column per strategy; then the requests sent in each second."""
    runs = result.runs
    outage, after = result.config.outage, result.config.after

    def statuses(r: OutageRun, *codes: str) -> int:
        return sum(n for k, n in r.statuses.items() if k in codes)

    def errors(r: OutageRun) -> int:
        return sum(n for k, n in r.statuses.items() if not k.isdigit())

    rows: list[tuple[str, list[str]]] = [
        ("calls", [f"{r.calls:,}" for r in runs]),
        ("  succeeded", [f"{r.succeeded:,}" for r in runs]),
        ("  failed (gave up)", [f"{r.failed:,}" for r in runs]),
        ("    at once, nothing sent", [f"{r.unsent:,}" for r in runs]),
        ("requests sent to the provider", [f"{r.requests:,}" for r in runs]),
        ("  answered 200", [f"{statuses(r, '200'):,}" for r in runs]),
        ("  503 (the outage)", [f"{statuses(r, '503'):,}" for r in runs]),
        ("  429 (over the rate)", [f"{statuses(r, '429'):,}" for r in runs]),
        ("  connection errors", [f"{errors(r):,}" for r in runs]),
        ("retry amplification", [f"{r.amplification:.2f} x" for r in runs]),
        (
            f"  after the outage ({after.start}-{after.stop} s)",
            [f"{r.amplification_in(after):.2f} x" for r in runs],
        ),
        ("most requests in one second", [f"{max(r.per_second, default=0):,}" for r in runs]),
        ("wall time", [f"{r.wall:.1f} s" for r in runs]),
    ]
    text = _table(("", *(r.name for r in runs)), [(label, *cells) for label, cells in rows])
    seconds = max(len(r.per_second) for r in runs)
    limit = f"{result.config.server_rate:g}"
    per_second = [
        (
            f"{s}-{s + 1} s" + (" outage" if s in outage else ""),
            *(f"{r.per_second[s] if s < len(r.per_second) else 0:,}" for r in runs),
        )
        for s in range(seconds)
    ]
    text += f"\nrequests sent to the provider per second (it takes {limit}/s):\n"
    text += _table(("", *(r.name for r in runs)), per_second)
    text += (
        "\nretry amplification: requests sent to the provider / calls that arrived (1.00: "
        "no retry).\nNaive retries resend every failure a second later, whatever the "
        "provider said: their\nextra load during the outage pushes the provider over its "
        "rate, its 429s are resent\ntoo, and the storm outlives the outage. adm.Retry "
        "spreads its retries (full jitter),\nwaits at least as long as Retry-After says, "
        "and its RetryBudget refuses retries beyond\n20 % of the calls (plus 2/s): the "
        "calls it refuses fail at once instead of adding\nload, so no outage multiplies "
        "the load by the attempts.\n"
    )
    return text


def _table(head: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(head[i]), *(len(row[i]) for row in rows)) for i in range(len(head))]

    def line(cells: Sequence[str]) -> str:
        first = f"{cells[0]:<{widths[0]}}"
        rest = "".join(f"  {c:>{w}}" for c, w in zip(cells[1:], widths[1:], strict=True))
        return (first + rest).rstrip() + "\n"

    return line(head) + line(["-" * w for w in widths]) + "".join(line(r) for r in rows)


def main(config: OutageConfig) -> int:
    """Runs the scenario on stdout. Returns 0 (it shows; it claims nothing)."""
    asyncio.run(run_outage(config, out=sys.stdout))
    return 0
