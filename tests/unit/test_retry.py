"""`adm.Retry` (issue 14, "Retry"): each behaviour on asyncio, trio and threads, on virtual time.

The ``h`` fixture is a `retry_harness.Harness` per loop kind; most tests also run through each
API (the decorator, ``call``/``call_blocking``, ``for``/``async for attempt``). Waits are
asserted exactly: asyncio and trio run on autojumping virtual clocks (the retry reads the
loop's clock and sleeps on the loop), threads on a `ManualClock` given as ``clock=``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import random
import signal
import threading
import time
from typing import Any

import anyio
import pytest
from retry_harness import APIS, KINDS, Harness
from support import unique

import admission as adm
from admission import retry as retry_module
from admission.retry import transient


@pytest.fixture(params=KINDS)
def h(request: pytest.FixtureRequest) -> Harness:
    return Harness(request.param)


@pytest.fixture(params=APIS)
def api(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Hinted(Exception):
    """A retryable error carrying a server hint, like `adm.CircuitOpen`."""

    def __init__(self, retry_after: Any) -> None:
        super().__init__(f"retry after {retry_after!r}")
        self.retry_after = retry_after


# --- the basics, every API --------------------------------------------------------------------- -


def test_retries_until_success(h: Harness, api: str) -> None:
    retry = h.retry(attempts=5, base=1, jitter="none")
    run = h.run(retry, [ConnectionError, TimeoutError, "ok"], api=api)
    assert run.error is None
    assert run.result == "ok"
    assert run.starts == [0.0, 1.0, 3.0]
    s = retry.stats()
    assert (s.calls, s.attempts, s.retries, s.succeeded, s.in_flight) == (1, 3, 2, 1, 0)
    assert s.waited == 3.0


def test_first_attempt_success_counts(h: Harness, api: str) -> None:
    retry = h.retry()
    for _ in range(3):
        assert h.run(retry, ["ok"], api=api).result == "ok"
    s = retry.stats()
    assert (s.calls, s.attempts, s.retries, s.succeeded, s.in_flight) == (3, 3, 0, 3, 0)
    assert s.waited == 0.0


def test_gives_up_after_attempts_with_the_last_exception(h: Harness, api: str) -> None:
    retry = h.retry(attempts=3, base=1, jitter="none")
    last = ConnectionResetError("third")
    run = h.run(retry, [ConnectionError("1"), ConnectionError("2"), last], api=api)
    assert run.error is last
    assert run.starts == [0.0, 1.0, 3.0]
    assert run.end == 3.0  # no wait after the last attempt
    s = retry.stats()
    assert s.gave_up["attempts"] == 1
    assert (s.attempts, s.retries, s.succeeded, s.in_flight) == (3, 2, 0, 0)


def test_the_last_exception_is_not_chained_to_earlier_attempts(h: Harness, api: str) -> None:
    # Raised as the caller would have seen it without retries: no "During handling of the
    # above exception, another exception occurred" naming the attempts before.
    retry = h.retry(attempts=3, base=1, jitter="none")
    run = h.run(retry, [ConnectionError("1"), ConnectionError("2"), ConnectionError("3")], api=api)
    assert str(run.error) == "3"
    assert run.error is not None
    assert run.error.__context__ is None
    assert run.error.__cause__ is None


def test_not_retryable_is_raised_at_once(h: Harness, api: str) -> None:
    retry = h.retry(attempts=5, retry_on=ConnectionError)
    bug = ValueError("bad request")
    run = h.run(retry, [bug], api=api)
    assert run.error is bug
    assert run.starts == [0.0]
    s = retry.stats()
    assert (s.failed, s.attempts, s.retries) == (1, 1, 0)


def test_retry_on_tuple_and_predicate(h: Harness) -> None:
    retry = h.retry(base=1, jitter="none", retry_on=(KeyError, IndexError))
    assert h.run(retry, [KeyError, IndexError, 1]).result == 1
    picky = h.retry(base=1, jitter="none", retry_on=lambda e: "again" in str(e))
    assert h.run(picky, [RuntimeError("again"), 2]).result == 2
    run = h.run(picky, [RuntimeError("no")])
    assert isinstance(run.error, RuntimeError)
    assert len(run.starts) == 1


def test_retry_if_result_then_returns_the_last_result(h: Harness) -> None:
    retry = h.retry(attempts=3, base=1, jitter="none", retry_if=lambda r: r == "busy")
    run = h.run(retry, ["busy", "busy", "busy"])
    assert run.error is None
    assert run.result == "busy"  # given up on: the last result, as without retries
    assert run.starts == [0.0, 1.0, 3.0]
    assert retry.stats().gave_up["attempts"] == 1
    assert h.run(retry, ["busy", "done"]).result == "done"


@pytest.mark.parametrize("api", ["decorator", "call"])
def test_retry_if_is_asked_once_per_result(h: Harness, api: str) -> None:
    """Two results, the first retried: two questions (the first result was asked twice: once
    on the fast path, again by the plan)."""
    asked: list[str] = []

    def retry_if(result: str) -> bool:
        asked.append(result)
        return result == "busy"

    retry = h.retry(attempts=3, base=1, jitter="none", retry_if=retry_if)
    assert h.run(retry, ["busy", "done"], api=api).result == "done"
    assert asked == ["busy", "done"]


@pytest.mark.parametrize("api", ["decorator", "call"])
@pytest.mark.parametrize("retried", [0, 1], ids=["first result", "a later one"])
def test_a_retry_if_that_raises_ends_the_call_as_failed(h: Harness, api: str, retried: int) -> None:
    """Its exception goes up unchanged, and the call is counted as failed (not in flight
    for ever), on the fast path too."""
    error = LookupError("the predicate's own bug")

    def retry_if(result: str) -> bool:
        if result == "odd":
            raise error
        return result == "busy"

    retry = h.retry(attempts=3, base=1, jitter="none", retry_if=retry_if)
    run = h.run(retry, ["busy"] * retried + ["odd"], api=api)
    assert run.error is error
    s = retry.stats()
    assert (s.calls, s.attempts, s.failed, s.in_flight) == (1, retried + 1, 1, 0)


@pytest.mark.parametrize("asynchronous", [False, True], ids=["thread", "asyncio"])
def test_a_retry_if_that_raises_gives_its_breaker_slot_back(asynchronous: bool) -> None:
    """A half-open breaker's one probe judged by a raising ``retry_if``: the probe's slot
    comes back (the attempt says nothing about the dependency), so the breaker is not left
    waiting for that probe's outcome for good."""
    clock = adm.testing.ManualClock()
    breaker = adm.CircuitBreaker(
        "probe", window=10, min_calls=2, open_for="30s", half_open_calls=1, clock=clock
    )
    for _ in range(2):
        with pytest.raises(ConnectionError), breaker:
            raise ConnectionError("down")
    clock.advance(31)
    error = LookupError("the predicate's own bug")

    def judge(result: str) -> bool:
        raise error

    retry = adm.Retry(3, breaker=breaker, retry_if=judge, clock=clock)

    async def probe() -> str:
        return "ok"

    def call() -> object:
        return asyncio.run(retry(probe)()) if asynchronous else retry(lambda: "ok")()

    with pytest.raises(LookupError) as raised:
        call()
    assert raised.value is error
    assert breaker.try_acquire()  # the probe's slot is free again
    breaker.release()
    assert retry.stats().failed == 1


