"""Utilization alerts: hysteresis, rate limiting per limiter, long waits, the checker thread.

Deterministic: alerts run with ``start=False`` on a `ManualClock` and are stepped with
``check()``; only the background-thread test uses real time.
"""

from __future__ import annotations

import logging
import re
import threading
import time

import pytest
from support import unique

import admission as adm
from admission.alerts import AlertEvent


def kinds(events: list[AlertEvent]) -> list[str]:
    return [e.kind for e in events]


def test_hysteresis_fires_once_up_and_once_down() -> None:
    clock = adm.testing.ManualClock()
    name = unique("hyst")
    s = adm.Semaphore(10, name=name)
    got: list[AlertEvent] = []
    alert = adm.alerts.on_utilization(
        0.8, got.append, [name], interval=1.0, clock=clock, start=False
    )
    assert alert.recover_below == 0.7
    assert alert.check() == []
    assert s.try_acquire(7)  # 70 %: below the threshold
    assert alert.check() == []
    assert s.try_acquire(1)  # 80 %: crosses
    (high,) = alert.check()
    assert (high.kind, high.limiter, high.primitive) == ("high", name, "semaphore")
    assert high.utilization == pytest.approx(0.8)
    assert high.threshold == 0.8
    assert high.at == 0.0
    for step in range(5):  # stays high, moves around: no new event
        clock.advance(1.0)
        if step % 2 == 0:
            assert s.try_acquire(1)
        else:
            s.release(1)
        assert alert.check() == []
    # Back to 75 %: under the threshold but not under recover_below: still high.
    while s.in_use > 8:
        s.release()
    s.release()  # 7 -> 70 %: not *below* 0.7
    clock.advance(1.0)
    assert s.in_use == 7
    assert alert.check() == []
    s.release()  # 60 %
    (rec,) = alert.check()
    assert rec.kind == "recovered"
    assert rec.utilization == pytest.approx(0.6)
    assert rec.at == clock.now()
    clock.advance(1.0)
    assert alert.check() == []
    assert got == [high, rec]
    s.release(6)


def test_flapping_is_held_back_to_one_event_per_interval() -> None:
    clock = adm.testing.ManualClock()
    name = unique("flap")
    s = adm.Semaphore(10, name=name)
    alert = adm.alerts.on_utilization(
        0.5, lambda e: None, [name], interval=10.0, recover_below=0.4, clock=clock, start=False
    )
    assert s.try_acquire(5)
    assert kinds(alert.check()) == ["high"]
    s.release(5)
    clock.advance(3.0)
    assert alert.check() == []  # recovered, but 3 s after the last event: held back
    assert s.try_acquire(5)
    clock.advance(3.0)
    assert alert.check() == []  # high again: nothing to say (never reported recovery)
    s.release(5)
    clock.advance(4.0)  # 10 s since the last event: the pending recovery goes out now
    (rec,) = alert.check()
    assert rec.kind == "recovered"
    assert rec.at == 10.0
    assert s.try_acquire(5)
    clock.advance(9.9)
    assert alert.check() == []
    clock.advance(0.1)
    assert kinds(alert.check()) == ["high"]
    s.release(5)


def test_each_limiter_has_its_own_state_and_filter() -> None:
    clock = adm.testing.ManualClock()
    a_name, b_name, c_name = unique("a"), unique("b"), unique("c")
    a, b = adm.Semaphore(2, name=a_name), adm.Semaphore(2, name=b_name)
    c = adm.Semaphore(2, name=c_name)
    got: list[AlertEvent] = []
    alert = adm.alerts.on_utilization(
        1.0, got.append, [a_name, b], interval=5.0, clock=clock, start=False
    )
    assert a.try_acquire(2)
    assert b.try_acquire(2)
    assert c.try_acquire(2)
    events = alert.check()
    assert sorted(e.limiter for e in events) == sorted([a_name, b_name])  # c not watched
    a.release(2)
    b.release(2)
    c.release(2)


def test_rate_limiter_utilization() -> None:
    clock = adm.testing.ManualClock()
    name = unique("rate")
    bucket = adm.TokenBucket(rate=1, per=1.0, burst=10, clock=clock, name=name)
    alert = adm.alerts.on_utilization(0.8, lambda e: None, [name], clock=clock, start=False)
    assert bucket.try_acquire(7)
    assert alert.check() == []
    assert bucket.try_acquire(1)
    (high,) = alert.check()
    assert (high.primitive, high.utilization) == ("token_bucket", pytest.approx(0.8))
    clock.advance(5.0)  # refills 5 tokens: 30 % used
    (rec,) = alert.check()
    assert rec.kind == "recovered"
    assert rec.utilization == pytest.approx(0.3)


