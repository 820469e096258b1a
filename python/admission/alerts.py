"""Alerts: a limiter filling up, recovering, or making requests wait too long.

A checker samples the same gauges the metrics export (nothing on the hot path), on its own
thread, every ``interval`` seconds, and reports *events*, never a stream of readings:

- ``"high"``: a limiter's utilization reached ``threshold``. Fired once, when it crosses.
- ``"recovered"``: it went back below ``recover_below`` (default ``threshold - 0.1``). The gap
  between the two is the hysteresis: a limiter hovering around the threshold does not flap.
- ``"long_wait"``: a request waited longer than ``wait_bound`` seconds: a semaphore waiter
  still queued for that long (fired once per such episode), or admitted requests whose
  recorded wait exceeded it (from the wait histogram, so the bound is applied at the
  histogram's bucket resolution: a wait is counted when its whole bucket is above the bound).

At most one event per limiter per ``interval``: an event due sooner after the previous one for
that limiter is held back, and the condition is looked at again at the next check (a
transition or a count of long waits is never lost, only delayed).

Utilization is ``in_use / limit`` for a semaphore and ``1 - tokens_available / capacity`` for a
rate limiter, per ``(kind, limiter)`` series as in `admission.metrics` (unnamed primitives
share the series ``"unnamed"``).

By default events are logged to the ``admission.alerts`` logger (``"high"`` and
``"long_wait"`` as warnings, ``"recovered"`` as info); pass ``callback`` to handle them
yourself. Callbacks run on the checker's thread (or in the caller of `UtilizationAlert.check`),
never inside an acquire or a release; an exception in one is logged and the checker goes on.

>>> import admission as adm
>>> clock = adm.testing.ManualClock()
>>> s = adm.Semaphore(10, name="doc-alerts")
>>> events = []
>>> alert = adm.alerts.on_utilization(0.8, callback=events.append, limiters=["doc-alerts"],
...                                   interval=5.0, clock=clock, start=False)
>>> s.try_acquire(9)
True
>>> [e.kind for e in alert.check()]
['high']
>>> alert.check()    # still high: nothing new
[]
>>> s.release(3)     # 60 %: below 0.7, but within 5 s of the last event
>>> alert.check()
[]
>>> _ = clock.advance(5.0)
>>> [(e.kind, e.utilization) for e in alert.check()]
[('recovered', 0.6)]
>>> s.release(6)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, final

from admission import _native
from admission._validate import blocking_timeout
from admission.concurrency import Semaphore
from admission.durations import seconds
from admission.metrics import UNNAMED, LimiterSeries, limiters
from admission.rate import SlidingWindow, TokenBucket

__all__ = ["AlertEvent", "UtilizationAlert", "on_utilization"]

_log = logging.getLogger("admission.alerts")

EventKind = Literal["high", "recovered", "long_wait"]


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """Something an alert reports. ``at`` is the alert's clock, in seconds."""

    kind: EventKind
    limiter: str
    """The series' ``limiter`` label: the primitives' name, or ``"unnamed"``."""
    primitive: str
    """``"semaphore"``, ``"token_bucket"`` or ``"sliding_window"``."""
    utilization: float
    threshold: float
    at: float
    waited: float = 0.0
    """``"long_wait"``: the longest wait seen, in seconds (a lower bound when it comes from
    the histogram)."""
    count: int = 0
    """``"long_wait"``: requests over the bound since the previous long-wait event (0 when
    the event is about a waiter still queued)."""

    def message(self) -> str:
        """A one-line description, as logged by default."""
        where = f"{self.primitive} {self.limiter!r}"
        if self.kind == "high":
            return f"{where} is {self.utilization:.0%} full (threshold {self.threshold:.0%})"
        if self.kind == "recovered":
            return f"{where} recovered: {self.utilization:.0%} full"
        if self.count:
            return (
                f"{where}: {self.count} request(s) waited over the bound "
                f"(at least {self.waited:g} s)"
            )
        return f"{where}: a request has been waiting for {self.waited:.3g} s"


def _log_event(event: AlertEvent) -> None:
    level = logging.INFO if event.kind == "recovered" else logging.WARNING
    _log.log(level, "%s", event.message(), extra={"alert": event})