def test_async_decorator_keeps_function_identity() -> None:
    retry = adm.Retry()

    @retry
    async def fetch(x: int) -> int:
        """Fetches."""
        return x

    assert fetch.__name__ == "fetch"
    assert fetch.__doc__ == "Fetches."
    assert fetch.retry is retry  # type: ignore[attr-defined]
    import inspect

    assert inspect.iscoroutinefunction(fetch)

    @retry
    def compute(x: int) -> int:
        return x

    assert not inspect.iscoroutinefunction(compute)
    assert compute(3) == 3


def test_decorated_method_binds_self(h: Harness) -> None:
    retry = h.retry(base=1, jitter="none")
    if h.kind == "threads":

        class Client:
            def __init__(self) -> None:
                self.calls = 0

            @retry
            def get(self, x: int) -> int:
                self.calls += 1
                if self.calls < 2:
                    raise ConnectionError
                return x

        c = Client()
        assert c.get(7) == 7
        assert c.calls == 2
        return

    class AsyncClient:
        def __init__(self) -> None:
            self.calls = 0

        @retry
        async def get(self, x: int) -> int:
            self.calls += 1
            if self.calls < 2:
                raise ConnectionError
            return x

    async def main() -> tuple[int, int]:
        c = AsyncClient()
        return await c.get(7), c.calls

    assert h.run_async(main) == (7, 2)


def test_generators_are_refused() -> None:
    retry = adm.Retry()

    def gen() -> Any:
        yield 1

    async def agen() -> Any:
        yield 1

    for fn in (gen, agen):
        with pytest.raises(TypeError, match="generator"):
            retry(fn)


def test_iteration_body_without_with_counts_as_success(h: Harness) -> None:
    retry = h.retry()
    numbers: list[int] = []
    if h.kind == "threads":
        for attempt in retry:
            numbers.append(attempt.number)
    else:

        async def main() -> None:
            async for attempt in retry:
                numbers.append(attempt.number)

        h.run_async(main)
    assert numbers == [1]
    s = retry.stats()
    assert (s.calls, s.attempts, s.succeeded) == (1, 1, 1)


@pytest.mark.parametrize("kind", ["asyncio", "trio"])
def test_async_with_attempt(kind: str) -> None:
    h = Harness(kind)
    retry = adm.Retry(base=1, jitter="none")
    seen: list[tuple[int, float]] = []

    async def main() -> None:
        async for attempt in retry:
            async with attempt:
                seen.append((attempt.number, anyio.current_time()))
                if attempt.number < 3:
                    raise ConnectionError

    h.run_async(main)
    assert [n for n, _ in seen] == [1, 2, 3]
    assert [b - a for (_, a), (_, b) in itertools.pairwise(seen)] == [1.0, 2.0]


# --- backoff -------------------------------------------------------------------------------------


def test_full_jitter_caps_before_jitter(h: Harness) -> None:
    # random() == 0.5: each wait is half its ceiling min(cap, base * 2 ** (n - 1)), so from
    # the cap on the waits are cap / 2, not cap (capped after the jitter they would be cap).
    retry = h.retry(attempts=8, base=1, cap=8, jitter="full", random=lambda: 0.5)
    run = h.run(retry, [ConnectionError] * 7 + ["ok"])
    assert run.waits == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0]