def test_default_callback_logs(caplog: pytest.LogCaptureFixture) -> None:
    clock = adm.testing.ManualClock()
    name = unique("log")
    s = adm.Semaphore(4, name=name)
    alert = adm.alerts.on_utilization(0.5, limiters=[name], clock=clock, start=False)
    with caplog.at_level(logging.INFO, logger="admission.alerts"):
        assert s.try_acquire(2)
        alert.check()
        s.release(2)
        clock.advance(10.0)
        alert.check()
    high, rec = caplog.records
    assert high.levelno == logging.WARNING
    assert f"semaphore '{name}' is 50% full (threshold 50%)" in high.getMessage()
    assert rec.levelno == logging.INFO
    assert "recovered" in rec.getMessage()
    assert isinstance(high.alert, AlertEvent)  # type: ignore[attr-defined]


def test_a_failing_callback_is_logged_and_the_alert_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = adm.testing.ManualClock()
    name = unique("boom")
    s = adm.Semaphore(1, name=name)
    calls: list[str] = []

    def callback(event: AlertEvent) -> None:
        calls.append(event.kind)
        raise RuntimeError("callback failed")

    alert = adm.alerts.on_utilization(1.0, callback, [name], clock=clock, start=False)
    assert s.try_acquire()
    with caplog.at_level(logging.ERROR, logger="admission.alerts"):
        assert kinds(alert.check()) == ["high"]
    assert "callback failed" in caplog.text
    s.release()
    clock.advance(10.0)
    assert kinds(alert.check()) == ["recovered"]
    assert calls == ["high", "recovered"]


def test_long_wait_of_a_queued_semaphore_waiter() -> None:
    clock = adm.testing.ManualClock()
    name = unique("stuck")
    s = adm.Semaphore(1, name=name)
    got: list[AlertEvent] = []
    alert = adm.alerts.on_utilization(
        1.0, got.append, [name], interval=1.0, wait_bound=0.02, clock=clock, start=False
    )
    assert s.try_acquire()
    assert kinds(alert.check()) == ["high"]
    clock.advance(1.0)
    waiter = threading.Thread(target=lambda: (s.acquire_blocking(), s.release()))
    waiter.start()
    while s._oldest_wait() <= 0.02:
        time.sleep(0.005)
    (long,) = alert.check()
    assert long.kind == "long_wait"
    assert long.waited > 0.02
    assert long.count == 0
    assert "waiting for" in long.message()
    clock.advance(1.0)
    assert alert.check() == []  # the same stuck waiter: reported once
    s.release()
    waiter.join()
    clock.advance(1.0)
    # Its completed wait (> 20 ms) lands in the histogram: reported as a long wait, with the
    # bucket's lower bound as what is known of it.
    events = alert.check()
    assert kinds(events) == ["recovered"]
    clock.advance(1.0)
    (done,) = alert.check()
    assert done.kind == "long_wait"
    assert done.count == 1
    assert done.waited >= 0.02
    assert "waited over the bound" in done.message()


def test_long_waits_from_the_histogram() -> None:
    clock = adm.testing.ManualClock()
    name = unique("slow")
    bucket = adm.TokenBucket(rate=1, per=3.0, burst=1, clock=clock, name=name)
    assert bucket.try_acquire()
    bucket.acquire_blocking()  # waited 3 s before the alert existed: not news
    alert = adm.alerts.on_utilization(
        1.0, lambda e: None, [name], interval=1.0, wait_bound=1.0, clock=clock, start=False
    )
    bucket.acquire_blocking()  # 3 s (virtual): over 1 s
    bucket.acquire_blocking()
    events = alert.check()
    assert kinds(events) == ["high"]  # one event per interval: the long waits wait
    clock.advance(1.0)
    (long,) = alert.check()
    assert long.kind == "long_wait"
    assert long.count == 2
    assert long.waited == 2.0
    clock.advance(1.0)
    assert alert.check() == []


