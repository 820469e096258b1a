"""How fast `admission audit` reads code, and how much memory it needs (issue 19: 300k lines
in <= 10 s and <= 60 MiB on one core).

The corpus: the standard library's ``asyncio`` package and this repository's ``python/`` and
``tests/`` (the audit's own fixtures left out), copied side by side until it holds at least
``--lines`` lines (default 300,000). The audit runs once, in a child process pinned to one CPU
where the platform allows it; the figures are the child's CPU time (user + system), its wall
time and its peak resident memory.

    .venv/bin/python benches/audit_speed.py [--lines 300000] [--runs 3]

Each run is a fresh process: ``python -m admission audit --exit-zero --statistics CORPUS``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _sources() -> list[Path]:
    files = sorted(Path(asyncio.__file__).parent.glob("*.py"))
    for top in ("python", "tests"):
        files += sorted(
            p for p in (REPO / top).rglob("*.py") if "audit/fixtures" not in p.as_posix()
        )
    return files


def build_corpus(directory: Path, lines: int) -> tuple[int, int]:
    """Copies of the sources under ``directory`` until ``lines`` lines; (lines, files)."""
    sources = [(p, p.read_bytes()) for p in _sources()]
    total = files = copy = 0
    while total < lines:
        for index, (path, data) in enumerate(sources):
            target = directory / f"copy{copy}" / f"{index:04d}_{path.name}"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            total += data.count(b"\n")
            files += 1
        copy += 1
    return total, files


def run_once(corpus: Path) -> tuple[float, float, float, str]:
    """(cpu seconds, wall seconds, peak RSS MiB, the statistics it printed)."""
    command = [sys.executable, "-m", "admission", "audit", "--exit-zero", "--statistics"]
    command.append(str(corpus))
    if shutil.which("taskset"):
        command = ["taskset", "-c", "0", *command]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=600, check=False, cwd=corpus
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"the audit failed ({done.returncode}):\n{done.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    # ru_maxrss: the largest child so far, in KiB on Linux (bytes on macOS)
    scale = 1024 * 1024 if sys.platform == "darwin" else 1024
    return cpu, wall, after.ru_maxrss / scale, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=300_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="audit-corpus-") as tmp:
        corpus = Path(tmp)
        lines, files = build_corpus(corpus, args.lines)
        print(f"corpus: {lines:,} lines in {files:,} files (asyncio + this repository)")
        results = [run_once(corpus) for _ in range(args.runs)]
        for cpu, wall, rss, _ in results:
            print(f"  cpu {cpu:5.2f} s   wall {wall:5.2f} s   peak RSS {rss:5.1f} MiB")
        best = min(results)
        print(
            f"best: {best[0]:.2f} s of CPU for {lines:,} lines "
            f"({lines / best[0]:,.0f} lines/s), peak RSS {max(r[2] for r in results):.1f} MiB"
        )
        print("findings per rule in the corpus:")
        print(results[0][3], end="")
        if os.environ.get("AUDIT_BENCH_STRICT"):
            assert best[0] <= 10.0, "over 10 s of CPU"
            assert max(r[2] for r in results) <= 60.0, "over 60 MiB"


if __name__ == "__main__":
    main()