def test_full_jitter_waits_from_attempt_7_are_spread(h: Harness) -> None:
    # stamina (wait_max 5 s) waits exactly 5.0 s from its 7th attempt on; full jitter with the
    # cap applied first keeps spreading the waits over [0, cap).
    retry = h.retry(attempts=12, base=0.1, cap=5, jitter="full", random=random.Random(7))
    waits: list[float] = []
    for _ in range(20):
        waits += h.run(retry, [ConnectionError] * 11 + ["ok"]).waits[6:]
    assert len(waits) == 100
    assert all(0 <= w < 5.0 for w in waits)
    assert len(set(waits)) == 100
    assert 1.5 < sum(waits) / len(waits) < 3.5  # uniform on [0, 5): mean 2.5
    assert min(waits) < 0.5
    assert max(waits) > 4.5
    assert sum(w < 2.5 for w in waits) > 25
    assert sum(w >= 2.5 for w in waits) > 25


def test_no_jitter_doubles_up_to_the_cap(h: Harness) -> None:
    retry = h.retry(attempts=6, base="100ms", cap="500ms", jitter="none")
    run = h.run(retry, [ConnectionError] * 5 + ["ok"])
    assert [round(w, 9) for w in run.waits] == [0.1, 0.2, 0.4, 0.5, 0.5]


def test_decorrelated_jitter(h: Harness) -> None:
    draws = random.Random(3)
    expected, previous = [], 1.0
    for _ in range(6):
        previous = min(10.0, 1.0 + draws.random() * (previous * 3 - 1.0))
        expected.append(previous)
    retry = h.retry(attempts=7, base=1, cap=10, jitter="decorrelated", random=random.Random(3))
    run = h.run(retry, [ConnectionError] * 6 + ["ok"])
    assert run.waits == pytest.approx(expected, abs=1e-9)
    # (the ManualClock keeps nanoseconds: a wait of 10 s may read 10.000000001)
    assert all(1.0 - 1e-6 <= w <= 10.0 + 1e-6 for w in run.waits)


def test_seeded_random_reproduces_the_waits(h: Harness) -> None:
    runs = []
    for _ in range(2):
        retry = h.retry(attempts=6, base=0.5, cap=4, random=random.Random(42))
        runs.append(h.run(retry, [ConnectionError] * 5 + ["ok"]).waits)
    assert runs[0] == runs[1]
    assert len(set(runs[0])) == 5


def test_defaults_for_http_apis() -> None:
    retry = adm.Retry()
    assert (retry.attempts, retry.deadline, retry.base, retry.cap, retry.jitter) == (
        5,
        30.0,
        0.1,
        10.0,
        "full",
    )
    assert retry.budget is None
    assert retry.breaker is None


# --- deadline ------------------------------------------------------------------------------------


def test_wait_past_the_deadline_gives_up_at_once(h: Harness, api: str) -> None:
    # Attempts at 0, 4; the next wait (8 s) would end at 12 > 10: give up at 4, not wait.
    retry = h.retry(attempts=10, deadline=10, base=4, cap=100, jitter="none")
    last = ConnectionError("second")
    run = h.run(retry, [ConnectionError("first"), last], api=api)
    assert run.error is last
    assert run.starts == [0.0, 4.0]
    assert run.end == 4.0
    assert retry.stats().gave_up == {"attempts": 0, "deadline": 1, "budget": 0}


def test_deadline_counts_the_attempts_time(h: Harness) -> None:
    # Each attempt takes 3 s: 0-3 fail, wait 1, 4-7 fail, wait 2 would end at 9 > 8.
    retry = h.retry(attempts=10, deadline=8, base=1, jitter="none")
    run = h.run(retry, [ConnectionError] * 3, duration=3.0)
    assert isinstance(run.error, ConnectionError)
    assert run.starts == [0.0, 4.0]
    assert run.end == 7.0


def test_a_wait_ending_at_the_deadline_gives_up(h: Harness) -> None:
    # As tenacity's stop_before_delay: an attempt starting at the deadline has no time left.
    retry = h.retry(attempts=10, deadline=3, base=1, jitter="none")
    run = h.run(retry, [ConnectionError, ConnectionError, "ok"])
    assert isinstance(run.error, ConnectionError)
    assert run.starts == [0.0, 1.0]
    assert run.end == 1.0


def test_deadline_alone_bounds_unlimited_attempts(h: Harness) -> None:
    retry = h.retry(attempts=None, deadline=60, base=1, cap=8, jitter="none")
    run = h.run(retry, [ConnectionError] * 100)
    assert isinstance(run.error, ConnectionError)
    assert run.starts == [0.0, 1.0, 3.0, 7.0, 15.0, 23.0, 31.0, 39.0, 47.0, 55.0]
    assert retry.stats().gave_up["deadline"] == 1


# --- server hints --------------------------------------------------------------------------------


def test_retry_after_hint_waits_at_least_that_long(h: Harness, api: str) -> None:
    retry = h.retry(base=0.1, jitter="none")
    run = h.run(retry, [Hinted(5), "ok"], api=api)
    assert run.result == "ok"
    assert run.waits == [5.0]


def test_hint_shorter_than_the_backoff_leaves_the_backoff(h: Harness) -> None:
    retry = h.retry(base=2, jitter="none")
    assert h.run(retry, [Hinted(0.5), "ok"]).waits == [2.0]


def test_hint_beyond_the_cap_is_honoured(h: Harness) -> None:
    retry = h.retry(base=0.1, cap=1, jitter="none", deadline=None)
    assert h.run(retry, [Hinted(45), "ok"]).waits == [45.0]


