"""Per-call tables, a chart and the issue-2 target check from a pytest-benchmark JSON file.

    .venv/bin/python -m pytest benches -q --benchmark-only --benchmark-json=/tmp/b.json
    .venv/bin/python benches/report.py /tmp/b.json [--chart chart.png] [--results RESULTS.md]

``make bench`` runs both (the raw pytest-benchmark output goes to ``.bench/pytest.txt``).

One table per group (what it measures and its unit come from ``groups.py``): implementation,
ns per call or per task, query, ... (the median round divided by the operations per round; then
the best round, less sensitive to a noisy neighbour), the ratio of the medians to admission's
row in the same group, and to the group's floor. Ratios > 1 mean slower. Only ratios within
one run mean anything. ``--results`` rewrites the block between the markers ``BEGIN`` and
``END`` of a RESULTS.md with the same tables, so no figure there is copied by hand.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from groups import GROUPS


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
    """Rows per group, in `groups.GROUPS`' order (unknown groups last), fastest first."""
    groups: dict[str, list[Row]] = {}
    for row in rows:
        groups.setdefault(row.group, []).append(row)
    order = {name: i for i, name in enumerate(GROUPS)}
    return {
        name: sorted(groups[name], key=lambda r: r.ns)
        for name in sorted(groups, key=lambda g: (order.get(g, len(order)), g))
    }


def _pick(rows: list[Row], *, role: str, baseline: bool = False) -> Row | None:
    for row in rows:
        if row.role == role and (row.baseline or not baseline):
            return row
    return None


def references(members: list[Row]) -> tuple[Row | None, Row | None]:
    """The group's admission row the others are compared with, and its floor (if any)."""
    base = _pick(members, role="admission", baseline=True) or _pick(members, role="admission")
    return base, _pick(members, role="floor")


def _x(r: float) -> str:
    return f"{r:.2f}x" if r < 10 else f"{r:.0f}x"


def ratio(value: float, reference: Row | None) -> str:
    return "-" if reference is None else _x(value / reference.ns)


def _unit(group: str) -> str:
    return GROUPS[group].unit if group in GROUPS else "call"


