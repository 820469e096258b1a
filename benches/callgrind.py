"""Instruction counts by callgrind for the ``*_instructions.py`` scripts (noise-free figures).

Each script runs its workload as ``SCRIPT --workload NAME ROUNDS`` under callgrind at two
sizes; the difference per call cancels start-up and imports.
"""

from __future__ import annotations

import gc
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path


def count(script: str, which: str, rounds: int) -> int:
    """Instructions callgrind counts for ``script --workload which rounds`` (hash seed fixed)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        run = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out}",
                sys.executable,
                script,
                "--workload",
                which,
                str(rounds),
            ],
            capture_output=True,
            text=True,
            check=True,
            # str hashes change dict layouts and so the instructions a run takes: fix them.
            env={**os.environ, "PYTHONHASHSEED": "0"},
        )
    found = re.search(r"Collected : (\d+)", run.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count in valgrind's output:\n{run.stderr}")
    return int(found.group(1))


def per_call(script: str, which: str, calls: int, few: int, more: int) -> float:
    """Instructions per call: the difference between ``more`` and ``few`` rounds of ``calls``."""
    return (count(script, which, more) - count(script, which, few)) / ((more - few) * calls)


def print_table(script: str, names: list[str], calls: int, few: int, more: int) -> None:
    """A markdown table of instructions per call, one row per workload."""
    print("| workload | instructions per call |")
    print("| --- | ---: |")
    for which in names:
        print(f"| {which} | {per_call(script, which, calls, few, more):,.0f} |", flush=True)


def script_main(
    script: str,
    workloads: Callable[[], dict[str, Callable[[], object]]],
    calls: int,
    few: int,
    more: int,
) -> None:
    """What a ``*_instructions.py`` script does when run: ``--workload NAME ROUNDS`` runs that
    workload (under callgrind, called by `count`); otherwise prints the table of the
    workloads named on the command line (all of them by default)."""
    if len(sys.argv) == 4 and sys.argv[1] == "--workload":
        work = workloads()[sys.argv[2]]
        gc.collect()
        gc.disable()  # a collection is a rare, discrete event: keep it out of the difference
        for _ in range(int(sys.argv[3])):
            work()
    else:
        print_table(script, sys.argv[1:] or list(workloads()), calls, few, more)