def test_hint_past_the_deadline_gives_up_at_once(h: Harness, api: str) -> None:
    retry = h.retry(base=0.1, deadline=30)
    hinted = Hinted(120)
    run = h.run(retry, [hinted], api=api)
    assert run.error is hinted
    assert run.end == 0.0
    assert retry.stats().gave_up["deadline"] == 1


def test_rate_limited_is_retried_after_its_hint(h: Harness) -> None:
    retry = h.retry(base=0.1, jitter="none")
    run = h.run(retry, [adm.CircuitOpen(2.5, "api"), "ok"])
    assert run.waits == [2.5]


def test_result_hint(h: Harness) -> None:
    class Response:
        def __init__(self, status: int, retry_after: float | None = None) -> None:
            self.status = status
            self.headers = {} if retry_after is None else {"Retry-After": str(retry_after)}

    retry = h.retry(base=0.1, jitter="none", retry_if=lambda r: r.status == 503)
    run = h.run(retry, [Response(503, 7), Response(200)])
    assert run.result.status == 200
    assert run.waits == [7.0]


def _http_status_error(status: int, headers: dict[str, str]) -> Exception:
    import httpx

    request = httpx.Request("GET", "https://api.example/v1")
    response = httpx.Response(status, headers=headers, request=request)
    return httpx.HTTPStatusError(f"{status}", request=request, response=response)


@pytest.mark.parametrize(
    ("headers", "wait"),
    [
        ({"retry-after-ms": "1500"}, 1.5),
        ({"Retry-After": "3"}, 3.0),
        ({"retry-after-ms": "250", "retry-after": "1"}, 0.25),
        ({"Retry-After": "not a number"}, 0.1),
        ({}, 0.1),
    ],
)
def test_httpx_status_error_headers(h: Harness, headers: dict[str, str], wait: float) -> None:
    retry = h.retry(base=0.1, jitter="none")
    run = h.run(retry, [_http_status_error(429, headers), "ok"])
    assert run.result == "ok"
    assert run.waits == [pytest.approx(wait)]


def test_httpx_retry_after_http_date(h: Harness) -> None:
    from email.utils import formatdate

    date = formatdate(time.time() + 120, usegmt=True)
    retry = h.retry(base=0.1, jitter="none", deadline=600)
    run = h.run(retry, [_http_status_error(503, {"Retry-After": date}), "ok"])
    # HTTP dates have whole seconds: 119 < wait <= 120, read from the wall clock.
    assert 118.0 < run.waits[0] <= 120.0


def test_httpx_status_errors_by_status(h: Harness) -> None:
    retry = h.retry(base=0.1, jitter="none")
    not_found = _http_status_error(404, {})
    run = h.run(retry, [not_found])
    assert run.error is not_found
    assert len(run.starts) == 1
    run = h.run(retry, [_http_status_error(502, {}), _http_status_error(500, {}), "ok"])
    assert run.result == "ok"


def test_httpx_transport_errors_are_transient() -> None:
    import httpx

    request = httpx.Request("GET", "https://api.example/")
    assert transient(httpx.ConnectError("refused", request=request))
    assert transient(httpx.ReadTimeout("slow", request=request))
    assert transient(httpx.RemoteProtocolError("server hung up", request=request))
    assert not transient(httpx.InvalidURL("nope"))
    assert not transient(httpx.UnsupportedProtocol("no scheme", request=request))
    assert not transient(httpx.LocalProtocolError("bad header", request=request))
    assert not transient(ValueError())
    assert transient(adm.CircuitOpen(1.0, "api"))
    assert transient(adm.AcquireTimeout(1.0))


# --- never retried -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind_of_exit",
    [KeyboardInterrupt, SystemExit, GeneratorExit, asyncio.CancelledError],
    ids=lambda k: k.__name__,
)
def test_base_exceptions_are_never_retried(h: Harness, api: str, kind_of_exit: type) -> None:
    # Even when retry_on says to retry everything.
    retry = h.retry(attempts=5, retry_on=BaseException)
    run = h.run(retry, [kind_of_exit("stop"), "never reached"], api=api)
    assert isinstance(run.error, kind_of_exit)
    assert run.starts == [0.0]
    s = retry.stats()
    assert (s.cancelled, s.attempts, s.retries, s.in_flight) == (1, 1, 0, 0)


def test_trio_cancelled_is_never_retried() -> None:
    import trio

    retry = adm.Retry(attempts=5, retry_on=BaseException)
    attempts = 0

    async def slow() -> None:
        nonlocal attempts
        attempts += 1
        await trio.sleep(100)

    async def main() -> None:
        with trio.move_on_after(5) as scope:
            await retry.call(slow)
        assert scope.cancelled_caught
        assert trio.current_time() == 5.0

    Harness("trio").run_async(main)
    assert attempts == 1
    assert retry.stats().cancelled == 1


