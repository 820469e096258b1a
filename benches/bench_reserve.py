"""Reserve, then settle (issue 15): ``manager.limit(name, tokens=est)`` against
``tpm.reserve(est)`` on a bucket alone, in the same run.

Each call enters the block (admitted at once: the limits are far from spent), settles at a
lower real count (the rest goes back) and leaves. The manager's limit has a concurrency, a
request rate and a token rate (its block takes a permit, then a request and the tokens all
or nothing); the bucket alone is the reservation without the rest. Run::

    .venv/bin/python -m pytest benches/bench_reserve.py -q --benchmark-only \\
        --benchmark-json=/tmp/reserve.json
    .venv/bin/python benches/report.py /tmp/reserve.json --no-targets
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import admission as adm

CALLS = 500
ROUNDS = 60
ESTIMATE, ACTUAL = 800, 300


def _manager() -> adm.ConcurrencyManager:
    limit = {"concurrency": 1000, "rate": "1000000/min", "tokens": "1000000000/min"}
    return adm.ConcurrencyManager.from_dict({"limits": {"llm": limit}})


ROWS = [
    ("manager.limit(tokens=)", "manager.limit('llm', tokens=est) (permit, request, tokens)"),
    ("tpm.reserve", "tpm.reserve(est) (the token bucket alone)"),
]


@pytest.fixture(scope="module")
def loop() -> Any:
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


def _info(benchmark: Any, key: str, impl: str) -> None:
    baseline = key == "manager.limit(tokens=)"
    benchmark.extra_info.update(
        key=key,
        impl=impl,
        role="admission" if baseline else "reference",
        baseline=baseline,
        calls=CALLS,
    )


@pytest.mark.benchmark(group="reserve and settle (async)")
@pytest.mark.parametrize(("key", "impl"), ROWS, ids=[k for k, _ in ROWS])
def test_async_reserve(benchmark: Any, loop: Any, key: str, impl: str) -> None:
    manager = _manager()
    tpm = adm.TokenBucket(rate=1e9, per=60.0)

    async def through_the_manager() -> None:
        for _ in range(CALLS):
            async with manager.limit("llm", tokens=ESTIMATE) as r:
                r.settle(ACTUAL)

    async def the_bucket() -> None:
        for _ in range(CALLS):
            async with tpm.reserve(ESTIMATE) as r:
                r.settle(ACTUAL)

    one_round = through_the_manager if key.startswith("manager") else the_bucket
    _info(benchmark, key, impl)
    benchmark.pedantic(
        lambda: loop.run_until_complete(one_round()), rounds=ROUNDS, iterations=1, warmup_rounds=2
    )


@pytest.mark.benchmark(group="reserve and settle (sync)")
@pytest.mark.parametrize(("key", "impl"), ROWS, ids=[k for k, _ in ROWS])
def test_sync_reserve(benchmark: Any, key: str, impl: str) -> None:
    manager = _manager()
    tpm = adm.TokenBucket(rate=1e9, per=60.0)

    def through_the_manager() -> None:
        for _ in range(CALLS):
            with manager.limit("llm", tokens=ESTIMATE) as r:
                assert r is not None
                r.settle(ACTUAL)

    def the_bucket() -> None:
        for _ in range(CALLS):
            with tpm.reserve(ESTIMATE) as r:
                r.settle(ACTUAL)

    one_round = through_the_manager if key.startswith("manager") else the_bucket
    _info(benchmark, key, impl)
    benchmark.pedantic(one_round, rounds=ROUNDS, iterations=1, warmup_rounds=2)
