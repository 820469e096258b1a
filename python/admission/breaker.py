"""`CircuitBreaker`: stop calling a dependency that is failing, and probe it before trusting it.

The state machine is native (Rust): a permit is one atomic load while closed, one
compare-and-swap for a probe; outcomes go into a sliding window (the last ``window`` calls, or
the calls of the last ``window`` seconds).

- **closed**: every call goes through. Once the window holds ``min_calls`` calls and at least
  ``failure_rate`` of them failed (or ``slow_call_rate`` of them took ``slow_call_duration`` or
  longer), the breaker opens.
- **open**: every call fails at once with `CircuitOpen`, whose ``retry_after`` says when the
  breaker will probe. The first call after ``open_for`` turns it half-open.
- **half_open**: exactly ``half_open_calls`` probes go through (never more, under any
  concurrency); the others are refused. All succeed: closed. One fails: open again, for twice
  as long as last time, up to ``open_for_max``. A probe that is cancelled, never runs or ends in
  an ``ignore`` error gives its place back.

Which exceptions count: those in ``failure_on`` (default: any `Exception`) are failures, those
in ``ignore`` count for nothing, any other exception means the service answered (a success).
Cancellation (`asyncio.CancelledError`, trio's ``Cancelled``), `KeyboardInterrupt`,
`SystemExit` and `GeneratorExit` count for nothing: the call was stopped from outside.
"""

from __future__ import annotations

import collections
import functools
import inspect
import logging
import threading
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ParamSpec, TypeVar, cast, final, overload

from admission import _backend, _native, _registry, durations
from admission.errors import CircuitOpen
from admission.metrics.families import Family, Sample, add_source

__all__ = ["BreakerStats", "CircuitBreaker"]

P = ParamSpec("P")
R = TypeVar("R")

_alerts = logging.getLogger("admission.alerts")

_DEFAULT_OPEN_FOR_MAX = 300.0
"""Seconds: the default cap of the doubled open time (or ``open_for``, if longer)."""


def _seconds(arg: str, value: object) -> float:
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, str):
        return durations.seconds(value, arg)  # a call argument: ValueError, not ConfigError
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f'{arg} must be seconds, a duration such as "30s" or a timedelta, got {value!r}'
        )
    return float(value)


def _exception_classes(arg: str, value: object) -> tuple[type[BaseException], ...]:
    if isinstance(value, type) and issubclass(value, BaseException):
        return (value,)
    if isinstance(value, (list, tuple)):
        return tuple(value)
    raise TypeError(f"{arg} must be an exception class or a tuple of them, got {value!r}")


@dataclass(frozen=True, slots=True)
class BreakerStats:
    """A `CircuitBreaker`'s figures at one instant.

    ``permitted == success + failure + slow + released`` once no call is in flight;
    ``rejected`` calls were refused (`CircuitOpen`, or ``try_acquire()`` answered False).
    """

    name: str | None
    state: str
    """"closed", "open" or "half_open"."""
    retry_after: float
    """Seconds until an open breaker probes (0.0 otherwise)."""
    permitted: int
    success: int
    """Calls that succeeded faster than ``slow_call_duration``."""
    failure: int
    """Calls that failed (slow or not)."""
    slow: int
    """Calls that succeeded but took ``slow_call_duration`` or longer."""
    rejected: int
    released: int
    """Permits given back unused: cancelled calls, ignored errors, ``release()``."""
    opened: int
    """Times the breaker opened."""
    window_calls: int
    window_failures: int
    window_slow: int
    probes_in_flight: int
    probes_succeeded: int

    @property
    def failure_rate(self) -> float:
        """Failed fraction of the calls in the window now (0.0 when it is empty)."""
        return self.window_failures / self.window_calls if self.window_calls else 0.0

    @property
    def slow_call_rate(self) -> float:
        """Slow fraction of the calls in the window now (0.0 when it is empty)."""
        return self.window_slow / self.window_calls if self.window_calls else 0.0


Listener = Callable[["CircuitBreaker", str, str], None]