def table(rows: list[Row]) -> str:
    """One markdown table per group, headed by what the group measures."""
    parts = []
    for group, members in by_group(rows).items():
        what = GROUPS[group].what if group in GROUPS else "(not described in groups.py)"
        unit = _unit(group)
        base, floor = references(members)
        lines = [
            f"**{group}**: {what}.",
            "",
            f"| implementation | ns per {unit} (median) | (best) | vs admission | vs floor |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for row in members:
            name = f"**{row.impl}**" if row.role == "admission" else row.impl
            if row.role == "floor" and "floor" not in name:
                name += " (floor)"
            median = f"{row.ns:,.0f}" + (" †" if disturbed(row) else "")
            lines.append(
                f"| {name} | {median} | {row.min_ns:,.0f} | {ratio(row.ns, base)} | "
                f"{ratio(row.ns, floor)} |"
            )
        if any(disturbed(row) for row in members):
            lines += ["", DISTURBED_NOTE]
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


#: A median this many times its best round was disturbed (a noisy neighbour for part of the
#: benchmark's rounds): its ratios mislead, its best round does not.
DISTURBED = 1.5
DISTURBED_NOTE = (
    f"† median over {DISTURBED} x the best round: disturbed by something else on the machine "
    "during this benchmark; compare its best round."
)


def disturbed(row: Row) -> bool:
    return row.ns > DISTURBED * row.min_ns


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


#: Bar colours by role: admission stands out, floors are grey.
COLOURS = {"admission": "#d95f02", "peer": "#1f78b4", "floor": "#8c8c8c", "reference": "#a6cee3"}
#: The markers around the block of RESULTS.md that `--results` rewrites.
BEGIN, END = "<!-- report.py: begin -->", "<!-- report.py: end -->"


def _wrap(text: str, width: int) -> str:
    return textwrap.fill(text, width, break_long_words=False)


def chart(rows: list[Row], data: dict[str, Any], path: Path) -> None:
    """One panel per group: ns per unit on a log scale, admission in orange, floors grey."""
    import matplotlib

    matplotlib.use("Agg")  # no display: a file is all we write
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    groups = list(by_group(rows).items())
    cols = min(2, len(groups))
    grid = [groups[i : i + cols] for i in range(0, len(groups), cols)]
    heights = [max(len(members) for _, members in line) + 2.2 for line in grid]
    fig, axes = plt.subplots(
        len(grid),
        cols,
        figsize=(8 * cols, 0.32 * sum(heights) + 1),
        gridspec_kw={"height_ratios": heights},
        squeeze=False,
    )
    for r, line in enumerate(grid):
        for c in range(cols):
            ax = axes[r][c]
            if c >= len(line):
                ax.set_visible(False)
                continue
            group, members = line[c]
            base, _ = references(members)
            members = members[::-1]  # fastest at the top
            ns = [m.ns for m in members]
            ax.barh(range(len(members)), ns, color=[COLOURS[m.role] for m in members])
            ax.set_yticks(range(len(members)))
            ax.set_yticklabels(
                [
                    (m.impl if len(m.impl) <= 48 else m.impl[:47] + "…")
                    + (" (floor)" if m.role == "floor" and "floor" not in m.impl else "")
                    for m in members
                ],
                fontsize=7,
            )
            for tick, m in zip(ax.get_yticklabels(), members, strict=True):
                if m.role == "admission":
                    tick.set_fontweight("bold")
            ax.set_xscale("log")
            ax.set_xlim(min(ns) / 2, max(ns) * 8)
            for y, m in enumerate(members):
                label = f" {m.ns:,.0f}" + (f" ({ratio(m.ns, base)})" if base else "")
                ax.text(m.ns, y, label, va="center", fontsize=6.5)
            ax.set_title(_wrap(group, 60), fontsize=8.5, loc="left")
            ax.set_xlabel(f"ns per {_unit(group)} (median; log scale)", fontsize=7)
            plain = FuncFormatter(lambda v, _: f"{v:,.0f}")
            ax.xaxis.set_major_formatter(plain)
            low, high = ax.get_xlim()
            if math.floor(math.log10(high)) < math.ceil(math.log10(low)):
                # No power of ten in view, so no major tick to read: label 2x and 5x instead.
                ax.xaxis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
                ax.xaxis.set_minor_formatter(plain)
            else:
                ax.xaxis.set_minor_formatter(NullFormatter())
            ax.tick_params(axis="x", which="both", labelsize=6.5)
    fig.suptitle(_wrap(header(data), 140), fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.985))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def results_block(data: dict[str, Any], rows: list[Row], command: str) -> str:
    """The generated part of RESULTS.md: how it was run, on what, and the tables."""
    return "\n\n".join([BEGIN, f"Command: `{command}`", header(data), table(rows), END])


def update_results(path: Path, block: str) -> None:
    """Replaces the text between the markers in ``path`` (which must hold them once)."""
    text = path.read_text()
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise SystemExit(f"{path}: expected one {BEGIN} ... {END} block to replace")
    head, rest = text.split(BEGIN)
    _, tail = rest.split(END)
    path.write_text(head + block + tail)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", type=Path, help="a pytest-benchmark --benchmark-json file")
    parser.add_argument("--no-targets", action="store_true", help="omit the target check")
    parser.add_argument("--chart", type=Path, help="also draw the chart (PNG) to this path")
    parser.add_argument(
        "--results", type=Path, help="also rewrite the generated block of this RESULTS.md"
    )
    parser.add_argument(
        "--command", default="make bench", help="the command named in the RESULTS.md block"
    )
    args = parser.parse_args(argv)
    data, rows = load(args.json)
    if not rows:
        print("no benchmarks in", args.json, file=sys.stderr)
        return 1
    print(header(data))
    print()
    print(table(rows))
    if not args.no_targets and (found := targets(rows)):
        print()
        print("Targets (issue 2):")
        print()
        print(found)
    if args.chart:
        chart(rows, data, args.chart)
        print(f"\nchart: {args.chart}")
    if args.results:
        update_results(args.results, results_block(data, rows, args.command))
        print(f"tables: {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
