"""`CircuitBreaker`: the state machine through every way of calling it (``with``, ``async with``
on asyncio, uvloop and trio, decorators, ``call``, ``try_acquire``/``record``), what counts as
a failure, cancellation giving probe places back, the transition log lines, and bad arguments.

Time is a `ManualClock` (or ``LoopClock`` under the virtual runner): nothing sleeps for real.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import threading
from datetime import timedelta
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import admission as adm
from admission.testing import ManualClock


def breaker(clock: Any = None, **kwargs: Any) -> adm.CircuitBreaker:
    """A breaker that opens after 4 calls at half failures, 10 s open, 2 probes."""
    settings: dict[str, Any] = {
        "window": 10,
        "min_calls": 4,
        "open_for": 10,
        "open_for_max": 35,
        "half_open_calls": 2,
        "clock": clock if clock is not None else ManualClock(),
    }
    settings.update(kwargs)
    return adm.CircuitBreaker("dep", **settings)


def fail(b: adm.CircuitBreaker, exc: BaseException | None = None) -> None:
    with pytest.raises(type(exc) if exc else ConnectionError), b:
        raise exc or ConnectionError("down")


def succeed(b: adm.CircuitBreaker) -> None:
    with b:
        pass


def trip(b: adm.CircuitBreaker) -> None:
    for _ in range(4):
        fail(b)
    assert b.state == "open"


# --- the state machine ---------------------------------------------------------------------


def test_opens_at_the_failure_rate_after_min_calls() -> None:
    b = breaker()
    for _ in range(3):
        fail(b)
    assert b.state == "closed", "below min_calls: no verdict"
    fail(b)
    assert b.state == "open"
    s = b.stats()
    assert (s.permitted, s.failure, s.opened) == (4, 4, 1)


def test_stays_closed_below_the_rate() -> None:
    b = breaker()
    for i in range(50):
        if i % 3 == 2:
            fail(b)
        else:
            succeed(b)
    assert b.state == "closed"
    s = b.stats()
    assert s.window_calls == 10
    assert 0 < s.failure_rate < 0.5


def test_open_fails_at_once_with_the_time_left_and_calls_nothing() -> None:
    clock = ManualClock()
    b = breaker(clock)
    trip(b)
    clock.advance(4)
    ran = []
    with pytest.raises(adm.CircuitOpen) as info, b:
        ran.append(1)
    assert ran == []
    assert info.value.retry_after == pytest.approx(6.0)
    assert (info.value.breaker, info.value.state) == ("dep", "open")
    assert isinstance(info.value, adm.AdmissionError)
    assert b.retry_after == pytest.approx(6.0)
    assert b.stats().rejected == 1


def test_half_open_admits_exactly_the_probes_then_closes() -> None:
    clock = ManualClock()
    b = breaker(clock)
    trip(b)
    clock.advance(10)
    p1, p2 = b._call(), b._call()
    assert p1.probe
    assert p2.probe
    assert b.state == "half_open"
    with pytest.raises(adm.CircuitOpen) as info:
        b._call()
    assert info.value.state == "half_open"
    assert info.value.retry_after == 0.0
    p1.end()
    assert b.stats().probes_succeeded == 1
    with pytest.raises(adm.CircuitOpen):
        b._call()  # one done, one out: still no third
    p2.end()
    assert b.state == "closed"
    assert b.stats().window_calls == 0, "closing starts a fresh window"


def test_a_failed_probe_reopens_for_twice_as_long_up_to_the_max() -> None:
    clock = ManualClock()
    b = breaker(clock)
    trip(b)
    for expected in (20.0, 35.0, 35.0):
        clock.advance(100)
        fail(b)
        assert b.state == "open"
        assert b.retry_after == pytest.approx(expected)
    clock.advance(100)
    succeed(b)
    succeed(b)
    assert b.state == "closed"
    trip(b)
    assert b.retry_after == pytest.approx(10.0), "closing resets the doubling"


def test_slow_calls_open_it_at_the_slow_rate() -> None:
    clock = ManualClock()
    b = breaker(clock, slow_call_duration="2s", slow_call_rate=0.75)
    for _ in range(4):
        with b:
            clock.advance(2)
    assert b.state == "open"
    s = b.stats()
    assert (s.slow, s.failure, s.success) == (4, 0, 0)


def test_time_window_forgets_calls_older_than_the_window() -> None:
    clock = ManualClock()
    b = breaker(clock, window="10s")
    for _ in range(3):
        fail(b)
    clock.advance(11)
    fail(b)
    assert b.state == "closed", "the three old failures left the window"
    assert b.stats().window_calls == 1
    for _ in range(3):
        fail(b)
    assert b.state == "open"


def test_reset_closes_it() -> None:
    b = breaker()
    trip(b)
    b.reset()
    assert b.state == "closed"
    succeed(b)


# --- what counts -----------------------------------------------------------------------------


def test_failure_on_and_ignore_choose_what_counts() -> None:
    b = breaker(failure_on=(ConnectionError,), ignore=(TimeoutError,))
    fail(b, ValueError("a 404: the service answered"))
    fail(b, TimeoutError())
    fail(b, ConnectionError())
    s = b.stats()
    assert (s.success, s.released, s.failure) == (1, 1, 1)
    assert s.window_calls == 2


def test_failure_if_judges_results() -> None:
    b = breaker(failure_if=lambda status: status >= 500)

    @b
    def call(status: int) -> int:
        return status

    assert [call(200), call(503), call(404), call(500)] == [200, 503, 404, 500]
    s = b.stats()
    assert (s.success, s.failure) == (2, 2)
    assert b.state == "open"


def test_keyboard_interrupt_and_system_exit_give_the_permit_back() -> None:
    b = breaker()
    for exc in (KeyboardInterrupt(), SystemExit(1), GeneratorExit()):
        with pytest.raises(type(exc)), b:
            raise exc
    s = b.stats()
    assert (s.released, s.failure, s.success, s.window_calls) == (3, 0, 0, 0)


# --- the ways of calling it ------------------------------------------------------------------


def test_sync_decorator_and_call_blocking() -> None:
    b = breaker()

    @b
    def div(a: int, b: int) -> float:
        return a / b

    assert div(6, 3) == 2
    assert div.__name__ == "div"
    for _ in range(3):  # 3 failures of 4 calls: open
        with pytest.raises(ZeroDivisionError):
            b.call_blocking(div.__wrapped__, 1, 0)  # type: ignore[attr-defined]
    with pytest.raises(adm.CircuitOpen):
        div(1, 1)


@pytest.mark.anyio
async def test_async_with_decorator_and_call(anyio_backend: str) -> None:
    b = breaker()

    @b
    async def echo(x: int) -> int:
        await anyio.lowlevel.checkpoint()
        return x

    assert await echo(3) == 3
    assert await b.call(echo.__wrapped__, 4) == 4  # type: ignore[attr-defined]
    async with b:
        pass
    for _ in range(3):  # 3 failures of 6 calls: open
        with pytest.raises(ConnectionError):
            async with b:
                raise ConnectionError
    with pytest.raises(adm.CircuitOpen):
        await echo(1)
    with pytest.raises(adm.CircuitOpen):
        async with b:
            pass
    s = b.stats()
    assert (s.success, s.failure, s.rejected) == (3, 3, 2)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_async_with_on_trio_is_a_checkpoint(anyio_backend: str) -> None:
    import trio
    import trio.testing

    b = breaker()
    with trio.testing.assert_checkpoints():
        async with b:
            pass
    with trio.CancelScope() as scope:
        scope.cancel()
        with pytest.raises(trio.Cancelled):
            async with b:
                raise AssertionError("a cancelled caller must not enter")
    assert b.stats().permitted == 1, "an already cancelled caller takes no permit"


@pytest.mark.anyio
async def test_cancelled_probe_gives_its_place_back(anyio_backend: str) -> None:
    clock = ManualClock()
    b = breaker(clock)
    trip(b)
    clock.advance(10)
    entered = anyio.Event()

    async def probe_forever() -> None:
        async with b:
            entered.set()
            await anyio.sleep_forever()

    async with anyio.create_task_group() as tg:
        tg.start_soon(probe_forever)
        tg.start_soon(probe_forever)
        await entered.wait()
        for _ in range(100):
            if b.stats().probes_in_flight == 2:
                break
            await anyio.lowlevel.checkpoint()
        assert b.stats().probes_in_flight == 2
        tg.cancel_scope.cancel()
    s = b.stats()
    assert (s.probes_in_flight, s.released, s.state) == (0, 2, "half_open")
    # Both places are free again: two new probes close it.
    succeed(b)
    succeed(b)
    assert b.state == "closed"


@pytest.mark.anyio
async def test_open_refuses_every_task_at_once_and_runs_no_body(anyio_backend: str) -> None:
    clock = ManualClock()
    b = breaker(clock)
    trip(b)
    clock.advance(4)
    ran: list[int] = []
    refused: list[adm.CircuitOpen] = []

    async def caller() -> None:
        try:
            async with b:
                ran.append(1)
        except adm.CircuitOpen as exc:
            refused.append(exc)

    async with anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(caller)
    assert ran == []
    assert [e.retry_after for e in refused] == [pytest.approx(6.0)] * 20
    assert b.stats().rejected == 20


@pytest.mark.anyio
async def test_half_open_admits_exactly_the_probes_to_concurrent_tasks(
    anyio_backend: str,
) -> None:
    clock = ManualClock()
    b = breaker(clock, half_open_calls=3)
    trip(b)
    clock.advance(10)
    inside = 0
    most = 0
    release = anyio.Event()
    outcomes: list[str] = []

    async def caller() -> None:
        nonlocal inside, most
        try:
            async with b:
                inside += 1
                most = max(most, inside)
                await release.wait()  # every probe stays in flight until all have tried
                inside -= 1
                outcomes.append("probe")
        except adm.CircuitOpen:
            outcomes.append("refused")

    async with anyio.create_task_group() as tg:
        for _ in range(50):
            tg.start_soon(caller)
        for _ in range(1000):  # let every task try (no time passes)
            if len(outcomes) == 47 and inside == 3:  # (on trio a probe enters a step later)
                break
            await anyio.lowlevel.checkpoint()
        assert (most, b.stats().probes_in_flight) == (3, 3)
        release.set()
    assert sorted(outcomes) == ["probe"] * 3 + ["refused"] * 47
    assert b.state == "closed"


def test_loop_clock_opens_and_probes_on_virtual_time(virtual: Any) -> None:
    # Under trio's MockClock(autojump) and a virtual asyncio loop, the breaker's open time
    # passes with the loop's clock: no real waiting.
    b = breaker(adm.LoopClock())

    async def main() -> tuple[str, float, str]:
        for _ in range(4):
            with pytest.raises(ConnectionError):
                async with b:
                    raise ConnectionError
        state, retry_after = b.state, b.retry_after
        await anyio.sleep(retry_after)
        async with b:  # the first probe
            pass
        return state, retry_after, b.state

    assert virtual.run(main) == ("open", 10.0, "half_open")


def test_wait_for_timeout_of_a_probe_gives_its_place_back() -> None:
    clock = ManualClock()
    b = breaker(clock, half_open_calls=1)
    trip(b)
    clock.advance(10)

    async def slow_probe() -> None:
        async with b:
            await asyncio.sleep(10)

    async def main() -> None:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(slow_probe(), 0.01)

    asyncio.run(main())
    assert b.stats().probes_in_flight == 0
    succeed(b)
    assert b.state == "closed"


def test_a_probe_of_an_earlier_probation_frees_no_place_in_this_one() -> None:
    clock = ManualClock()
    b = breaker(clock)
    trip(b)
    clock.advance(10)
    old = b._call()
    b._call().end(ConnectionError())  # the other probe fails: open for 20 s
    clock.advance(20)
    new1, new2 = b._call(), b._call()
    assert (new1.probe, new2.probe) == (True, True)
    old.release()  # late: belongs to the first probation
    assert b.stats().probes_in_flight == 2
    with pytest.raises(adm.CircuitOpen):
        b._call()
    new1.release()
    assert b.stats().probes_in_flight == 1


def test_a_call_never_ended_gives_its_probe_back_when_dropped() -> None:
    clock = ManualClock()
    b = breaker(clock, half_open_calls=1)
    trip(b)
    clock.advance(10)
    call = b._call()
    assert b.stats().probes_in_flight == 1
    del call
    assert b.stats().probes_in_flight == 0


def test_ending_a_call_twice_counts_once() -> None:
    b = breaker()
    call = b._call()
    call.end()
    call.end(ConnectionError())
    call.fail()
    call.release()
    s = b.stats()
    assert (s.success, s.failure, s.released) == (1, 0, 0)


def test_nested_blocks_of_one_breaker_end_their_own_calls() -> None:
    clock = ManualClock()
    b = breaker(clock, slow_call_duration="5s")
    with b:
        with pytest.raises(ConnectionError), b:
            raise ConnectionError
        clock.advance(5)
    s = b.stats()
    assert (s.failure, s.slow) == (1, 1), "the inner failed fast, the outer was slow"


def test_try_acquire_record_release() -> None:
    clock = ManualClock()
    b = breaker(clock)
    for _ in range(4):
        assert b.try_acquire()
        b.record(False, 0.01)
    assert not b.try_acquire()
    clock.advance(10)
    assert b.try_acquire()
    b.release()
    assert b.stats().probes_in_flight == 0
    assert b.try_acquire()
    assert b.try_acquire()
    b.record(True, 0.1)
    b.record(True, 0.1)
    assert b.state == "closed"
    s = b.stats()
    assert s.permitted == s.success + s.failure + s.slow + s.released


def test_threads_never_exceed_the_probes() -> None:
    clock = ManualClock()
    b = breaker(clock, half_open_calls=3)
    trip(b)
    clock.advance(10)
    inside = most = 0
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def worker() -> None:
        nonlocal inside, most
        barrier.wait(timeout=10)
        for _ in range(300):
            try:
                call = b._call()
            except adm.CircuitOpen:
                continue
            assert call.probe
            with lock:
                inside += 1
                most = max(most, inside)
            with lock:
                inside -= 1
            call.release()  # the place goes back: the probation goes on all along

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
        assert not t.is_alive()
    assert 1 <= most <= 3
    s = b.stats()
    assert (s.state, s.probes_in_flight) == ("half_open", 0)
    assert s.permitted == s.failure + s.released
    assert s.permitted + s.rejected == 4 + 8 * 300


# --- reporting -------------------------------------------------------------------------------


def test_transitions_are_logged_once_each_and_reach_listeners(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = ManualClock()
    b = breaker(clock)
    seen: list[tuple[str, str]] = []
    b.on_transition(lambda br, old, new: seen.append((old, new)))
    caplog.set_level(logging.INFO, logger="admission.alerts")
    trip(b)
    clock.advance(10)
    succeed(b)
    succeed(b)
    assert seen == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]
    records = [r for r in caplog.records if r.name == "admission.alerts"]
    assert [r.levelno for r in records] == [logging.WARNING, logging.INFO, logging.INFO]
    assert "'dep' opened" in records[0].getMessage()
    assert records[0].state == "open"  # type: ignore[attr-defined]


def test_a_failing_listener_does_not_break_the_call(caplog: pytest.LogCaptureFixture) -> None:
    b = breaker()

    def broken(*_: object) -> None:
        raise RuntimeError("listener bug")

    b.on_transition(broken)
    trip(b)
    assert "listener" in caplog.text


def test_circuit_open_pickles() -> None:
    e = adm.CircuitOpen(2.5, "api")
    e2 = pickle.loads(pickle.dumps(e))
    assert (e2.retry_after, e2.breaker, e2.state, str(e2)) == (2.5, "api", "open", str(e))


def test_settings_read_back() -> None:
    b = adm.CircuitBreaker(
        "x", window=timedelta(minutes=1), slow_call_duration="5s", open_for="30s"
    )
    assert (b.window, b.slow_call_duration, b.open_for, b.open_for_max) == (60.0, 5.0, 30.0, 300)
    assert b.failure_on == (Exception,)
    assert b.ignore == ()
    assert "CircuitBreaker('x'" in repr(b)


@pytest.mark.parametrize(
    ("kwargs", "error", "names"),
    [
        ({"failure_rate": 0}, ValueError, "failure_rate"),
        ({"failure_rate": float("nan")}, ValueError, "failure_rate"),
        ({"failure_rate": "half"}, TypeError, "failure_rate"),
        ({"slow_call_rate": 1.5}, ValueError, "slow_call_rate"),
        ({"window": 0}, ValueError, "window"),
        ({"window": 60.0}, TypeError, "window"),
        ({"window": True}, TypeError, "window"),
        ({"window": "0s"}, ValueError, "window"),
        ({"min_calls": 0}, ValueError, "min_calls"),
        ({"min_calls": -1}, ValueError, "min_calls"),
        ({"half_open_calls": 0}, ValueError, "half_open_calls"),
        ({"half_open_calls": 1 << 40}, ValueError, "half_open_calls"),
        ({"open_for": 0}, ValueError, "open_for"),
        ({"open_for": float("inf")}, ValueError, "open_for"),
        ({"open_for": [1]}, TypeError, "open_for"),
        ({"open_for": 60, "open_for_max": 30}, ValueError, "open_for_max"),
        ({"slow_call_duration": -1}, ValueError, "slow_call_duration"),
        ({"failure_on": "oops"}, TypeError, "failure_on"),
        ({"failure_on": (ValueError, 3)}, TypeError, "failure_on"),
        ({"failure_if": 3}, TypeError, "failure_if"),
    ],
)
def test_bad_settings_name_the_argument(
    kwargs: dict[str, Any], error: type[Exception], names: str
) -> None:
    with pytest.raises(error, match=names):
        adm.CircuitBreaker("x", **kwargs)


def test_record_checks_its_arguments() -> None:
    b = breaker()
    with pytest.raises(TypeError, match="ok"):
        b.record(1, 0.1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="duration"):
        b.record(True, -1)
    with pytest.raises(ValueError, match="duration"):
        b.record(True, float("nan"))


def test_retry_never_calls_through_an_open_breaker() -> None:
    clock = ManualClock()
    b = breaker(clock, window=4, min_calls=2, open_for=60, open_for_max=60)
    retry = adm.Retry(
        attempts=10,
        deadline="30s",
        base="100ms",
        cap="1s",
        retry_on=(ConnectionError,),
        breaker=b,
        clock=clock,
    )
    calls = 0

    def flaky() -> None:
        nonlocal calls
        calls += 1
        raise ConnectionError("down")

    with pytest.raises((ConnectionError, adm.CircuitOpen)):
        retry.call_blocking(flaky)
    # Two failures opened it; its 60 s are past the 30 s deadline: given up at once.
    assert calls == 2
    assert b.state == "open"
    assert clock.now() < 30
