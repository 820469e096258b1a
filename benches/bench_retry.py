"""The retry success path (issue 14): the first attempt succeeds. admission, tenacity and stamina
in the same run, each configured alike (5 attempts, exponential backoff from 100 ms capped at
10 s with jitter, a 30 s deadline where the library has one, retrying ConnectionError).

Targets: admission's success path costs <= 1/15 of tenacity's and <= 1/10 of stamina's, async
and sync. The floor is the bare call with no retry around it.

- async: each round awaits the decorated coroutine function ``FAST_CALLS`` times inside one
  ``loop.run_until_complete`` (as ``bench_async.py``), ``SLOW_CALLS`` for the slow peers, so
  that every round lasts a few milliseconds: short rounds keep a noisy neighbour to a few of
  them rather than shifting the median. The loop's per-round cost (tens of microseconds) is
  then a few percent of the peers' rounds and of admission's, charged to both;
- sync: ``measure`` (see conftest.py), one call per statement.

Run it and read the ratios ("vs admission") with::

    .venv/bin/python -m pytest benches/bench_retry.py -q --benchmark-only \\
        --benchmark-json=/tmp/retry.json
    .venv/bin/python benches/report.py /tmp/retry.json --no-targets
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

import pytest
import stamina
import tenacity

import admission as adm

FAST_CALLS = 1_000
SLOW_CALLS = 20
ROUNDS = 100


@pytest.fixture(scope="module")
def loop() -> Any:
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


def _admission(**kwargs: Any) -> adm.Retry:
    return adm.Retry(
        attempts=5,
        deadline="30s",
        base="100ms",
        cap="10s",
        jitter="full",
        retry_on=ConnectionError,
        **kwargs,
    )


def _tenacity(fn: Callable[..., Any]) -> Any:
    return tenacity.retry(
        stop=tenacity.stop_after_attempt(5) | tenacity.stop_after_delay(30),
        wait=tenacity.wait_random_exponential(multiplier=0.1, max=10),
        retry=tenacity.retry_if_exception_type(ConnectionError),
    )(fn)


def _stamina(fn: Callable[..., Any]) -> Any:
    return stamina.retry(
        on=ConnectionError, attempts=5, timeout=30.0, wait_initial=0.1, wait_max=10.0
    )(fn)


class Row(NamedTuple):
    key: str
    impl: str
    role: str
    baseline: bool
    #: Wraps the function under test (None: the bare function, the floor).
    wrap: Callable[[Callable[..., Any]], Any] | None
    calls: int


ROWS = [
    Row("admission.Retry", "admission @Retry", "admission", True, lambda f: _admission()(f), 0),
    Row(
        "admission.Retry.call",
        "admission retry.call(fn) / call_blocking(fn)",
        "admission",
        False,
        None,
        0,
    ),
    Row(
        "admission.Retry+budget",
        "admission @Retry, budget=RetryBudget()",
        "admission",
        False,
        lambda f: _admission(budget=adm.RetryBudget())(f),
        0,
    ),
    Row("tenacity", "tenacity @retry", "peer", False, _tenacity, SLOW_CALLS),
    Row("stamina", "stamina @retry", "peer", False, _stamina, SLOW_CALLS),
    Row("bare call", "no retry (floor)", "floor", False, lambda f: f, 0),
]


def parametrize_rows() -> pytest.MarkDecorator:
    return pytest.mark.parametrize("row", ROWS, ids=[r.key for r in ROWS])


async def _answer() -> int:
    return 42


def _answer_blocking() -> int:
    return 42


@pytest.mark.benchmark(group="retry success path (async)")
@parametrize_rows()
def test_async_success_path(benchmark: Any, loop: Any, row: Row) -> None:
    calls = row.calls or FAST_CALLS
    if row.wrap is None:  # retry.call(fn)
        call = _admission().call

        async def one_round() -> None:
            for _ in range(calls):
                await call(_answer)

    else:
        fn = row.wrap(_answer)

        async def one_round() -> None:
            for _ in range(calls):
                await fn()

    run_rounds(benchmark, loop, one_round, row, calls)


def run_rounds(
    benchmark: Any,
    loop: asyncio.AbstractEventLoop,
    one_round: Callable[[], Awaitable[None]],
    row: Row,
    calls: int,
) -> None:
    benchmark.extra_info.update(
        key=row.key, impl=row.impl, role=row.role, baseline=row.baseline, calls=calls
    )
    benchmark.pedantic(
        lambda: loop.run_until_complete(one_round()),
        rounds=ROUNDS,
        iterations=1,
        warmup_rounds=2,
    )


@pytest.mark.benchmark(group="retry success path (sync)")
@parametrize_rows()
def test_sync_success_path(measure: Any, row: Row) -> None:
    if row.wrap is None:
        env: dict[str, Any] = {"call": _admission().call_blocking, "fn": _answer_blocking}
        stmt = "call(fn)"
    else:
        env = {"fn": row.wrap(_answer_blocking)}
        stmt = "fn()"
    measure(key=row.key, impl=row.impl, role=row.role, baseline=row.baseline, stmt=stmt, env=env)