class _State:
    __slots__ = ("high", "last_event", "long_baseline", "stuck")

    def __init__(self, long_baseline: int) -> None:
        self.high = False
        self.stuck = False
        self.last_event: float | None = None
        self.long_baseline = long_baseline


@final
class UtilizationAlert:
    """A running utilization alert; see `on_utilization`.

    ``check()`` samples once and reports the events it fires (also passed to the callback);
    the background thread calls it every ``interval``. Stop the thread with ``stop()`` or a
    ``with`` block.
    """

    def __init__(
        self,
        threshold: float,
        callback: Callable[[AlertEvent], object] | None,
        limiters: Iterable[object] | None,
        interval: float | str,
        clock: _native.ManualClock | None,
        recover_below: float | None,
        wait_bound: float | str | None,
    ) -> None:
        _number(threshold, "threshold", "a number in (0, 1]")
        if recover_below is not None:
            _number(recover_below, "recover_below", "a number in [0, threshold] or None")
        interval = seconds(interval, "interval", positive=True, infinite=True)
        wait_bound = seconds(wait_bound, "wait_bound", none=True, infinite=True)
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold!r}")
        # (rounded: 0.8 - 0.1 is 0.7000000000000001 in binary floating point)
        recover = round(threshold - 0.1, 9) if recover_below is None else recover_below
        recover = max(recover, 0.0)
        if not 0.0 <= recover <= threshold:
            raise ValueError(
                f"recover_below must be between 0 and threshold ({threshold}), got {recover!r}"
            )
        self.threshold = threshold
        self.recover_below = recover
        self.interval = interval
        self.wait_bound = wait_bound
        self._callback = callback if callback is not None else _log_event
        self._names = None if limiters is None else _names(limiters)
        self._clock = clock
        self._states: dict[tuple[str, str], _State] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Long waits from before the alert existed are not news.
        for s in self._series():
            self._state(s)

    def _now(self) -> float:
        return self._clock.now() if self._clock is not None else time.monotonic()

    def _series(self) -> list[LimiterSeries]:
        return [
            s
            for s in limiters()
            if s.primitives > 0 and (self._names is None or s.limiter in self._names)
        ]

    def _long_count(self, s: LimiterSeries) -> int:
        return 0 if self.wait_bound is None else s.wait.count_over(self.wait_bound)

    def _state(self, s: LimiterSeries) -> _State:
        key = (s.kind, s.limiter)
        st = self._states.get(key)
        if st is None:
            st = self._states[key] = _State(self._long_count(s))
        return st

    def check(self) -> list[AlertEvent]:
        """Samples every watched limiter once; fires and returns the events due."""
        with self._lock:
            now = self._now()
            events: list[AlertEvent] = []
            for s in self._series():
                st = self._state(s)
                if st.last_event is not None and now - st.last_event < self.interval:
                    continue  # held back; looked at again at the next check
                event = self._event(s, st, now)
                if event is not None:
                    st.last_event = now
                    events.append(event)
        for event in events:
            try:
                self._callback(event)
            except Exception:
                _log.exception("alert callback %r failed on %s", self._callback, event)
        return events

    def _event(self, s: LimiterSeries, st: _State, now: float) -> AlertEvent | None:
        util = s.utilization
        if util is None:
            return None

        def make(kind: EventKind, waited: float = 0.0, count: int = 0) -> AlertEvent:
            return AlertEvent(kind, s.limiter, s.kind, util, self.threshold, now, waited, count)

        if not st.high and util >= self.threshold:
            st.high = True
            return make("high")
        if st.high and util < self.recover_below:
            st.high = False
            return make("recovered")
        if self.wait_bound is None:
            return None
        if s.oldest_wait > self.wait_bound and not st.stuck:
            st.stuck = True
            return make("long_wait", waited=s.oldest_wait)
        if s.oldest_wait <= self.wait_bound:
            st.stuck = False
        over = self._long_count(s)
        if over < st.long_baseline:
            st.long_baseline = over  # a primitive of the series was dropped: start again
        elif over > st.long_baseline:
            new = over - st.long_baseline
            st.long_baseline = over
            return make("long_wait", waited=_longest_lower_bound(s), count=new)
        return None

    def start(self) -> UtilizationAlert:
        """Starts the background checker (once). Returns self."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="admission-alerts", daemon=True
                )
                self._thread.start()
        return self

    def _run(self) -> None:
        # An infinite (or huge) interval waits for stop() only: Event.wait refuses it.
        while not self._stop.wait(blocking_timeout(self.interval)):
            try:
                self.check()
            except Exception:  # pragma: no cover - check() already guards the callbacks
                _log.exception("alert check failed")

    def stop(self) -> None:
        """Stops the background checker and waits for it. Idempotent."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    @property
    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def __enter__(self) -> UtilizationAlert:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return (
            f"UtilizationAlert(threshold={self.threshold}, recover_below={self.recover_below}, "
            f"interval={self.interval}, running={self.running})"
        )