@final
class CircuitBreaker(_native.CircuitBreaker):
    """A circuit breaker. Use it as ``async with breaker:``, ``with breaker:``, ``@breaker``,
    ``await breaker.call(fn)``, or by hand with ``try_acquire()``/``record()``.

    >>> import admission as adm
    >>> clock = adm.testing.ManualClock()
    >>> breaker = adm.CircuitBreaker("api", window=10, min_calls=2, open_for="30s", clock=clock)
    >>> for _ in range(2):
    ...     try:
    ...         with breaker:
    ...             raise ConnectionError("down")
    ...     except ConnectionError:
    ...         pass
    >>> breaker.state
    'open'
    >>> with breaker:
    ...     pass
    Traceback (most recent call last):
    admission.errors.CircuitOpen: circuit breaker 'api' is open: retry after 30.000 s
    >>> clock.advance(30)
    30.0
    >>> with breaker:   # the first probe (half_open_calls=5: four more must succeed)
    ...     pass
    >>> breaker.state
    'half_open'

    Args:
        name: a label for stats, metrics and the transition log lines.
        failure_rate: the failed fraction of the window, in (0, 1], that opens it. Default 0.5.
        window: an int is a number of calls (the last N); a duration ("60s", seconds as a
            `timedelta`) is a time window (the calls of the last 60 s, in one-second buckets).
            Default 100 calls.
        min_calls: calls the window must hold before any verdict. Default 20.
        slow_call_duration: a call lasting this long or longer is slow (seconds, "5s" or a
            `timedelta`); default None: no call is slow.
        slow_call_rate: the slow fraction, in (0, 1], that opens it. Default 1.0.
        open_for: how long it stays open first. Default "30s".
        open_for_max: the cap of the doubled open time. Default 5 minutes (or ``open_for``,
            if longer).
        half_open_calls: the probes allowed when half-open. Default 5.
        failure_on: exception classes that count as failures. Default ``(Exception,)``.
        ignore: exception classes that count for nothing (checked first).
        failure_if: a predicate on the result of a decorated or ``call``-ed function: true
            counts the call as failed (e.g. ``lambda r: r.status_code >= 500``).
        clock: a `admission.testing.ManualClock` or `admission.LoopClock`; default monotonic.

    Raises:
        ValueError: a rate outside (0, 1], a window, count or duration out of range.
        TypeError: an argument of the wrong type.
    """

    __slots__ = ("_failure_if", "_listeners", "_listeners_lock")

    _failure_if: Callable[[Any], bool] | None
    _listeners: tuple[Listener, ...]
    _listeners_lock: threading.Lock

    def __new__(
        cls,
        name: str | None = None,
        *,
        failure_rate: float = 0.5,
        window: int | float | str | timedelta = 100,
        min_calls: int = 20,
        slow_call_duration: float | str | timedelta | None = None,
        slow_call_rate: float = 1.0,
        open_for: float | str | timedelta = 30.0,
        open_for_max: float | str | timedelta | None = None,
        half_open_calls: int = 5,
        failure_on: type[BaseException] | tuple[type[BaseException], ...] = (Exception,),
        ignore: type[BaseException] | tuple[type[BaseException], ...] = (),
        failure_if: Callable[[Any], bool] | None = None,
        clock: _native.ManualClock | _native.LoopClock | None = None,
    ) -> CircuitBreaker:
        if isinstance(window, bool):
            raise TypeError(f"window must be a number of calls or a duration, got {window!r}")
        if isinstance(window, float):
            raise TypeError(
                f"window={window!r} is ambiguous: give an int for a number of calls, or a "
                f'duration such as "{window:g}s" for a time window'
            )
        window_calls = window if isinstance(window, int) else None
        window_seconds = None if isinstance(window, int) else _seconds("window", window)
        open_seconds = _seconds("open_for", open_for)
        # NaN stays NaN through max(): the constructor refuses it, naming open_for.
        open_max_seconds = (
            max(open_seconds, _DEFAULT_OPEN_FOR_MAX)
            if open_for_max is None
            else _seconds("open_for_max", open_for_max)
        )
        if failure_if is not None and not callable(failure_if):
            raise TypeError(f"failure_if must be callable or None, got {failure_if!r}")
        self = super().__new__(
            cls,
            failure_rate=failure_rate,
            window_calls=window_calls,
            window_seconds=window_seconds,
            min_calls=min_calls,
            slow_call_duration=(
                None
                if slow_call_duration is None
                else _seconds("slow_call_duration", slow_call_duration)
            ),
            slow_call_rate=slow_call_rate,
            open_for=open_seconds,
            open_for_max=open_max_seconds,
            half_open_calls=half_open_calls,
            failure_on=_exception_classes("failure_on", failure_on),
            ignore=_exception_classes("ignore", ignore),
            clock=clock,
            name=name,
        )
        self._failure_if = failure_if
        self._listeners = ()
        self._listeners_lock = threading.Lock()
        _registry.register(self)
        if name is not None:
            _track(self)
        return self

    def __del__(self) -> None:
        # A named breaker's counters stay in its metrics series after it is dropped (a
        # counter that goes down reads as a reset). Runs inside whatever allocation triggered
        # the collection, maybe with `_live_lock` held: so no lock, one atomic append.
        if self.name is not None:
            _dropped.append((self.name, _calls(self._counts())))

    def refusal(self) -> CircuitOpen:
        """The `CircuitOpen` a refused call gets now (what `Retry(breaker=...)` raises or waits
        out when ``try_acquire()`` says no)."""
        return CircuitOpen(self.retry_after, self.name, self.state)

    def on_transition(self, listener: Listener) -> Listener:
        """Calls ``listener(breaker, old_state, new_state)`` on every change of state (after
        the change, outside any lock; its exceptions are logged, never raised to the caller
        whose call caused the change). Usable as a decorator; returns the listener."""
        if not callable(listener):
            raise TypeError(f"listener must be callable, got {listener!r}")
        with self._listeners_lock:
            self._listeners = (*self._listeners, listener)
        return listener

    def _transitioned(self, old: str, new: str, open_for: float) -> None:
        who = "circuit breaker" if self.name is None else f"circuit breaker {self.name!r}"
        if new == "open":
            _alerts.warning(
                "%s opened (was %s): calls fail at once for %.3f s",
                who,
                old,
                open_for,
                extra={"breaker": self.name, "old_state": old, "state": new, "open_for": open_for},
            )
        else:
            _alerts.info(
                "%s is %s (was %s)",
                who,
                new.replace("_", "-"),
                old,
                extra={"breaker": self.name, "old_state": old, "state": new},
            )
        for listener in self._listeners:
            try:
                listener(self, old, new)
            except Exception:
                _alerts.exception("circuit breaker listener %r failed", listener)

    async def _aenter_trio(self) -> None:
        # trio's contract: an `await` is a checkpoint. An already cancelled caller takes no
        # permit; one that gets a permit is not cancelled before the block starts (the first
        # step of every acquisition on trio). `__enter__` admits or raises `CircuitOpen`.
        def enter() -> bool:
            self.__enter__()
            return True

        await _backend.current().first_step(enter)

    @overload
    def __call__(
        self, fn: Callable[P, Coroutine[Any, Any, R]]
    ) -> Callable[P, Coroutine[Any, Any, R]]: ...
    @overload
    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]: ...
    def __call__(self, fn: Callable[P, Any]) -> Callable[P, Any]:
        """Decorates a function (sync or async): each call goes through the breaker."""
        if not callable(fn):
            raise TypeError(f"CircuitBreaker decorates a function, got {fn!r}")
        # The wrappers are written out (not shared helpers): each Python frame saved is a
        # sizeable part of the cost of a call through a closed breaker.
        permit = self._call
        failure_if = self._failure_if
        if inspect.iscoroutinefunction(fn):
            async_fn = cast(Callable[P, Awaitable[Any]], fn)

            @functools.wraps(fn)
            async def guarded_async(*args: P.args, **kwargs: P.kwargs) -> Any:
                call = permit()
                try:
                    result = await async_fn(*args, **kwargs)
                except BaseException as exc:
                    call.end(exc)
                    raise
                if failure_if is not None and failure_if(result):
                    call.fail()
                else:
                    call.end()
                return result

            return guarded_async

        @functools.wraps(fn)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> Any:
            call = permit()
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                call.end(exc)
                raise
            if failure_if is not None and failure_if(result):
                call.fail()
            else:
                call.end()
            return result

        return guarded

    async def call(self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """``await fn(*args, **kwargs)`` through the breaker (`CircuitOpen` if refused)."""
        call = self._call()
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            call.end(exc)
            raise
        if self._failure_if is not None and self._failure_if(result):
            call.fail()
        else:
            call.end()
        return result

    def call_blocking(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """``fn(*args, **kwargs)`` through the breaker, in this thread."""
        call = self._call()
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            call.end(exc)
            raise
        if self._failure_if is not None and self._failure_if(result):
            call.fail()
        else:
            call.end()
        return result

    def stats(self) -> BreakerStats:
        """The counters, the window and the state now."""
        permitted, success, failure, slow, rejected, released, opened = self._counts()
        calls, failures, slows = self._window()
        in_flight, succeeded = self._probes()
        return BreakerStats(
            name=self.name,
            state=self.state,
            retry_after=self.retry_after,
            permitted=permitted,
            success=success,
            failure=failure,
            slow=slow,
            rejected=rejected,
            released=released,
            opened=opened,
            window_calls=calls,
            window_failures=failures,
            window_slow=slows,
            probes_in_flight=in_flight,
            probes_succeeded=succeeded,
        )

    def __repr__(self) -> str:
        name = "" if self.name is None else f"{self.name!r}, "
        return (
            f"CircuitBreaker({name}state={self.state!r}, failure_rate={self.failure_rate!r}, "
            f"window={self.window!r}, open_for={self.open_for!r})"
        )


# ---------------------------------------------------------------------------------------------
# Metrics: admission_circuit_state{breaker}, admission_circuit_calls_total{breaker, outcome}
# ---------------------------------------------------------------------------------------------
# Named breakers only: an unnamed one has no series. Breakers of one name share a series: the
# counters are summed (a dropped breaker's included) and the state is the worst of the live
# ones (open > half-open > closed).

STATE_CODES = {"closed": 0, "half_open": 1, "open": 2}
"""The value of ``admission_circuit_state`` for each state."""
CALL_OUTCOMES = ("success", "failure", "slow", "rejected")
"""The ``outcome`` label values of ``admission_circuit_calls_total``."""

_live_lock = threading.Lock()
_live: weakref.WeakSet[CircuitBreaker] = weakref.WeakSet()
# Counters of dropped breakers until a scrape adds them to `_retired` (see `__del__`).
_dropped: collections.deque[tuple[str, tuple[int, ...]]] = collections.deque()
_retired: dict[str, tuple[int, ...]] = {}


def _track(breaker: CircuitBreaker) -> None:
    with _live_lock:
        _live.add(breaker)


def _calls(counts: tuple[int, ...]) -> tuple[int, ...]:
    """``CALL_OUTCOMES``' counts out of the native ``_counts()``."""
    _, success, failure, slow, rejected, _, _ = counts
    return (success, failure, slow, rejected)


def _add(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(x + y for x, y in zip(a, b, strict=True))


def _families() -> Iterator[Family]:
    """The breakers' families (a source of `admission.metrics.add_source`): reported even
    with no breaker, so that OpenTelemetry creates their instruments up front."""
    with _live_lock:
        live = list(_live)  # strong references: none of these is dropped while we read
        while _dropped:  # every breaker not in `live` is dropped, and already in `_dropped`
            name, calls = _dropped.popleft()
            _retired[name] = _add(_retired.get(name, (0,) * len(CALL_OUTCOMES)), calls)
        totals = dict(_retired)
    states: dict[str, int] = {}
    for breaker in live:
        label = breaker.name
        assert label is not None  # only named breakers are tracked
        # `state` and `_counts()` read no clock: a LoopClock breaker reads outside its loop.
        calls = _calls(breaker._counts())
        totals[label] = _add(totals.get(label, (0,) * len(CALL_OUTCOMES)), calls)
        states[label] = max(states.get(label, 0), STATE_CODES[breaker.state])
    yield Family(
        "admission_circuit_state",
        "gauge",
        "Circuit breaker state: 0 closed, 1 half-open, 2 open (the worst of the live "
        "breakers of the name).",
        tuple(Sample({"breaker": name}, float(code)) for name, code in sorted(states.items())),
    )
    yield Family(
        "admission_circuit_calls",
        "counter",
        "Calls through a circuit breaker by outcome: success, failure, slow (succeeded but "
        "took slow_call_duration or longer), rejected (refused while open or half-open).",
        tuple(
            Sample({"breaker": name, "outcome": outcome}, float(n))
            for name, counts in sorted(totals.items())
            for outcome, n in zip(CALL_OUTCOMES, counts, strict=True)
        ),
    )


add_source(_families)
