"""``@breaker``: the native wrapper of a decorated function (`BreakerFunction`) and the awaitable
a decorated coroutine function returns (`BreakerAwaitable`): metadata, methods, arguments,
the coroutine protocol forwarded to the function (``send``, ``throw``, ``close``), what counts
when the function or ``failure_if`` raises, and cancellation on every loop.

Time is a `ManualClock`: nothing sleeps for real.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import inspect
import sys
import types
from collections.abc import Generator
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import admission as adm
from admission import _native
from admission.testing import ManualClock


def breaker(**kwargs: Any) -> adm.CircuitBreaker:
    """Opens after 4 calls at half failures, 10 s open, 2 probes."""
    settings: dict[str, Any] = {
        "window": 10,
        "min_calls": 4,
        "open_for": 10,
        "half_open_calls": 2,
        "clock": ManualClock(),
    }
    settings.update(kwargs)
    return adm.CircuitBreaker("dep", **settings)


def counts(b: adm.CircuitBreaker) -> tuple[int, int, int, int, int]:
    s = b.stats()
    return (s.permitted, s.success, s.failure, s.released, s.rejected)


def half_open(b: adm.CircuitBreaker) -> None:
    """Trips ``b`` and lets its open time pass: the next call is a probe."""
    for _ in range(4):
        with pytest.raises(ConnectionError), b:
            raise ConnectionError
    clock = b.clock
    assert clock is not None
    clock.advance(10)


@types.coroutine
def suspend(value: object) -> Generator[object, object, object]:
    """An awaitable step that yields ``value`` to the driver and returns what it sends."""
    return (yield value)


# --- metadata ------------------------------------------------------------------------------


def test_the_wrapper_carries_the_function_metadata() -> None:
    b = breaker()

    def fetch(url: str, *, timeout: float = 1.0) -> str:
        """Fetches url."""
        return url

    fetch.custom = "kept"  # type: ignore[attr-defined]
    wrapped = b(fetch)
    assert isinstance(wrapped, _native.BreakerFunction)
    assert wrapped.__name__ == "fetch"
    assert wrapped.__qualname__.endswith("<locals>.fetch")
    assert wrapped.__doc__ == "Fetches url."
    assert wrapped.__module__ == __name__
    assert wrapped.__wrapped__ is fetch  # type: ignore[attr-defined]
    assert wrapped.custom == "kept"  # type: ignore[attr-defined]
    assert inspect.signature(wrapped) == inspect.signature(fetch)
    assert "fetch" in repr(wrapped)
    assert not inspect.iscoroutinefunction(wrapped)
    assert wrapped.breaker is b  # type: ignore[attr-defined]


def test_a_coroutine_function_wrapper_is_a_coroutine_function() -> None:
    b = breaker()

    async def fetch(url: str) -> str:
        return url

    wrapped = b(fetch)
    assert inspect.iscoroutinefunction(wrapped)
    assert inspect.iscoroutinefunction(b(functools.partial(fetch, "u")))
    if sys.version_info < (3, 14):  # deprecated there, and it reads inspect's answer
        assert asyncio.iscoroutinefunction(wrapped)
    assert wrapped.__name__ == "fetch"
    # A stack of decorators still sees a coroutine function (Retry chooses its wrapper so).
    assert inspect.iscoroutinefunction(b(wrapped))


def test_the_decorator_refuses_what_it_cannot_call() -> None:
    with pytest.raises(TypeError, match="decorates a function"):
        breaker()(42)  # type: ignore[call-overload]


# --- methods and arguments -----------------------------------------------------------------


def test_it_binds_as_a_method_sync_and_async() -> None:
    b = breaker()

    class Client:
        def __init__(self, base: str) -> None:
            self.base = base

        @b
        def get(self, path: str, *, query: str = "") -> str:
            return self.base + path + query

        @b
        async def aget(self, path: str) -> str:
            return self.base + path

        @classmethod
        @b
        def kind(cls) -> str:
            return cls.__name__

        @staticmethod
        @b
        def version() -> int:
            return 2

    client = Client("http://x")
    assert client.get("/a", query="?q") == "http://x/a?q"
    assert Client.get(client, "/b") == "http://x/b"
    assert asyncio.run(client.aget("/c")) == "http://x/c"
    assert Client.kind() == client.kind() == "Client"
    assert Client.version() == 2
    assert isinstance(Client.__dict__["get"], _native.BreakerFunction)
    assert inspect.iscoroutinefunction(client.aget)
    assert counts(b) == (6, 6, 0, 0, 0)


@pytest.mark.parametrize("vectorcall", [True, False], ids=["vectorcall", "tp_call"])
def test_arguments_reach_the_function_whichever_way_it_is_called(vectorcall: bool) -> None:
    b = breaker()

    def echo(*args: Any, **kwargs: Any) -> tuple[Any, ...]:
        return args, kwargs

    async def aecho(*args: Any, **kwargs: Any) -> tuple[Any, ...]:
        return args, kwargs

    sync = _native.BreakerFunction(b, echo, None, False, vectorcall=vectorcall)
    coro = _native.BreakerFunction(b, aecho, None, True, vectorcall=vectorcall)
    for call in ((), (1,), (1, 2)):
        for kwargs in ({}, {"k": 3}, {"k": 3, "j": (4,)}):
            expected = (call, kwargs)
            assert sync(*call, **kwargs) == expected
            assert asyncio.run(coro(*call, **kwargs)) == expected
            assert functools.partial(sync, *call)(**kwargs) == expected
    assert counts(b) == (27, 27, 0, 0, 0)


# --- outcomes ------------------------------------------------------------------------------


def test_sync_outcomes_are_classified_as_with_blocks() -> None:
    b = breaker(failure_on=(ConnectionError,), ignore=(TimeoutError,))

    @b
    def call(exc: BaseException | None) -> str:
        if exc is not None:
            raise exc
        return "ok"

    assert call(None) == "ok"
    for exc in (ConnectionError(), TimeoutError(), KeyError(), KeyboardInterrupt()):
        with pytest.raises(type(exc)) as raised:
            call(exc)
        assert raised.value is exc
    # ok and KeyError succeed (the service answered), ConnectionError fails,
    # TimeoutError (ignored) and KeyboardInterrupt (stopped from outside) give the permit back.
    assert counts(b) == (5, 2, 1, 2, 0)


@pytest.mark.parametrize(
    ("window", "slow_call_duration"),
    [(10, None), (10, 60.0), (2_000, None), ("60s", None)],
    ids=["lock-free window", "timed calls", "larger window", "time window"],
)
def test_the_open_time_starts_when_the_tripping_call_ends(
    window: int | str, slow_call_duration: float | None
) -> None:
    # An untimed call into a small count window reads the clock only if it trips the breaker;
    # every kind of window must start the open time at the end of that call all the same.
    b = breaker(window=window, slow_call_duration=slow_call_duration)
    clock = b.clock
    assert clock is not None

    @b
    def call(seconds: float) -> None:
        clock.advance(seconds)
        raise ConnectionError

    for seconds in (0, 1, 2, 3):
        with pytest.raises(ConnectionError):
            call(seconds)
    assert (b.state, b.retry_after) == ("open", 10.0)
    clock.advance(9.5)
    with pytest.raises(adm.CircuitOpen) as refused:
        call(0)
    assert refused.value.retry_after == pytest.approx(0.5)


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_failure_if_judges_results_and_its_errors_give_the_permit_back(is_async: bool) -> None:
    def judge(status: int) -> bool:
        if status < 0:
            raise ValueError("no such status")
        return status >= 500

    b = breaker(failure_if=judge)

    def status(code: int) -> int:
        return code

    async def astatus(code: int) -> int:
        return code

    wrapped = b(astatus if is_async else status)

    def call(code: int) -> Any:
        return asyncio.run(wrapped(code)) if is_async else wrapped(code)

    assert call(200) == 200
    assert call(503) == 503
    with pytest.raises(ValueError, match="no such status"):
        call(-1)
    assert counts(b) == (3, 1, 1, 1, 0)


def test_a_half_open_probe_whose_failure_if_raises_frees_its_place() -> None:
    b = breaker(failure_if=lambda r: 1 / r < 0)
    half_open(b)

    @b
    def call(r: int) -> int:
        return r

    with pytest.raises(ZeroDivisionError):
        call(0)
    assert b.stats().probes_in_flight == 0
    call(1)
    call(1)
    assert b.state == "closed"


# --- the awaitable: the coroutine protocol -------------------------------------------------


def test_nothing_happens_before_the_first_step() -> None:
    b = breaker()
    called = []

    @b
    async def fn() -> None:
        called.append(1)

    awaitable = fn()
    assert (called, counts(b)) == ([], (0, 0, 0, 0, 0))
    awaitable.close()  # an unstarted call: nothing taken, nothing to give back
    assert (called, counts(b)) == ([], (0, 0, 0, 0, 0))
    with pytest.raises(KeyError):
        fn().throw(KeyError("into an unstarted call"))
    assert (called, counts(b)) == ([], (0, 0, 0, 0, 0))
    unawaited = fn()
    with pytest.warns(RuntimeWarning, match=r"coroutine '.*fn' was never awaited"):
        del unawaited  # the last reference: freed at once
    assert counts(b) == (0, 0, 0, 0, 0)


def test_an_open_breaker_refuses_at_the_first_step_and_calls_nothing() -> None:
    b = breaker()
    for _ in range(4):
        with pytest.raises(ConnectionError), b:
            raise ConnectionError
    called = []

    @b
    async def fn() -> None:
        called.append(1)

    awaitable = fn()
    with pytest.raises(adm.CircuitOpen):
        awaitable.send(None)
    assert called == []
    with pytest.raises(RuntimeError, match="cannot reuse"):
        awaitable.send(None)


def test_send_is_forwarded_and_the_result_is_the_stop_iteration_value() -> None:
    b = breaker()

    @b
    async def add_sent(x: int) -> tuple[int, ...]:
        first = await suspend("first")
        second = await suspend("second")
        return (x, first, second)  # type: ignore[return-value]

    awaitable = add_sent(1)
    with pytest.raises(TypeError, match="non-None"):
        awaitable.send(5)
    assert awaitable.send(None) == "first"
    assert awaitable.send(2) == "second"
    assert counts(b) == (1, 0, 0, 0, 0)
    with pytest.raises(StopIteration) as stop:
        awaitable.send(3)
    assert stop.value.value == (1, 2, 3)
    assert counts(b) == (1, 1, 0, 0, 0)
    # Driven by `await` (`__next__`), a result other than None (a tuple, even) arrives whole.

    @b
    async def pair() -> tuple[int, int]:
        return (1, 2)

    async def main() -> tuple[int, int]:
        return await pair()

    assert asyncio.run(main()) == (1, 2)


def test_throw_is_forwarded_and_counted_by_what_comes_out() -> None:
    b = breaker()

    @b
    async def catching() -> str:
        try:
            await suspend("waiting")
        except ValueError as exc:
            return f"caught {exc}"
        return "not thrown"

    caught = catching()
    assert caught.send(None) == "waiting"
    with pytest.raises(StopIteration) as stop:
        caught.throw(ValueError("boom"))
    assert stop.value.value == "caught boom"
    assert counts(b) == (1, 1, 0, 0, 0)

    uncaught = catching()
    uncaught.send(None)
    with pytest.raises(ConnectionError):
        uncaught.throw(ConnectionError("down"))
    assert counts(b) == (2, 1, 1, 0, 0)

    cancelled = catching()
    cancelled.send(None)
    with pytest.raises(asyncio.CancelledError):
        cancelled.throw(asyncio.CancelledError())
    assert counts(b) == (3, 1, 1, 1, 0)


def test_close_is_forwarded_and_gives_the_permit_back() -> None:
    b = breaker()
    cleaned = []

    @b
    async def cleaning() -> None:
        try:
            await suspend("waiting")
        finally:
            cleaned.append(1)

    awaitable = cleaning()
    awaitable.send(None)
    awaitable.close()
    assert cleaned == [1]
    assert counts(b) == (1, 0, 0, 1, 0)
    awaitable.close()  # a second close does nothing
    assert counts(b) == (1, 0, 0, 1, 0)

    @b
    async def stubborn() -> None:
        try:
            await suspend("waiting")
        except GeneratorExit:
            await suspend("ignoring it")

    refusing = stubborn()
    refusing.send(None)
    with pytest.raises(RuntimeError, match="ignored GeneratorExit"):
        refusing.close()
    assert counts(b) == (2, 0, 1, 1, 0), "the RuntimeError it raised counts, as in Python"


def test_a_probe_dropped_while_suspended_gives_its_place_back() -> None:
    b = breaker()
    half_open(b)

    @b
    async def wait() -> None:
        await suspend("waiting")

    awaitable = wait()
    awaitable.send(None)
    assert b.stats().probes_in_flight == 1
    del awaitable
    gc.collect()
    assert b.stats().probes_in_flight == 0


def test_a_function_returning_any_awaitable() -> None:
    """The native class with ``is_async`` true, for a function that returns an awaitable that
    is not a coroutine (what ``markcoroutinefunction`` allows on 3.12+)."""
    b = breaker()

    class Answer:
        def __await__(self) -> Generator[Any, Any, int]:
            sent = yield "asked"
            return sent * 2  # type: ignore[no-any-return]

    def ask() -> Answer:
        return Answer()

    wrapped = _native.BreakerFunction(b, ask, None, True)
    awaitable = wrapped()
    assert awaitable.send(None) == "asked"
    with pytest.raises(StopIteration) as stop:
        awaitable.send(21)
    assert stop.value.value == 42

    not_awaitable = _native.BreakerFunction(b, lambda: 42, None, True)
    with pytest.raises(TypeError, match="can't be used in 'await' expression"):
        not_awaitable().send(None)
    # As `await fn()` raising inside the Python wrapper's `try`: a failure.
    assert counts(b) == (2, 1, 1, 0, 0)


@pytest.mark.skipif(sys.version_info < (3, 12), reason="inspect.markcoroutinefunction: 3.12+")
def test_a_marked_coroutine_function_returning_an_awaitable() -> None:
    b = breaker()

    def ready() -> Any:
        return asyncio.sleep(0, result="done")

    wrapped = b(inspect.markcoroutinefunction(ready))
    assert inspect.iscoroutinefunction(wrapped)
    assert asyncio.run(wrapped()) == "done"


def test_generator_based_and_awaitable_returning_functions_are_sync() -> None:
    """Neither is a coroutine function: the call (making the awaitable) is what goes through
    the breaker, as with the Python wrapper before."""
    b = breaker()

    @types.coroutine
    def legacy() -> Generator[Any, Any, str]:
        yield from ()
        return "legacy"

    def returns_coroutine() -> Any:
        return asyncio.sleep(0, result="slept")

    wrapped_legacy, wrapped_returning = b(legacy), b(returns_coroutine)
    assert not inspect.iscoroutinefunction(wrapped_legacy)
    assert not inspect.iscoroutinefunction(wrapped_returning)

    async def main() -> tuple[Any, Any]:
        return await wrapped_legacy(), await wrapped_returning()

    assert asyncio.run(main()) == ("legacy", "slept")
    assert counts(b) == (2, 2, 0, 0, 0)


# --- on the loops --------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_cancelled_decorated_probe_gives_its_place_back(anyio_backend: str) -> None:
    b = breaker()
    half_open(b)
    entered = anyio.Event()

    @b
    async def probe_forever() -> None:
        entered.set()
        await anyio.sleep_forever()

    async with anyio.create_task_group() as tg:
        tg.start_soon(probe_forever)
        await entered.wait()
        assert b.stats().probes_in_flight == 1
        tg.cancel_scope.cancel()
    s = b.stats()
    assert (s.probes_in_flight, s.released, s.state) == (0, 1, "half_open")


def test_asyncio_runs_the_awaitable_as_a_task() -> None:
    b = breaker()

    @b
    async def answer() -> int:
        await asyncio.sleep(0)
        return 42

    async def main() -> int:
        return await asyncio.create_task(answer())  # type: ignore[arg-type]

    assert asyncio.run(main()) == 42
    assert counts(b) == (1, 1, 0, 0, 0)


@adm.CircuitBreaker()
def pickled_by_reference() -> str:
    return "same object"


def test_a_module_level_wrapper_pickles_by_reference_as_functions_do() -> None:
    import copy
    import pickle

    assert pickle.loads(pickle.dumps(pickled_by_reference)) is pickled_by_reference
    assert copy.deepcopy(pickled_by_reference) is pickled_by_reference


def test_retry_over_a_decorated_coroutine_function_retries_each_call() -> None:
    """`Retry` picks its async wrapper by `inspect.iscoroutinefunction`: the native wrapper must
    pass it (on 3.10/3.11 too), or each call would be one attempt."""
    b = breaker(window=100, min_calls=100)
    attempts = []

    @adm.Retry(attempts=3, retry_on=(ConnectionError,), clock=ManualClock())
    @b
    async def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError
        return "ok"

    assert asyncio.run(flaky()) == "ok"
    assert counts(b) == (3, 1, 2, 0, 0)
