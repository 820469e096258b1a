"""Shared machinery for the benchmarks: unrolled call loops and per-call bookkeeping.

Every benchmark times a *round* of ``calls`` operations, not one call, so pytest-benchmark's
per-round overhead (two timer reads, a list append; about 1 µs) is spread over them: 1,000
calls for fast operations, fewer for slow ones so that a round lasts about 200 µs (10 calls
of a 20 µs operation still bury that overhead under 0.5 %). The loop body is the operation
written out ten times and compiled from source, so the only harness cost left per call is a
tenth of a ``for`` step (about 1 ns). Callables are bound to local names first
(``acquire = bucket.try_acquire``), as a hot loop in an application would do, and called
with positional arguments.

Each benchmark records, in ``extra_info``:

- ``key``: a stable id (``admission.TokenBucket``, ``limits.moving``, ``time.monotonic_ns``);
- ``impl``: the label shown in the table;
- ``role``: ``admission``, ``peer``, ``floor`` or ``reference``; ``baseline``: True for the one
  row per group the others are compared with;
- ``calls``: operations per round, so ``stats.median / calls`` is the time per operation.

pytest-benchmark's own table shows time per *round*; ``benches/report.py`` turns a
``--benchmark-json`` file into the per-call table and chart (``make bench`` does both). Every
group is described in ``groups.py`` (collection fails otherwise); ``--bench-group TEXT`` (``make
bench BENCH=TEXT``) keeps the groups whose name or file name contains TEXT.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from typing import Any

import pytest

from groups import GROUPS

#: Operations per timed round (at most: see ROUND_SECONDS).
CALLS = 1_000
#: Slow operations get fewer calls per round, so that a round takes about this long.
ROUND_SECONDS = 200e-6
#: How many times the statement is written out in the loop body.
UNROLL = 10
#: Seconds of timed rounds per benchmark (bounded by MIN_ROUNDS / MAX_ROUNDS).
TARGET_SECONDS = float(os.environ.get("BENCH_SECONDS", "0.8"))
MIN_ROUNDS = 15
MAX_ROUNDS = 10_000


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--bench-group",
        default="",
        help="run the benchmark groups whose name or file name contains this (case-insensitive)",
    )


def _group(item: pytest.Item) -> str | None:
    marker = item.get_closest_marker("benchmark")
    group = marker.kwargs.get("group") if marker is not None else None
    return group if isinstance(group, str) else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Refuses undescribed groups; keeps only the ``--bench-group`` ones if given."""
    undescribed = sorted({g for item in items if (g := _group(item)) and g not in GROUPS})
    if undescribed:
        raise pytest.UsageError(
            "benchmark groups missing from benches/groups.py: " + ", ".join(map(repr, undescribed))
        )
    wanted = str(config.getoption("--bench-group")).casefold()
    if not wanted:
        return
    keep, drop = [], []
    for item in items:
        group = _group(item) or ""
        hit = wanted in group.casefold() or wanted in item.path.name.casefold()
        (keep if hit else drop).append(item)
    if not keep:
        raise pytest.UsageError(
            f"no benchmark group matches {wanted!r}; the groups: " + "; ".join(GROUPS)
        )
    config.hook.pytest_deselected(items=drop)
    items[:] = keep


def pytest_collect_file(parent: pytest.Collector, file_path: Path) -> pytest.Module | None:
    """Collects ``bench_*.py`` here (pytest's default pattern is ``test_*.py``).

    A file named on the command line is collected by pytest itself; not twice.
    """
    if (
        file_path.suffix == ".py"
        and file_path.name.startswith("bench_")
        and not parent.session.isinitpath(file_path)
    ):
        module: pytest.Module = pytest.Module.from_parent(parent, path=file_path)
        return module
    return None


def compile_loop(
    stmt: str, env: dict[str, Any], calls: int = CALLS, *, is_async: bool = False
) -> Callable[[], None]:
    """A function running ``stmt`` ``calls`` times, unrolled ``UNROLL`` times per iteration.

    ``stmt`` is one line of Python (``acquire()``, or ``acquire(); release()``) over the names
    in ``env``. With ``is_async`` the loop is a coroutine (so ``stmt`` may ``await``) driven
    by hand with ``send(None)``: no event loop, so this only suits awaits that never suspend,
    and it fails loudly if one does.
    """
    if calls % UNROLL:
        raise ValueError(f"calls must be a multiple of {UNROLL}")
    body = "".join(f"        {stmt}\n" for _ in range(UNROLL))
    header = "async def body():\n" if is_async else "def run():\n"
    src = f"{header}    for _ in repeat(None, {calls // UNROLL}):\n{body}"
    namespace: dict[str, Any] = {"repeat": repeat, **env}
    exec(compile(src, f"<bench loop: {stmt}>", "exec"), namespace)
    if not is_async:
        run: Callable[[], None] = namespace["run"]
        return run
    body_fn = namespace["body"]

    def drive() -> None:
        coro = body_fn()
        try:
            coro.send(None)
        except StopIteration:
            return
        coro.close()
        raise RuntimeError(f"{stmt!r} suspended: it cannot be timed without an event loop")

    return drive


@dataclass
class Measured:
    """What one benchmark ran, for exact checks against a limiter's counters afterwards."""

    #: Every operation executed, warm-up and calibration included.
    total_calls: int
    #: Operations per timed round.
    calls: int


class Measure:
    """Runs one operation through pytest-benchmark and labels the result."""

    def __init__(self, benchmark: Any) -> None:
        self.benchmark = benchmark

    def __call__(
        self,
        *,
        key: str,
        impl: str,
        role: str,
        stmt: str,
        env: dict[str, Any],
        baseline: bool = False,
        setup: Callable[[], None] | None = None,
        is_async: bool = False,
    ) -> Measured:
        if role not in {"admission", "peer", "floor", "reference"}:
            raise ValueError(f"unknown role {role!r}")
        total = 0

        def timed(run: Callable[[], None], calls: int, times: int) -> float:
            """Runs ``times`` rounds (warm-up); returns the median seconds per call."""
            nonlocal total
            samples = []
            for _ in range(times):
                if setup is not None:
                    setup()
                start = time.perf_counter()
                run()
                samples.append(time.perf_counter() - start)
                total += calls
            return sorted(samples)[len(samples) // 2] / calls

        # Warm up (imports, caches, lazily built state), then size the rounds: CALLS per round,
        # fewer for slow operations so that a round stays under ROUND_SECONDS. Short rounds are
        # what keeps the median honest on a shared machine: a round that a context switch lands
        # in is an outlier among many clean ones, not a shift of all of them.
        per_call = timed(compile_loop(stmt, env, CALLS, is_async=is_async), CALLS, 3)
        calls = min(CALLS, max(UNROLL, int(ROUND_SECONDS / per_call) // UNROLL * UNROLL))
        run = compile_loop(stmt, env, calls, is_async=is_async)
        per_call = timed(run, calls, 3)
        rounds = max(MIN_ROUNDS, min(MAX_ROUNDS, int(TARGET_SECONDS / (per_call * calls))))
        self.benchmark.extra_info.update(
            key=key, impl=impl, role=role, baseline=baseline, calls=calls, stmt=stmt
        )
        self.benchmark.pedantic(run, setup=setup, rounds=rounds, iterations=1, warmup_rounds=0)
        return Measured(total_calls=total + rounds * calls, calls=calls)


@pytest.fixture
def measure(benchmark: Any) -> Measure:
    """``measure(key=..., impl=..., role=..., stmt=..., env=...)``: see `Measure`."""
    return Measure(benchmark)
