"""Command line: ``python -m admission demo [--help]``, ``python -m admission threads-demo`` and
``python -m admission --version`` and ``python -m admission audit [PATH...]`` (the ``admission``
console script is the same)."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence

import admission
from admission._extras import require

__all__ = ["main"]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def _latency_range(text: str) -> tuple[float, float]:
    """``"20-60"`` (uniform between) or ``"40"`` (always)."""
    low_text, sep, high_text = text.partition("-")
    try:
        low = float(low_text)
        high = float(high_text) if sep else low
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected LOW-HIGH or MS in milliseconds, e.g. 20-60, got {text!r}"
        ) from None
    if not 0 <= low <= high < math.inf:
        raise argparse.ArgumentTypeError(f"expected 0 <= LOW <= HIGH, got {text!r}")
    return low, high


def _add_demo(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = commands.add_parser(
        "demo",
        help="the main demo: 2,000 LLM calls, unbounded vs bounded with admission",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "An agent makes many calls to an LLM provider, twice.\n\n"
            "The provider is a local HTTP server on 127.0.0.1 (a free port) with its own\n"
            "limits: at most --server-concurrency requests at once and --server-rate\n"
            "requests/s; beyond them it answers 429 Too Many Requests with Retry-After.\n"
            "The client is httpx.AsyncClient with a generous connection pool, retrying\n"
            "nothing:\n\n"
            "  1. unbounded   asyncio.gather(*calls): every call starts at once\n"
            "  2. admission   adm.gather(*calls, limit=--client-limit) and an\n"
            "                 adm.TokenBucket(rate=--client-rate, burst=--client-burst)\n\n"
            "A progress line shows each run live (on a terminal); a table compares them:\n"
            "calls succeeded, 429s, errors, peak in-flight requests (client and server),\n"
            "peak open sockets, wall time, p50/p99 latency. The defaults take well under a\n"
            "minute.\n\n"
            "The unbounded run holds two open files per call (client and server side): the\n"
            "soft open-file limit is raised to the hard one for it, or the run is capped.\n\n"
            "Then the retry scenario (admission.demo.outage): the provider fails 30 % of\n"
            "its requests with 503 for --outage-seconds, and answers 429 with Retry-After\n"
            "above its rate; the same calls are made with naive retries (a fixed 1 s, no\n"
            "jitter) and with adm.Retry + adm.CircuitBreaker + adm.RetryBudget. It shows\n"
            "the requests sent to the provider per second, the calls that succeeded and\n"
            "the retry amplification factor (about 20 s; --no-outage skips it).\n\n"
            "Exit status: 0 when the run with admission had no 429 and no error, else 1."
        ),
    )
    run = demo.add_argument_group("the runs")
    run.add_argument(
        "--calls",
        type=_positive_int,
        default=2000,
        metavar="N",
        help="calls per run (default 2000)",
    )
    run.add_argument(
        "--no-progress",
        action="store_true",
        help="no live progress line (it is off anyway when stderr is not a terminal)",
    )
    server = demo.add_argument_group("the provider (server)")
    server.add_argument(
        "--server-concurrency",
        type=_positive_int,
        default=20,
        metavar="N",
        help="requests the provider serves at once; more get 429 (default 20)",
    )
    server.add_argument(
        "--server-rate",
        type=_positive_float,
        default=200.0,
        metavar="R",
        help="requests per second the provider allows; more get 429 (default 200)",
    )
    server.add_argument(
        "--server-burst",
        type=_positive_int,
        default=None,
        metavar="N",
        help="the provider's token-bucket burst (default: a tenth of a second of its rate)",
    )
    server.add_argument(
        "--latency-ms",
        type=_latency_range,
        default=(20.0, 60.0),
        metavar="LOW-HIGH",
        help="provider latency in ms, uniform in LOW-HIGH, or one number (default 20-60)",
    )
    server.add_argument(
        "--seed", type=int, default=1, metavar="N", help="seed of the latency sequence (default 1)"
    )
    outage = demo.add_argument_group("the retry scenario")
    outage.add_argument(
        "--outage-seconds",
        type=_positive_float,
        default=3.0,
        metavar="S",
        help="how long the provider fails 30 %% of its requests with 503 (default 3)",
    )
    outage.add_argument(
        "--no-outage", action="store_true", help="skip the retry scenario (naive vs adm.Retry)"
    )
    client = demo.add_argument_group("the client with admission")
    client.add_argument(
        "--client-limit",
        type=_positive_int,
        default=None,
        metavar="N",
        help="calls in flight at once (default: --server-concurrency)",
    )
    client.add_argument(
        "--client-rate",
        type=_positive_float,
        default=None,
        metavar="R",
        help="calls started per second (default: --server-rate)",
    )
    client.add_argument(
        "--client-burst",
        type=_positive_int,
        default=None,
        metavar="N",
        help="token-bucket burst (default: a tenth of the provider's burst)",
    )


def _add_threads_demo(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = commands.add_parser(
        "threads-demo",
        help="a token bucket and a semaphore shared by worker threads, shown live",
        description=(
            "Worker threads make calls through one token bucket (a rate limit) and one "
            "semaphore (a concurrency limit); every admission is printed as it happens, then "
            "the limiters' own counters."
        ),
    )
    demo.add_argument("--threads", type=int, default=8, help="worker threads (default 8)")
    demo.add_argument("--calls", type=int, default=6, help="calls per thread (default 6)")
    demo.add_argument("--rate", type=float, default=20.0, help="calls per second (default 20)")
    demo.add_argument("--burst", type=int, default=5, help="bucket burst (default 5)")
    demo.add_argument("--limit", type=int, default=3, help="calls in flight (default 3)")
    demo.add_argument(
        "--work", type=float, default=0.05, help="seconds each call takes (default 0.05)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["audit"]:
        # its own parser, and nothing here that needs the native extension
        from admission.audit.cli import main as audit

        return audit(arguments[1:], prog="admission audit")
    parser = argparse.ArgumentParser(
        prog="python -m admission",
        description="admission: fast, correct admission control for Python services.",
    )
    parser.add_argument("--version", action="version", version=f"admission {admission.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_demo(commands)
    _add_threads_demo(commands)
    commands.add_parser(
        "audit",
        add_help=False,
        help="find unbounded fan-out, per-operation clients, retries without jitter, ... in "
        "Python code (admission audit --help)",
    )
    args = parser.parse_args(argv)

    if args.command == "threads-demo":
        from admission.demo.threads import run

        return run(
            threads=args.threads,
            calls=args.calls,
            rate=args.rate,
            burst=args.burst,
            limit=args.limit,
            work=args.work,
        )
    if args.command == "demo":
        try:
            require("httpx", "demo", "`python -m admission demo`")
        except ModuleNotFoundError as exc:
            print(f"{exc} (`make demo` installs it in a clone)", file=sys.stderr)
            return 2
        from admission.demo import llm

        config = llm.DemoConfig(
            calls=args.calls,
            server_concurrency=args.server_concurrency,
            server_rate=args.server_rate,
            server_burst=args.server_burst,
            latency_ms=args.latency_ms,
            client_limit=args.client_limit,
            client_rate=args.client_rate,
            client_burst=args.client_burst,
            seed=args.seed,
            progress=not args.no_progress,
        )
        try:
            code = llm.main(config)
            if not args.no_outage:
                from admission.demo import outage

                seconds = args.outage_seconds
                # The calls go on 4 s past the outage: long enough to see what it left.
                scenario = outage.OutageConfig(
                    outage_seconds=seconds, duration=max(8.0, seconds + 5.0), seed=args.seed
                )
                outage.main(scenario)
            return code
        except KeyboardInterrupt:
            print("\ninterrupted", file=sys.stderr)
            return 130
    parser.error(f"unknown command {args.command!r}")  # pragma: no cover