def test_asyncio_task_cancel_in_an_attempt_is_never_retried() -> None:
    retry = adm.Retry(attempts=5, retry_on=BaseException)
    attempts = 0

    async def slow() -> None:
        nonlocal attempts
        attempts += 1
        await asyncio.sleep(100)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(retry.call(slow))
        await asyncio.sleep(5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert loop.time() == 5.0

    Harness("asyncio").run_async(main)
    assert attempts == 1
    assert retry.stats().cancelled == 1


@pytest.mark.parametrize("kind", ["asyncio", "trio"])
@pytest.mark.parametrize("api", APIS)
def test_cancel_during_the_backoff_propagates_at_once(kind: str, api: str) -> None:
    # The first attempt fails; its backoff is 100 s; the caller gives up at 5 s: the call
    # ends at 5 s with the cancellation, and no second attempt is made.
    h = Harness(kind)
    retry = adm.Retry(attempts=5, base=100, cap=100, jitter="none", deadline=None)
    attempts = 0

    async def failing() -> None:
        nonlocal attempts
        attempts += 1
        raise ConnectionError

    async def call() -> None:
        if api == "decorator":
            await retry(failing)()
        elif api == "call":
            await retry.call(failing)
        else:
            async for attempt in retry:
                with attempt:
                    await failing()

    async def main() -> float:
        with anyio.move_on_after(5):
            await call()
        return anyio.current_time()

    assert h.run_async(main) == 5.0
    assert attempts == 1
    s = retry.stats()
    assert (s.cancelled, s.retries, s.attempts, s.in_flight) == (1, 1, 1, 0)


@pytest.mark.parametrize("api", APIS)
def test_cancel_during_the_backoff_propagates_at_once_on_uvloop(api: str) -> None:
    # uvloop's clock is real: the backoff is 100 real seconds, the caller is cancelled as
    # soon as the first attempt has failed, and the call must end long before (bounded).
    pytest.importorskip("uvloop")
    retry = adm.Retry(attempts=5, base=100, cap=100, jitter="none", deadline=None)
    failed = asyncio.Event()

    async def failing() -> None:
        failed.set()
        raise ConnectionError

    async def call() -> None:
        if api == "decorator":
            await retry(failing)()
        elif api == "call":
            await retry.call(failing)
        else:
            async for attempt in retry:
                with attempt:
                    await failing()

    async def main() -> None:
        task = asyncio.ensure_future(call())
        await failed.wait()
        await asyncio.sleep(0)  # into the backoff
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=30)

    Harness("uvloop").run_async(main)
    s = retry.stats()
    assert (s.cancelled, s.retries, s.attempts, s.in_flight) == (1, 1, 1, 0)


def test_asyncio_wait_for_during_the_backoff() -> None:
    retry = adm.Retry(attempts=5, base=100, cap=100, jitter="none", deadline=None)

    async def failing() -> None:
        raise ConnectionError

    async def main() -> float:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(retry.call(failing), 5)
        return asyncio.get_running_loop().time()

    assert Harness("asyncio").run_async(main) == 5.0
    assert retry.stats().cancelled == 1


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="needs pthread_kill")
def test_keyboard_interrupt_during_a_blocking_backoff_propagates() -> None:
    # A real sleep in the main thread, interrupted by a real SIGINT: KeyboardInterrupt leaves
    # the call at once; no second attempt.
    retry = adm.Retry(attempts=3, base=20, cap=20, jitter="none", deadline=None)
    attempts = 0
    main_thread = threading.get_ident()

    def failing() -> None:
        nonlocal attempts
        attempts += 1
        raise ConnectionError

    def interrupt() -> None:
        # Once the retry has decided to wait (it counts the retry just before sleeping).
        for _ in range(2000):
            if retry.stats().retries:
                time.sleep(0.05)
                signal.pthread_kill(main_thread, signal.SIGINT)
                return
            time.sleep(0.005)

    # Python's own SIGINT handler (raise KeyboardInterrupt), whatever an earlier test of the
    # process left installed: a handler that does not raise lets the sleep run on, and the
    # retry end by its attempts (failed so on a fresh clone's random order).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    sender = threading.Thread(target=interrupt)
    sender.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            retry.call_blocking(failing)
    finally:
        sender.join(timeout=15)
        signal.signal(signal.SIGINT, previous)
    assert attempts == 1
    assert retry.stats().cancelled == 1


# --- budget --------------------------------------------------------------------------------------


def test_budget_shared_by_retries_fails_fast(h: Harness) -> None:
    clock = adm.testing.ManualClock()
    budget = adm.RetryBudget(ratio=0.5, min_per_second=0, window="10s", clock=clock)
    a = h.retry(attempts=5, base=1, jitter="none", budget=budget)
    b = h.retry(attempts=5, base=1, jitter="none", budget=budget)
    # Calls deposit 0.5 retry each, whichever Retry makes them: after two calls one retry
    # is allowed (b's); the third call's failure is refused at once (no wait), with its
    # own error.
    assert h.run(a, ["ok"]).result == "ok"
    assert h.run(b, [ConnectionError, "ok"]).result == "ok"
    refused = ConnectionError("refused by the budget")
    run = h.run(a, [refused])
    assert run.error is refused
    assert run.end == 0.0
    assert b.stats().retries == 1
    assert a.stats().gave_up == {"attempts": 0, "deadline": 0, "budget": 1}
    s = budget.stats()
    assert (s.calls, s.retries, s.refused) == (3, 1, 1)


def test_budget_floor(h: Harness) -> None:
    clock = adm.testing.ManualClock()
    budget = adm.RetryBudget(ratio=0.0, min_per_second=0.2, window="10s", clock=clock)
    retry = h.retry(attempts=10, base=0.001, cap=0.001, jitter="none", budget=budget)
    run = h.run(retry, [ConnectionError] * 10)
    assert len(run.starts) == 3  # 0.2/s x 10 s: two retries, whatever the calls
    assert retry.stats().gave_up["budget"] == 1