def test_background_checker_runs_and_stops() -> None:
    name = unique("bg")
    s = adm.Semaphore(2, name=name)
    fired = threading.Event()
    seen: list[AlertEvent] = []

    def callback(event: AlertEvent) -> None:
        seen.append(event)
        assert threading.current_thread().name == "admission-alerts"
        fired.set()

    with adm.alerts.on_utilization(0.5, callback, [name], interval=0.01) as alert:
        assert alert.running
        assert s.try_acquire()
        assert fired.wait(5.0)
    assert not alert.running
    assert kinds(seen) == ["high"]
    alert.stop()  # idempotent
    s.release()
    assert "running=False" in repr(alert)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="threshold"):
        adm.alerts.on_utilization(0.0, start=False)
    with pytest.raises(ValueError, match="threshold"):
        adm.alerts.on_utilization(1.5, start=False)
    with pytest.raises(ValueError, match="recover_below"):
        adm.alerts.on_utilization(0.5, recover_below=0.6, start=False)
    with pytest.raises(ValueError, match="interval"):
        adm.alerts.on_utilization(0.5, interval=0.0, start=False)
    with pytest.raises(ValueError, match="wait_bound"):
        adm.alerts.on_utilization(0.5, wait_bound=-1.0, start=False)
    with pytest.raises(TypeError, match="limiters"):
        adm.alerts.on_utilization(0.5, limiters=[42], start=False)
    alert = adm.alerts.on_utilization(0.1, recover_below=None, start=False)
    assert alert.recover_below == 0.0
    assert not alert.running


def test_an_infinite_interval_waits_for_stop() -> None:
    # Issue 11, case 10: Event.wait(inf) raised OverflowError and killed the thread (and
    # pytest turns an exception in a thread into an error).
    alert = adm.alerts.on_utilization(0.5, lambda event: None, [], interval=float("inf"))
    try:
        waiters = alert._stop._cond._waiters  # type: ignore[attr-defined]
        for _ in range(5_000):  # until the thread waits on the event (or dies)
            if waiters or not alert.running:
                break
            time.sleep(0.001)
        assert len(waiters) == 1, "the thread is not waiting for stop()"
        assert alert.running
    finally:
        alert.stop()
    assert not alert.running


@pytest.mark.parametrize(
    ("kwargs", "arg"),
    [
        ({"threshold": True}, "threshold"),
        ({"threshold": "0.8"}, "threshold"),
        ({"threshold": None}, "threshold"),
        ({"interval": True}, "interval"),
        ({"interval": b"5s"}, "interval"),
        ({"recover_below": False}, "recover_below"),
        ({"recover_below": "0.5"}, "recover_below"),
        ({"wait_bound": True}, "wait_bound"),
        ({"wait_bound": [1]}, "wait_bound"),
    ],
)
def test_non_numbers_are_refused_naming_the_argument(kwargs: dict[str, object], arg: str) -> None:
    # Issue 12 (13): bools were taken as 1/0, strings failed in a bare comparison.
    value = next(iter(kwargs.values()))
    kwargs = {"threshold": 0.8, **kwargs, "start": False}
    with pytest.raises(TypeError, match=rf"^{arg} must be .*, got {re.escape(repr(value))}$"):
        adm.alerts.on_utilization(**kwargs)  # type: ignore[arg-type]


def test_durations_take_strings_as_everywhere() -> None:
    alert = adm.alerts.on_utilization(0.5, interval="2m", wait_bound="250ms", start=False)
    assert (alert.interval, alert.wait_bound) == (120.0, 0.25)
    with pytest.raises(ValueError, match=r"^interval must be a duration such as .*'soon'$"):
        adm.alerts.on_utilization(0.5, interval="soon", start=False)


def test_a_bare_string_of_limiters_is_refused() -> None:
    # Issue 12 (13): limiters="abc" watched "a", "b" and "c".
    with pytest.raises(TypeError, match=r"^limiters must be a collection .*'abc'.*\['abc'\]"):
        adm.alerts.on_utilization(0.5, limiters="abc", start=False)
    with pytest.raises(TypeError, match=r"^limiters must be a collection"):
        adm.alerts.on_utilization(0.5, limiters=b"abc", start=False)
    sem = adm.Semaphore(1, name=unique("single"))
    with pytest.raises(TypeError, match=r"^limiters must be a collection .*single primitive"):
        adm.alerts.on_utilization(0.5, limiters=sem, start=False)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^limiters must be a collection .* or None, got 42"):
        adm.alerts.on_utilization(0.5, limiters=42, start=False)  # type: ignore[arg-type]
    # Collections of names still work, a tuple, a set or a generator alike.
    for names in (("abc",), {"abc"}, (n for n in ["abc"])):
        alert = adm.alerts.on_utilization(0.5, limiters=names, start=False)
        assert alert._names == frozenset({"abc"})
