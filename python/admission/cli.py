"""Command line: ``python -m admission demo [--help]``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m admission",
        description="admission: fast, correct admission control for Python services.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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
    commands.add_parser("demo", help="the main demo (currently: threads-demo)", add_help=True)

    args = parser.parse_args(argv)
    if args.command in ("threads-demo", "demo"):
        from admission.demo.threads import run

        if args.command == "demo":
            args = demo.parse_args([])
        return run(
            threads=args.threads,
            calls=args.calls,
            rate=args.rate,
            burst=args.burst,
            limit=args.limit,
            work=args.work,
        )
    parser.error(f"unknown command {args.command!r}")  # pragma: no cover
    return 2  # pragma: no cover