def test_budget_in_iteration(h: Harness) -> None:
    clock = adm.testing.ManualClock()
    budget = adm.RetryBudget(ratio=1.0, min_per_second=0, clock=clock)
    retry = h.retry(attempts=10, base=1, jitter="none", budget=budget)
    run = h.run(retry, [ConnectionError, ConnectionError, "ok"], api="iterate")
    assert isinstance(run.error, ConnectionError)  # one call: one retry allowed
    assert len(run.starts) == 2
    assert budget.stats().refused == 1


# --- clocks --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["asyncio", "trio"])
def test_manual_clock_on_async(kind: str) -> None:
    # A ManualClock on an event loop: waits advance it (the loop's own time does not move).
    clock = adm.testing.ManualClock()
    retry = adm.Retry(base=1, jitter="none", clock=clock)
    times: list[float] = []

    async def flaky() -> str:
        times.append(clock.now())
        if len(times) < 3:
            raise ConnectionError
        return "ok"

    async def main() -> tuple[str, float]:
        start = anyio.current_time()
        result = await retry.call(flaky)
        return result, anyio.current_time() - start

    assert Harness(kind).run_async(main) == ("ok", 0.0)
    assert times == [0.0, 1.0, 3.0]


@pytest.mark.parametrize("kind", ["asyncio", "trio"])
def test_loop_clock(kind: str) -> None:
    retry = adm.Retry(base=1, jitter="none", deadline=2.5, clock=adm.LoopClock())
    run = Harness(kind).run(retry, [ConnectionError, ConnectionError, "ok"])
    assert isinstance(run.error, ConnectionError)
    assert run.starts == [0.0, 1.0]


def test_loop_clock_refused_in_threads() -> None:
    retry = adm.Retry(clock=adm.LoopClock())
    with pytest.raises(RuntimeError, match="LoopClock"):
        retry.call_blocking(lambda: 1)
    with pytest.raises(RuntimeError, match="LoopClock"):
        next(iter(retry))
    assert retry.stats().calls == 0  # refused before anything was counted


def test_blocking_retry_in_an_event_loop_thread_is_refused() -> None:
    retry = adm.Retry(base=1)
    fails = ConnectionError("first")

    def failing() -> None:
        raise fails

    async def main() -> None:
        assert retry.call_blocking(lambda: "ok") == "ok"  # nothing to wait for: fine
        with pytest.raises(RuntimeError, match="event loop") as info:
            retry.call_blocking(failing)
        assert info.value.__cause__ is fails

    asyncio.run(main())
    assert retry.stats().failed == 1


# --- counting ------------------------------------------------------------------------------------


def test_counters_add_up_under_threads() -> None:
    clock = adm.testing.ManualClock()
    retry = adm.Retry(attempts=3, base=0.001, jitter="none", clock=clock, deadline=None)
    errors: list[BaseException] = []

    def work(i: int) -> None:
        calls = 0

        def fn() -> int:
            nonlocal calls
            calls += 1
            if i % 3 == 0:
                raise ConnectionError  # gives up after 3 attempts
            if i % 3 == 1 and calls < 2:
                raise ConnectionError  # succeeds on the second
            return i

        for _ in range(200):
            calls = 0
            try:
                retry.call_blocking(fn)
            except ConnectionError:
                pass
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    s = retry.stats()
    assert s.calls == 1200
    assert s.gave_up["attempts"] == 400
    assert s.succeeded == 800
    assert s.attempts == 400 * 3 + 400 * 2 + 400
    assert s.retries == 400 * 2 + 400
    assert s.in_flight == 0


def test_stats_while_in_flight(h: Harness) -> None:
    retry = h.retry(base=1, jitter="none")
    seen: list[adm.RetryStats] = []

    def attempt() -> str:
        seen.append(retry.stats())
        if len(seen) < 2:
            raise ConnectionError
        return "ok"

    if h.kind == "threads":
        retry.call_blocking(attempt)
    else:

        async def main() -> None:
            await retry.call(lambda: _coro(attempt))

        h.run_async(main)
    assert [(s.calls, s.in_flight, s.retries) for s in seen] == [(1, 1, 0), (1, 1, 1)]
    assert retry.stats().in_flight == 0


async def _coro(fn: Any) -> Any:
    return fn()


def test_metrics_families() -> None:
    clock = adm.testing.ManualClock()
    retry = adm.Retry(attempts=2, base=1, jitter="none", clock=clock, name="doc-openai")
    retry.call_blocking(lambda: 1)
    with pytest.raises(ConnectionError):
        retry.call_blocking(_raise(ConnectionError))
    families = {f.name: f for f in retry_module._families()}
    retries = {
        s.labels["outcome"]: s.value
        for s in families["admission_retries"].samples
        if s.labels["retry"] == "doc-openai"
    }
    assert retries == {
        "retried": 1.0,
        "refused_attempts": 1.0,
        "refused_deadline": 0.0,
        "refused_budget": 0.0,
    }
    calls = {
        s.labels["outcome"]: s.value
        for s in families["admission_retry_calls"].samples
        if s.labels["retry"] == "doc-openai"
    }
    assert calls == {"succeeded": 1.0, "failed": 0.0, "cancelled": 0.0, "gave_up": 1.0}


def test_metrics_keep_a_dropped_retry_s_counts() -> None:
    import gc

    def use() -> None:
        retry = adm.Retry(name="doc-dropped")
        retry.call_blocking(lambda: 1)

    use()
    use()
    gc.collect()
    families = {f.name: f for f in retry_module._families()}
    calls = {
        s.labels["outcome"]: s.value
        for s in families["admission_retry_calls"].samples
        if s.labels["retry"] == "doc-dropped"
    }
    assert calls["succeeded"] == 2.0


