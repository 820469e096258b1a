"""Memory per key of keyed rate limiters, measured as resident set size (RSS).

Each implementation runs in a fresh interpreter: it reads its RSS, gives ``N`` keys
(``"user:<n>"``, default 1,000,000) one admitted call each, collects garbage, and reads its
RSS again; the difference over ``N`` is the memory per key. The key strings themselves are
made (and kept) before the first reading, so they are not counted for anyone: what is
counted is what the limiter keeps per key.

    .venv/bin/python benches/keyed_memory.py [N]

Peers (from requirements/bench.txt): limits' ``MemoryStorage`` with its fixed-window and
moving-window strategies, and throttled-py's ``MemoryStore`` (which keeps at most 1,024
keys: its figure is what it keeps, not what the keys would need).
"""

from __future__ import annotations

import subprocess
import sys

CASES = {
    "admission KeyedTokenBucket": (
        "import admission as adm\n"
        "lim = adm.KeyedTokenBucket(rate=10, burst=20, max_keys=N)\n"
        "call = lim.try_acquire\n"
        "check = lambda: len(lim)\n"
    ),
    "admission KeyedSemaphore (key released)": (
        "import admission as adm\n"
        "lim = adm.KeyedSemaphore(5, max_keys=N)\n"
        "def call(k):\n    lim.try_acquire(k); lim.release(k)\n"
        "check = lambda: len(lim)\n"
    ),
    "limits FixedWindowRateLimiter": (
        "import limits\nfrom limits.storage import MemoryStorage\n"
        "from limits.strategies import FixedWindowRateLimiter\n"
        "storage = MemoryStorage()\nlim = FixedWindowRateLimiter(storage)\n"
        "item = limits.RateLimitItemPerMinute(10)\n"
        "call = lambda k: lim.hit(item, k)\n"
        "check = lambda: len(storage.storage)\n"
    ),
    "limits MovingWindowRateLimiter": (
        "import limits\nfrom limits.storage import MemoryStorage\n"
        "from limits.strategies import MovingWindowRateLimiter\n"
        "storage = MemoryStorage()\nlim = MovingWindowRateLimiter(storage)\n"
        "item = limits.RateLimitItemPerMinute(10)\n"
        "call = lambda k: lim.hit(item, k)\n"
        "check = lambda: len(storage.events)\n"
    ),
    "throttled-py token bucket (keeps 1,024 keys)": (
        "import throttled\n"
        "t = throttled.Throttled(using='token_bucket', quota=throttled.per_sec(10, burst=20),"
        " store=throttled.MemoryStore(), timeout=-1)\n"
        "call = t.limiter.limit\n"
        "check = lambda: None\n"
    ),
}

CHILD = """
import gc, sys
N = {n}
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096
keys = [f"user:{{i}}" for i in range(N)]
{setup}
call(keys[0])  # imports and first-use allocations before the first reading
gc.collect()
before = rss()
for k in keys:
    call(k)
gc.collect()
after = rss()
print((after - before) / N, check())
"""


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    print(f"| implementation | bytes per key ({n:,} keys, RSS) | keys held |")
    print("| --- | ---: | ---: |")
    for label, setup in CASES.items():
        src = CHILD.format(n=n, setup=setup)
        out = subprocess.run(
            [sys.executable, "-c", src], capture_output=True, text=True, timeout=600, check=False
        )
        if out.returncode != 0:
            print(f"| {label} | failed: {out.stderr.strip().splitlines()[-1]} | |")
            continue
        per_key, held = out.stdout.split()
        print(f"| {label} | {float(per_key):.1f} | {held} |")


if __name__ == "__main__":
    main()