def _longest_lower_bound(s: LimiterSeries) -> float:
    """The lower bound of the highest non-empty bucket: the longest wait is at least this."""
    h = s.wait
    for i in range(len(h.counts) - 1, 0, -1):
        if h.counts[i]:
            return h.bounds[i - 1]
    return 0.0


def _number(value: object, arg: str, what: str) -> None:
    """Refuses what is not an int or a float (a bool, a string, ...) with a TypeError naming
    ``arg``: checked before any comparison, which would fail without saying which argument."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{arg} must be {what}, got {value!r}")


def _names(limiters: object) -> frozenset[str]:
    """The watched series' names. A bare string is refused: iterating it would watch each of
    its characters."""
    if isinstance(limiters, (str, bytes)):
        raise TypeError(
            "limiters must be a collection of names or primitives (a list, a set, ...), "
            f"not a single string: got {limiters!r} (for one name: [{limiters!r}])"
        )
    if isinstance(limiters, (Semaphore, TokenBucket, SlidingWindow)):
        raise TypeError(
            "limiters must be a collection of names or primitives (a list, a set, ...), "
            f"not a single primitive: got {limiters!r} (wrap it in a list)"
        )
    if not isinstance(limiters, Iterable):
        raise TypeError(
            "limiters must be a collection of names or primitives (a list, a set, ...) or "
            f"None, got {limiters!r}"
        )
    return frozenset(_label(x) for x in limiters)


def _label(x: object) -> str:
    if isinstance(x, str):
        return x
    if isinstance(x, (Semaphore, TokenBucket, SlidingWindow)):
        return UNNAMED if x.name is None else x.name
    raise TypeError(f"limiters must be names or primitives, got {x!r}")


def on_utilization(
    threshold: float = 0.8,
    callback: Callable[[AlertEvent], object] | None = None,
    limiters: Iterable[object] | None = None,
    *,
    interval: float | str = 5.0,
    recover_below: float | None = None,
    wait_bound: float | str | None = None,
    clock: _native.ManualClock | None = None,
    start: bool = True,
) -> UtilizationAlert:
    """Watches limiters' utilization; fires once on crossing ``threshold``, once on recovery.

    Args:
        threshold: utilization (0 < threshold <= 1) at which a limiter counts as high.
        callback: called with each `AlertEvent`; default: log it (``admission.alerts``).
        limiters: names (or primitives, standing for their name's series) to watch;
            default every primitive, including ones created later.
        interval: seconds (or a duration string, ``"5s"``) between checks, and the least
            time between two events of one limiter.
        recover_below: utilization under which a high limiter has recovered; default
            ``threshold - 0.1`` (at least 0).
        wait_bound: also fire ``"long_wait"`` when a request waits longer than this many
            seconds (or a duration string; see the module docs); default off.
        clock: time source for ``interval`` and event times (a `admission.testing.ManualClock`
            in tests); default ``time.monotonic``.
        start: start the background thread now; with ``start=False`` nothing runs until
            `UtilizationAlert.check` is called (deterministic tests) or ``start()``.

    Returns:
        The running alert: ``stop()`` it (or use ``with``) when done.
    """
    alert = UtilizationAlert(
        threshold, callback, limiters, interval, clock, recover_below, wait_bound
    )
    if start:
        alert.start()
    return alert
