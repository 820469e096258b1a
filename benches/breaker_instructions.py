"""Instructions per call of a decorated function through a closed `CircuitBreaker`, counted
by callgrind (noise-free), beside the floors and the peers of ``bench_breaker.py``.

Each workload is one call in a loop, run under ``valgrind --tool=callgrind`` at two sizes;
the difference per call cancels start-up and imports. The coroutines are driven by hand
(``send(None)``, no event loop): none of them suspends. To compare two builds, run it once as
is and once with ``PYTHONPATH`` pointing at a directory holding the other build's
``admission/`` (with its ``_native`` extension).

Usage: .venv/bin/python benches/breaker_instructions.py [WORKLOAD ...]
Needs valgrind and requirements/bench.txt; about half a minute per workload.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

# The counter every *_instructions.py script shares (callgrind.py is next to this file).
from callgrind import script_main

CALLS = 100_000
#: Rounds of CALLS at the two sizes counted.
FEW, MORE = 1, 3


def noop() -> None:
    return None


async def anoop() -> None:
    return None


def _drive(coroutine: Coroutine[Any, Any, Any]) -> None:
    try:
        coroutine.send(None)
    except StopIteration:
        return
    raise AssertionError("the coroutine suspended: it needs a loop")


def workloads() -> dict[str, Callable[[], None]]:
    """Name -> one round of CALLS calls."""
    import aiobreaker
    import pybreaker

    import admission as adm

    breaker = adm.CircuitBreaker("bench", window=100, min_calls=20)
    decorated, adecorated = breaker(noop), breaker(anoop)
    peer = pybreaker.CircuitBreaker(fail_max=20, reset_timeout=30)
    apeer = aiobreaker.CircuitBreaker(fail_max=20)
    calls = range(CALLS)

    def floor_sync() -> None:
        def call() -> None:
            noop()

        for _ in calls:
            call()

    def admission_sync() -> None:
        for _ in calls:
            decorated()

    def pybreaker_sync() -> None:
        f = peer.call
        for _ in calls:
            f(noop)

    def floor_async() -> None:
        async def call() -> None:
            await anoop()

        for _ in calls:
            _drive(call())

    def admission_async() -> None:
        async def call() -> None:
            await adecorated()

        for _ in calls:
            _drive(call())

    def aiobreaker_async() -> None:
        f = apeer.call_async

        async def call() -> None:
            await f(anoop)

        for _ in calls:
            _drive(call())

    return {
        fn.__name__: fn
        for fn in (
            floor_sync,
            admission_sync,
            pybreaker_sync,
            floor_async,
            admission_async,
            aiobreaker_async,
        )
    }


if __name__ == "__main__":
    script_main(__file__, workloads, CALLS, FEW, MORE)
