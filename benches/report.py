"""Markdown table (and the issue-2 target check) from a pytest-benchmark JSON file.

    .venv/bin/python -m pytest benches -q --benchmark-only --benchmark-json=/tmp/b.json
    .venv/bin/python benches/report.py /tmp/b.json

Columns: operation (the benchmark group), implementation, ns per call (the median round
divided by the calls per round; then the fastest round, less sensitive to a noisy neighbour),
the ratio of the medians to admission's row in the same group, and to the group's floor.
Ratios > 1 mean slower. Only ratios within one run mean anything.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GROUP_ORDER = ["try_acquire admitted", "try_acquire rejected", "semaphore try_acquire+release"]


@dataclass(frozen=True)
class Row:
    group: str
    key: str
    impl: str
    role: str
    baseline: bool
    ns: float  # median per call
    min_ns: float  # fastest round, per call
    rounds: int


def load(path: Path) -> tuple[dict[str, Any], list[Row]]:
    data = json.loads(path.read_text())
    rows = []
    for bench in data["benchmarks"]:
        info = bench.get("extra_info", {})
        calls = info.get("calls", 1)
        rows.append(
            Row(
                group=bench.get("group") or "(no group)",
                key=info.get("key", bench["name"]),
                impl=info.get("impl", bench["name"]),
                role=info.get("role", "peer"),
                baseline=bool(info.get("baseline", False)),
                ns=bench["stats"]["median"] / calls * 1e9,
                min_ns=bench["stats"]["min"] / calls * 1e9,
                rounds=bench["stats"]["rounds"],
            )
        )
    return data, rows


def by_group(rows: list[Row]) -> dict[str, list[Row]]:
    groups: dict[str, list[Row]] = {}
    for row in rows:
        groups.setdefault(row.group, []).append(row)
    order = {name: i for i, name in enumerate(GROUP_ORDER)}
    return {
        name: sorted(groups[name], key=lambda r: r.ns)
        for name in sorted(groups, key=lambda g: (order.get(g, len(order)), g))
    }


def _pick(rows: list[Row], *, role: str, baseline: bool = False) -> Row | None:
    for row in rows:
        if row.role == role and (row.baseline or not baseline):
            return row
    return None


def _x(r: float) -> str:
    return f"{r:.2f}x" if r < 10 else f"{r:.0f}x"


def ratio(value: float, reference: Row | None) -> str:
    return "-" if reference is None else _x(value / reference.ns)


def table(rows: list[Row]) -> str:
    lines = [
        "| operation | implementation | ns per call (median) | (min) | vs admission | vs floor |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for group, members in by_group(rows).items():
        base = _pick(members, role="admission", baseline=True) or _pick(members, role="admission")
        floor = _pick(members, role="floor")
        for row in members:
            name = f"**{row.impl}**" if row.role == "admission" else row.impl
            lines.append(
                f"| {group} | {name} | {row.ns:,.0f} | {row.min_ns:,.0f} | {ratio(row.ns, base)} | "
                f"{ratio(row.ns, floor)} |"
            )
    return "\n".join(lines)


def _find(rows: list[Row], group: str, key: str) -> Row | None:
    return next((r for r in rows if r.group == group and r.key == key), None)


def targets(rows: list[Row]) -> str:
    """The issue-2 targets, checked against this run.

    Each is judged on the medians and on the fastest rounds. On a quiet machine they agree; on
    a shared one a neighbour landing on one benchmark's second of rounds moves its median (not
    its fastest round), so a target met on fastest rounds only is reported as such, with both
    numbers, rather than hidden either way.
    """
    admitted, rejected = "try_acquire admitted", "try_acquire rejected"
    sem_group = "semaphore try_acquire+release"
    out = []

    def verdict(on_median: bool, on_min: bool) -> str:
        if on_median and on_min:
            return "met"
        if on_min:
            return "met on fastest rounds; median disturbed (noise?)"
        if on_median:
            return "met on medians only"
        return "NOT met"

    def check(a: Row, b: Row, ok: Callable[[float, float], bool], text: str) -> None:
        """``ok(a_ns, b_ns)`` on medians and on fastest rounds."""
        mark = verdict(ok(a.ns, b.ns), ok(a.min_ns, b.min_ns))
        out.append(
            f"- {text}: median {a.ns:,.0f} vs {b.ns:,.0f} ns = {_x(a.ns / b.ns)}; "
            f"fastest rounds {a.min_ns:,.0f} vs {b.min_ns:,.0f} ns = "
            f"{_x(a.min_ns / b.min_ns)}: **{mark}**"
        )

    bucket = _find(rows, admitted, "admission.TokenBucket")
    clock = _find(rows, admitted, "time.monotonic_ns")
    moving = _find(rows, admitted, "limits.moving")
    if bucket and clock:
        check(
            bucket,
            clock,
            lambda a, b: a <= 2 * b,
            "admitted path <= 2 x `time.monotonic_ns()` (TokenBucket vs floor)",
        )
    if bucket and moving:
        check(
            moving,
            bucket,
            lambda a, b: a >= 30 * b,
            ">= 30 x faster than limits' moving window (limits vs TokenBucket)",
        )
        others = [r for r in rows if r.group == admitted and r.key.startswith("limits.")]
        if others:
            fastest = min(others, key=lambda r: r.ns)
            out.append(
                f"  - and than every limits strategy: the fastest, {fastest.impl}, takes "
                f"{fastest.ns / bucket.ns:.0f} x admission's time"
            )
    for key in ("admission.TokenBucket", "admission.SlidingWindow"):
        adm_ok = _find(rows, admitted, key)
        adm_no = _find(rows, rejected, key)
        if adm_ok and adm_no:
            check(
                adm_no,
                adm_ok,
                lambda a, b: a <= b,
                f"{key} rejected path no slower than admitted (rejected vs admitted)",
            )
    sem = _find(rows, sem_group, "admission.Semaphore")
    if sem:
        parts = []
        for key in ("threading.Semaphore", "threading.BoundedSemaphore"):
            peer = _find(rows, sem_group, key)
            if peer:
                parts.append(f"{peer.ns / sem.ns:.1f} x faster than {key}")
        aio, sem_async = (
            _find(rows, sem_group, "asyncio.Semaphore"),
            _find(rows, sem_group, "admission.Semaphore.async"),
        )
        if aio and sem_async:
            parts.append(
                f"awaited: {sem_async.ns:,.0f} ns, {aio.ns / sem_async.ns:.1f} x faster than "
                f"asyncio.Semaphore ({aio.ns:,.0f} ns)"
            )
        elif aio:
            parts.append(f"{aio.ns / sem.ns:.1f} x faster than asyncio.Semaphore (awaited)")
        lock = _find(rows, sem_group, "_thread.lock")
        if lock:
            parts.append(f"{sem.ns / lock.ns:.2f} x a C lock's acquire(False)+release")
        floor = _find(rows, sem_group, "two_c_calls")
        if floor:
            parts.append(f"{sem.ns / floor.ns:.2f} x two bare C calls (the floor)")
        out.append(
            f"- semaphore try_acquire+release pair (no numeric target in issue 2): "
            f"{sem.ns:,.0f} ns; " + "; ".join(parts)
        )
    return "\n".join(out)


def header(data: dict[str, Any]) -> str:
    machine = data.get("machine_info", {})
    cpu = machine.get("cpu", {}).get("brand_raw", "?")
    commit = data.get("commit_info", {})
    return (
        f"CPython {machine.get('python_version', '?')} on {cpu}; "
        f"pytest-benchmark {data.get('version', '?')}; run at {data.get('datetime', '?')}; "
        f"commit {str(commit.get('id', '?'))[:7]}{' (dirty tree)' if commit.get('dirty') else ''}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", type=Path, help="a pytest-benchmark --benchmark-json file")
    parser.add_argument("--no-targets", action="store_true", help="omit the target check")
    args = parser.parse_args(argv)
    data, rows = load(args.json)
    if not rows:
        print("no benchmarks in", args.json, file=sys.stderr)
        return 1
    print(header(data))
    print()
    print(table(rows))
    if not args.no_targets:
        print()
        print("Targets (issue 2):")
        print()
        print(targets(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