def test_prometheus_exposition() -> None:
    prometheus_client = pytest.importorskip("prometheus_client")
    registry = prometheus_client.CollectorRegistry()
    retry = adm.Retry(name="doc-prom", clock=adm.testing.ManualClock(), base=1)
    with pytest.raises(KeyError):
        retry.call_blocking(_raise(KeyError))
    adm.metrics.register(registry)
    try:
        value = registry.get_sample_value(
            "admission_retry_calls_total", {"retry": "doc-prom", "outcome": "failed"}
        )
        assert value == 1.0
        assert (
            registry.get_sample_value(
                "admission_retries_total", {"retry": "doc-prom", "outcome": "retried"}
            )
            == 0.0
        )
    finally:
        adm.metrics.unregister(registry)


def _raise(kind: type[BaseException]) -> Any:
    def fn() -> None:
        raise kind

    return fn


def test_debug_log_of_retries_and_giving_up(caplog: pytest.LogCaptureFixture) -> None:
    retry = adm.Retry(
        attempts=2, base=1, jitter="none", clock=adm.testing.ManualClock(), name="doc-log"
    )
    with caplog.at_level(logging.DEBUG, logger="admission.retry"), pytest.raises(KeyError):
        retry.call_blocking(_raise(KeyError))
    assert caplog.messages == []  # not retryable: nothing to say
    retry2 = adm.Retry(
        attempts=2, base=1, jitter="none", clock=adm.testing.ManualClock(), name="doc-log"
    )
    with caplog.at_level(logging.DEBUG, logger="admission.retry"), pytest.raises(ConnectionError):
        retry2.call_blocking(_raise(ConnectionError))
    assert caplog.messages == [
        "retry doc-log: attempt 1 failed (ConnectionError()); next attempt in 1.000 s",
        "retry doc-log: gave up after 2 attempt(s) (attempts): ConnectionError()",
    ]


# --- the breaker seam (the CircuitBreaker itself is tested with it) --------------------------- --


class FakeBreaker:
    """Open for the first ``refusals`` asks, then closed; records what it is told."""

    def __init__(self, refusals: int, retry_after: float) -> None:
        self.refusals = refusals
        self.retry_after = retry_after
        self.records: list[tuple[bool, float]] = []
        self.released = 0

    def try_acquire(self) -> bool:
        if self.refusals:
            self.refusals -= 1
            return False
        return True

    def record(self, ok: bool, duration: float) -> None:
        self.records.append((ok, duration))

    def release(self) -> None:
        self.released += 1

    def refusal(self) -> Exception:
        return Hinted(self.retry_after)


def test_breaker_seam_never_calls_through_an_open_breaker(h: Harness) -> None:
    breaker = FakeBreaker(refusals=1, retry_after=4)
    retry = h.retry(base=0.1, jitter="none", breaker=breaker, retry_on=KeyError)
    run = h.run(retry, [KeyError, "ok"], duration=1.0)
    assert run.result == "ok"
    # Refused at 0 (no attempt), waited its 4 s; attempt at 4 fails after 1 s; 0.2 s later ok.
    assert run.starts == [4.0, pytest.approx(5.2)]
    assert breaker.records == [(False, 1.0), (True, 1.0)]


def test_breaker_refusal_past_the_deadline_gives_up_at_once(h: Harness) -> None:
    breaker = FakeBreaker(refusals=1, retry_after=60)
    retry = h.retry(deadline=30, breaker=breaker)
    run = h.run(retry, ["never called"])
    assert isinstance(run.error, Hinted)
    assert run.starts == []
    assert run.end == 0.0
    assert retry.stats().gave_up["deadline"] == 1


def _real_breaker(h: Harness, **kwargs: Any) -> tuple[adm.CircuitBreaker, dict[str, Any]]:
    """A real `CircuitBreaker` (opens after 2 calls at half failures, 5 s open, 1 probe) on
    the harness's time, and the ``clock=`` its retry needs: the loop's virtual clock on
    asyncio and trio, one `ManualClock` on uvloop and in threads."""
    if h.kind in ("asyncio", "trio"):
        clock: Any = adm.LoopClock()
        retry_clock: dict[str, Any] = {}
    else:
        clock = adm.testing.ManualClock()
        retry_clock = {"clock": clock}
    settings: dict[str, Any] = {
        "window": 10,
        "min_calls": 2,
        "open_for": 5,
        "half_open_calls": 1,
        "clock": clock,
    }
    settings.update(kwargs)
    return adm.CircuitBreaker(unique("retry-breaker"), **settings), retry_clock


def test_a_real_breaker_is_waited_out_never_called_through(h: Harness, api: str) -> None:
    breaker, clock = _real_breaker(h)
    retry = h.retry(base=1, jitter="none", breaker=breaker, **clock)
    run = h.run(retry, [ConnectionError, ConnectionError, "ok"], api=api)
    assert run.result == "ok"
    # 0 fails, 1 fails: the breaker opens until 6. At 3 it refuses (no call): the wait is
    # max(its 3 s, the backoff 4 s); at 7 the one probe goes through and closes it.
    assert run.starts == [0.0, 1.0, 7.0]
    # (Counts read without the clock: a LoopClock breaker is read here outside its loop.)
    _, success, failure, _, rejected, _, opened = breaker._counts()
    assert (breaker.state, failure, success, rejected, opened) == ("closed", 2, 1, 1, 1)
    s = retry.stats()
    assert (s.attempts, s.retries) == (3, 3)  # calls of the function; waits before each


