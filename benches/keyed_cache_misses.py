"""Cache misses per ``KeyedTokenBucket.try_acquire(key)`` with 1,000,000 keys held, counted by
cachegrind: the figure the map's layout is about, free of the host's noise.

At a million keys the map is far larger than the caches, so a call costs the lines it misses
(each one a trip to memory: a few hundred ns on a busy host). cachegrind simulates the caches
of an x86 core with a 32 MB last-level cache; each workload runs at two call counts and the
difference per call cancels the start-up and the filling of the map. The workloads are
``bench_keyed.py``'s: ``uniform`` (the calls cycle through every key) and ``zipf`` (calls drawn
from a Zipf law of exponent 1.1).

    .venv/bin/python benches/keyed_cache_misses.py [N]      # needs valgrind; a few minutes
"""

from __future__ import annotations

import itertools
import random
import re
import subprocess
import sys
import tempfile
from pathlib import Path

#: Calls of the two runs of each workload (their difference is what is counted).
FEW, MORE = 40_000, 140_000
#: The simulated caches: 32 KB first-level, and a 32 MB last level (this host's L3).
CACHES = ["--I1=32768,8,64", "--D1=32768,8,64", "--LL=33554432,16,64"]


def workload(name: str, n: int, calls: int) -> None:
    """Fills a limiter with ``n`` keys, then makes ``calls`` calls of workload ``name``."""
    import admission as adm

    keys = [f"user:{i}" for i in range(n)]
    order = keys[:]
    random.Random(16).shuffle(order)
    limiter = adm.KeyedTokenBucket(rate=1e6, burst=10**6, max_keys=n)
    acquire = limiter.try_acquire
    for key in order:
        acquire(key)
    if name == "uniform":
        sequence = list(itertools.islice(itertools.cycle(keys), MORE))
    else:
        cum = list(itertools.accumulate(1 / (i + 1) ** 1.1 for i in range(n)))
        ranks = random.Random(1).choices(range(n), cum_weights=cum, k=MORE)
        sequence = [order[i] for i in ranks]
    for key in sequence[:calls]:
        acquire(key)


def count(name: str, n: int, calls: int) -> dict[str, int]:
    """cachegrind's totals (instructions, D1 and LL data misses) for one run."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cachegrind.out"
        run = subprocess.run(
            [
                "valgrind",
                "--tool=cachegrind",
                f"--cachegrind-out-file={out}",
                *CACHES,
                sys.executable,
                __file__,
                "--workload",
                name,
                str(n),
                str(calls),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
    totals: dict[str, int] = {}
    for label, pattern in [
        ("instructions", r"I\s+refs:\s+([\d,]+)"),
        ("d1", r"D1\s+misses:\s+([\d,]+)"),
        ("ll", r"LLd misses:\s+([\d,]+)"),
    ]:
        found = re.search(pattern, run.stderr)
        if found is None:
            raise RuntimeError(f"no {label} in cachegrind's output:\n{run.stderr}")
        totals[label] = int(found.group(1).replace(",", ""))
    return totals


def main() -> None:
    if sys.argv[1:2] == ["--workload"]:
        workload(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        return
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    print(f"| workload ({n:,} keys), per call | instructions | D1 misses | LL misses |")
    print("| --- | ---: | ---: | ---: |")
    for name in ("uniform", "zipf"):
        few, more = count(name, n, FEW), count(name, n, MORE)
        per = {k: (more[k] - few[k]) / (MORE - FEW) for k in few}
        print(
            f"| {name} | {per['instructions']:,.0f} | {per['d1']:.2f} | {per['ll']:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