def test_a_real_breaker_open_past_the_deadline_gives_up_at_once(h: Harness, api: str) -> None:
    breaker, clock = _real_breaker(h)
    retry = h.retry(base=1, jitter="none", deadline=4, breaker=breaker, **clock)
    run = h.run(retry, [ConnectionError, ConnectionError, "never called"], api=api)
    assert isinstance(run.error, adm.CircuitOpen)
    assert run.error.retry_after == pytest.approx(3.0)
    assert run.starts == [0.0, 1.0]
    assert run.end == 3.0  # refused at 3, open until 6 >= the deadline: no wait
    assert retry.stats().gave_up["deadline"] == 1
    assert breaker._counts()[4] == 1  # rejected


# --- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"attempts": 0}, ValueError, "attempts"),
        ({"attempts": True}, ValueError, "attempts"),
        ({"attempts": 2.5}, ValueError, "attempts"),
        ({"attempts": None, "deadline": None}, ValueError, "forever"),
        ({"deadline": 0}, ValueError, "deadline"),
        ({"deadline": "soon"}, ValueError, "deadline"),
        ({"base": -1}, ValueError, "base"),
        ({"base": math.nan}, ValueError, "base"),
        ({"cap": math.inf}, ValueError, "cap"),
        ({"base": 2, "cap": 1}, ValueError, "cap"),
        ({"jitter": "equal"}, ValueError, "jitter"),
        ({"retry_on": 3}, TypeError, "retry_on"),
        ({"retry_on": ()}, TypeError, "retry_on"),
        ({"retry_on": (ValueError, 3)}, TypeError, "retry_on"),
        ({"retry_if": "yes"}, TypeError, "retry_if"),
        ({"budget": 0.2}, TypeError, "budget"),
        ({"breaker": object()}, TypeError, "breaker"),
        ({"name": 3}, TypeError, "name"),
        ({"clock": time.monotonic}, TypeError, "clock"),
        ({"random": 4}, TypeError, "random"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        adm.Retry(**kwargs)


def test_durations_as_strings() -> None:
    retry = adm.Retry(deadline="1m30s", base="250ms", cap="2s")
    assert (retry.deadline, retry.base, retry.cap) == (90.0, 0.25, 2.0)
    assert "Retry(attempts=5, deadline=90.0" in repr(retry)


def test_a_retry_dropped_while_the_registry_is_locked() -> None:
    # A finalizer may run inside any allocation, e.g. within `_track` or a scrape, which hold
    # the registry's lock: retiring a dropped retry must not take that lock (it deadlocked).
    def drop() -> None:
        retry = adm.Retry(name="doc-dropped-in-lock")
        retry.call_blocking(lambda: 1)
        with retry_module._live_lock:
            del retry  # the last reference: its finalizer runs here, lock held

    worker = threading.Thread(target=drop, daemon=True)
    worker.start()
    worker.join(timeout=10)
    assert not worker.is_alive(), "retiring a retry deadlocked on the registry's lock"
    families = {f.name: f for f in retry_module._families()}
    calls = {
        s.labels["outcome"]: s.value
        for s in families["admission_retry_calls"].samples
        if s.labels["retry"] == "doc-dropped-in-lock"
    }
    assert calls["succeeded"] == 1.0


@pytest.mark.parametrize("kind", ["asyncio", "trio"])
def test_breaker_seam_a_cancelled_attempt_releases_its_permission(kind: str) -> None:
    breaker = FakeBreaker(refusals=0, retry_after=1)
    retry = adm.Retry(breaker=breaker)

    async def slow() -> None:
        await anyio.sleep(100)

    async def main() -> None:
        with anyio.move_on_after(5):
            await retry.call(slow)

    Harness(kind).run_async(main)
    assert (breaker.released, breaker.records) == (1, [])
    assert retry.stats().cancelled == 1


def test_breaker_seam_in_iteration(h: Harness) -> None:
    breaker = FakeBreaker(refusals=2, retry_after=3)
    retry = h.retry(base=0.1, jitter="none", breaker=breaker)
    run = h.run(retry, [ConnectionError, "ok"], api="iterate")
    assert run.result == "ok"
    # Two refusals of 3 s each; the attempt at 6 s is the third (refusals count), so its
    # backoff is 0.1 * 2 ** 2.
    assert run.starts == [6.0, pytest.approx(6.4)]
    assert [ok for ok, _ in breaker.records] == [False, True]


@pytest.mark.anyio
async def test_on_every_async_backend_uvloop_included(anyio_backend: Any) -> None:
    # The real loops of the suite's anyio backends (asyncio, uvloop, trio): the loop's clock is
    # read for the deadline on the first attempt, waits on a ManualClock advance it.
    clock = adm.testing.ManualClock()
    retry = adm.Retry(base=2, jitter="none", clock=clock)
    plain = adm.Retry()
    calls: list[float] = []

    async def flaky() -> str:
        calls.append(clock.now())
        if len(calls) < 3:
            raise ConnectionError
        return "ok"

    async def ok() -> str:
        return "fine"

    assert await plain.call(ok) == "fine"
    assert await retry.call(flaky) == "ok"
    assert calls == [0.0, 2.0, 6.0]
    assert plain.stats().succeeded == 1
