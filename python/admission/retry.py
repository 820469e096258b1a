"""`Retry`: retries that cannot storm, on sync code, asyncio and trio.

What it owns: when to try again (which failures, how long to wait, when to stop) and the
count of what happened. It never retries what should not be: only `Exception`s are ever
retried, so cancellation (``asyncio.CancelledError``, trio's ``Cancelled``),
``KeyboardInterrupt``, ``SystemExit`` and ``GeneratorExit`` propagate at once, also out of a
backoff sleep. It never sleeps for real under virtual time: on asyncio and trio every wait
is the running loop's own sleep and every deadline the loop's own clock (so trio's autojump
``MockClock`` and asyncio loop-time mocks just work), and a `admission.testing.ManualClock`
makes waits advance the clock instead, in threads too.

The decision logic is one plan (`_plan`, a generator of "attempt now" / "wait this long"
steps) that the asyncio/trio driver, the thread driver and the ``for attempt in retry``
iterators share; they differ only in how they call and sleep.

>>> import admission as adm
>>> clock = adm.testing.ManualClock()
>>> retry = adm.Retry(attempts=3, base="1s", jitter="none", retry_on=ConnectionError,
...                   clock=clock)
>>> calls = []
>>> @retry
... def flaky():
...     calls.append(clock.now())
...     if len(calls) < 3:
...         raise ConnectionError("reset by peer")
...     return "ok"
>>> flaky(), calls          # waited 1 s, then 2 s (virtual time: no real sleep)
('ok', [0.0, 1.0, 3.0])
>>> s = retry.stats()
>>> s.calls, s.attempts, s.retries, s.succeeded
(1, 3, 2, 1)
"""

from __future__ import annotations

import asyncio
import collections
import functools
import inspect
import itertools
import logging
import random as _random
import sys
import threading
import time
import weakref
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Iterable,
    Iterator,
    Mapping,
)
from dataclasses import dataclass, field
from types import MappingProxyType, TracebackType
from typing import Any, ParamSpec, Protocol, TypeVar, final

from admission import _backend
from admission._backend import in_event_loop_thread
from admission._backoff import JITTERS, Backoff, Jitter
from admission._hints import retry_after
from admission._native import LoopClock, ManualClock
from admission._validate import duration_seconds
from admission.metrics.families import UNNAMED, Family, Sample, add_source
from admission.retry_budget import RetryBudget

__all__ = [
    "RETRYABLE_STATUS",
    "Attempt",
    "Breaker",
    "Retry",
    "RetryStats",
    "transient",
]

P = ParamSpec("P")
R = TypeVar("R")

_log = logging.getLogger("admission.retry")

RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
"""HTTP statuses `transient` retries: timeouts, too early, too many requests, server errors
that say nothing about the request (not 501 Not Implemented or 505)."""

GIVE_UP_REASONS = ("attempts", "deadline", "budget")
"""Why a call gave up on a failure it would have retried (the keys of `RetryStats.gave_up`)."""


# ---------------------------------------------------------------------------------------------
# What is worth retrying
# ---------------------------------------------------------------------------------------------


def transient(exc: BaseException) -> bool:
    """The default ``retry_on``: failures that a later attempt may not meet.

    - connection errors and timeouts (``ConnectionError``, ``TimeoutError``; on 3.10 also
      ``asyncio.TimeoutError``), and every ``httpx.TransportError`` but the client's own
      mistakes (``UnsupportedProtocol``, ``LocalProtocolError``);
    - an HTTP error whose status is in `RETRYABLE_STATUS` (``.response.status_code`` as on
      ``httpx.HTTPStatusError`` and ``requests.HTTPError``, or ``.status_code`` as on the
      SDKs' errors): 408, 425, 429, 500, 502, 503, 504;
    - anything that carries a ``retry_after`` hint (`admission.CircuitOpen`, a circuit
      breaker's refusal).

    Anything else is a bug or a refusal that would repeat (a 400, a 404, a ``TypeError``)
    and is raised at once. Only `Exception`s qualify (see the module docstring).

    >>> transient(ConnectionResetError()), transient(TimeoutError()), transient(ValueError())
    (True, True, False)
    """
    if isinstance(exc, (ConnectionError, TimeoutError, asyncio.TimeoutError)):
        return True
    httpx = sys.modules.get("httpx")
    if httpx is not None and isinstance(exc, httpx.TransportError):
        # Except the client's own mistakes: a URL without a usable scheme, a request that
        # breaks HTTP itself. They would fail the same way every time.
        return not isinstance(exc, (httpx.UnsupportedProtocol, httpx.LocalProtocolError))
    try:
        if getattr(exc, "retry_after", None) is not None:
            return True
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status is None:
            status = getattr(exc, "status_code", None)
    except Exception:  # a property that raises: no hint, no status
        return False
    return status in RETRYABLE_STATUS


def _retry_on(retry_on: object) -> Callable[[BaseException], bool]:
    """``retry_on`` (an exception type, a tuple of them, or a predicate) as a predicate."""
    if isinstance(retry_on, type) and issubclass(retry_on, BaseException):
        kinds: tuple[type[BaseException], ...] = (retry_on,)
    elif isinstance(retry_on, tuple) and retry_on:
        if not all(isinstance(k, type) and issubclass(k, BaseException) for k in retry_on):
            raise TypeError(f"retry_on must hold exception types, got {retry_on!r}")
        kinds = retry_on
    elif callable(retry_on):
        return retry_on
    else:
        raise TypeError(
            "retry_on must be an exception type, a non-empty tuple of them, or a predicate "
            f"(exception) -> bool, got {retry_on!r}"
        )

    def is_kind(exc: BaseException) -> bool:
        return isinstance(exc, kinds)

    return is_kind


# ---------------------------------------------------------------------------------------------
# The seam to a circuit breaker
# ---------------------------------------------------------------------------------------------


class Breaker(Protocol):
    """What `Retry(..., breaker=...)` needs of a circuit breaker.

    Before each attempt the retry asks ``try_acquire()``: False means the circuit is open,
    so the attempt is not made and ``refusal()`` (an `Exception` with a ``retry_after`` in
    seconds, such as ``CircuitOpen``) stands for its outcome: the retry waits that long if
    its deadline allows, else gives up with it. A permitted attempt is reported with
    ``record(ok, duration)`` (``ok`` False for the failures this retry retries), or with
    ``release()`` if it never finished (cancelled), so a half-open probe slot is not lost.
    A refusal counts as an attempt (towards ``attempts`` and the backoff's exponent).
    """

    def try_acquire(self) -> bool: ...
    def record(self, ok: bool, duration: float) -> None: ...
    def release(self) -> None: ...
    def refusal(self) -> Exception: ...


# ---------------------------------------------------------------------------------------------
# Counting
# ---------------------------------------------------------------------------------------------


@final
@dataclass(frozen=True, slots=True)
class RetryStats:
    """A snapshot of a `Retry`'s counters (since it was made).

    Every call that has ended is counted once in ``succeeded``, ``failed``, ``cancelled`` or
    ``gave_up``; ``in_flight`` are the rest. ``attempts - calls`` attempts were retries.
    """

    calls: int
    """Calls started (the decorated function, ``call``, ``call_blocking``, an iteration)."""
    attempts: int
    """Attempts made (calls of the function), first attempts included."""
    retries: int
    """Decisions to try again (each followed by a wait, then an attempt)."""
    succeeded: int
    """Calls that returned (at the first attempt or after retries)."""
    failed: int
    """Calls that raised an exception ``retry_on`` does not retry (raised at once)."""
    cancelled: int
    """Calls ended by cancellation, ``KeyboardInterrupt`` or another non-`Exception`."""
    gave_up: Mapping[str, int]
    """Calls that gave up on a retryable failure, by reason: ``"attempts"`` (none left),
    ``"deadline"`` (the wait, or the server's hint, would end at or past it), ``"budget"`` (the
    `RetryBudget` refused)."""
    waited: float
    """Seconds spent in backoff waits, in total."""

    @property
    def in_flight(self) -> int:
        """Calls not ended yet."""
        ended = self.succeeded + self.failed + self.cancelled + sum(self.gave_up.values())
        return self.calls - ended


def _count_of(counter: itertools.count[int]) -> int:
    # itertools.count's repr is "count(N)": its next value, read without taking it.
    return int(repr(counter)[6:-1])


class _Counts:
    """A `Retry`'s counters. The success path only takes ``next()`` of two
    ``itertools.count``s (atomic under the GIL, no lock); the rest is counted under a lock."""

    __slots__ = (
        "attempts",
        "cancelled",
        "failed",
        "first_ok",
        "gave_up",
        "lock",
        "retries",
        "started",
        "succeeded",
        "waited",
    )

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.started = itertools.count()
        self.first_ok = itertools.count()  # succeeded at once, on a fast path
        self.attempts = 0  # every attempt but those counted in first_ok
        self.retries = 0
        self.succeeded = 0  # after a plan, i.e. not counted in first_ok
        self.failed = 0
        self.cancelled = 0
        self.gave_up = dict.fromkeys(GIVE_UP_REASONS, 0)
        self.waited = 0.0

    def snapshot(self) -> RetryStats:
        with self.lock:
            # Successes before starts: a call counted in one but not the other reads as in
            # flight, never as a negative number of them.
            first_ok = _count_of(self.first_ok)
            return RetryStats(
                calls=_count_of(self.started),
                attempts=first_ok + self.attempts,
                retries=self.retries,
                succeeded=first_ok + self.succeeded,
                failed=self.failed,
                cancelled=self.cancelled,
                gave_up=MappingProxyType(dict(self.gave_up)),
                waited=self.waited,
            )


# ---------------------------------------------------------------------------------------------
# Time: the one place that tells asyncio from trio
# ---------------------------------------------------------------------------------------------


# The running loop's clock (``loop.time()``, ``trio.current_time()``), read natively: the
# extension finds the asyncio loop without asyncio's system call (3.10, 3.11). Stateless, so
# one serves every thread and loop. Sleeps and checkpoints ask the backend seam (`_backend`).
_loop_time = LoopClock().now


def _no_time() -> float:
    return 0.0


def _refuse_loop_clock() -> float:
    raise RuntimeError(
        "admission: this Retry's clock is a LoopClock, which follows an event loop: use "
        "`await retry.call(...)` there, or no clock in threads"
    )


# ---------------------------------------------------------------------------------------------
# Retry
# ---------------------------------------------------------------------------------------------

_PENDING: Any = object()  # the outcome of an attempt not made yet

# What frees a result a call will not return (`Retry._drive_async`).
_AsyncDiscard = Callable[[Any], Awaitable[object]]
# (exception, result) of an attempt: exception None means it returned result.
_Outcome = tuple[BaseException | None, Any]
# What a plan yields: None, make an attempt (send back its _Outcome); a float, wait that long
# (send back None, or throw what interrupted the wait). It returns the call's result or
# raises its exception.
_Plan = Generator[float | None, Any, Any]
# (started, first_ok, now, retry_if, deposit): see Retry._fast_path.
_FastPath = tuple[
    Callable[[], int],
    Callable[[], int],
    Callable[[], float],
    Callable[[Any], bool] | None,
    Callable[[], None] | None,
]


@final
class Retry:
    """Retries a function on transient failures, with jittered exponential backoff.

    ::

        retry = adm.Retry(attempts=5, deadline="30s", base="100ms", cap="10s")

        @retry                              # a sync or an async function
        async def call_api(): ...

        await retry.call(fn, *args)         # async (asyncio, trio)
        retry.call_blocking(fn, *args)      # threads
        async for attempt in retry:         # a block of code (`for attempt in retry` in threads)
            with attempt:
                ...

    One `Retry` can serve any number of calls at once, in tasks, threads and event loops:
    each call keeps its own state; the counters (`stats`) are shared.

    Args:
        attempts: attempts per call, the first included (``None``: as many as the deadline
            allows). Default 5.
        deadline: seconds (or ``"30s"``) from the start of the call, at and after which no
            attempt starts: a wait that would end there, or a server's hint that would, gives up
            at once instead of waiting. An attempt already running is not interrupted (put
            a timeout on the call itself for that). ``None``: no deadline. Default 30 s.
        base: the first retry's backoff ceiling; each retry doubles it. Default 100 ms.
        cap: the largest backoff ceiling (applied *before* the jitter). Default 10 s.
        jitter: ``"full"`` (default): uniform in ``[0, min(cap, base * 2 ** (n - 1)))``;
            ``"decorrelated"``: uniform in ``[base, 3 * previous wait)``, capped;
            ``"none"``: ``min(cap, base * 2 ** (n - 1))``.
        retry_on: which exceptions to retry: a type, a tuple of types, or a predicate.
            Default `transient` (connection errors, timeouts, 408/425/429/5xx, anything with
            ``retry_after``). Never anything but an `Exception`.
        retry_if: a predicate on the returned value: when true the result counts as a
            failure and is retried (``lambda r: r.status_code == 503``). If the call gives
            up, that last result is returned.
        budget: a `admission.RetryBudget` shared with other retries: a retry it refuses
            gives up at once.
        name: names this retry in its log lines and metrics series (retries of one name
            share a series).
        breaker: a circuit breaker (see `Breaker`): no attempt goes through an open one.
        clock: a `admission.testing.ManualClock`: deadlines are read from it and waits
            advance it instead of sleeping (sync and async). Or `admission.LoopClock` (the
            default on asyncio and trio anyway). By default threads use the process's
            monotonic clock and really sleep.
        random: the source of jitter, a function returning floats in ``[0, 1)``, or a
            ``random.Random`` (seeded: reproducible waits). Default ``random.random``.

    When a call gives up, it ends with its last attempt's outcome: the exception is raised
    again (the one the caller would have seen without retries; ``except`` clauses keep
    working), or the last result is returned (``retry_if``). Why it gave up is counted in
    `stats` (``gave_up``) and logged at DEBUG on the ``admission.retry`` logger. Server
    hints (``retry_after`` attributes, ``Retry-After`` and ``retry-after-ms`` headers, see
    `admission._hints`) make the wait at least that long, past ``cap`` if need be.

    Raises:
        TypeError, ValueError: a bad argument (named in the message).
    """

    __slots__ = (
        "__weakref__",
        "_attempts",
        "_backoff",
        "_breaker",
        "_budget",
        "_clock",
        "_counts",
        "_deadline",
        "_fast_async",
        "_fast_blocking",
        "_manual",
        "_name",
        "_retry_if",
        "_retryable",
    )

    def __init__(
        self,
        attempts: int | None = 5,
        *,
        deadline: float | str | None = "30s",
        base: float | str = "100ms",
        cap: float | str = "10s",
        jitter: Jitter = "full",
        retry_on: type[BaseException]
        | tuple[type[BaseException], ...]
        | Callable[[BaseException], bool] = transient,
        retry_if: Callable[[Any], bool] | None = None,
        budget: RetryBudget | None = None,
        name: str | None = None,
        breaker: Breaker | None = None,
        clock: ManualClock | LoopClock | None = None,
        random: Callable[[], float] | _random.Random | None = None,
    ) -> None:
        if attempts is not None and (
            isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1
        ):
            raise ValueError(f"attempts must be an int >= 1 or None, got {attempts!r}")
        self._attempts = attempts
        self._deadline = (
            None if deadline is None else duration_seconds(deadline, "deadline", positive=True)
        )
        if attempts is None and self._deadline is None:
            raise ValueError(
                "attempts=None and deadline=None would retry forever: bound one of them"
            )
        base_s = duration_seconds(base, "base", positive=True)
        cap_s = duration_seconds(cap, "cap", positive=True)
        if cap_s < base_s:
            raise ValueError(f"cap ({cap!r}) must be at least base ({base!r})")
        if jitter not in JITTERS:
            raise ValueError(f"jitter must be one of {', '.join(JITTERS)}, got {jitter!r}")
        if random is None:
            draw = _random.random
        elif isinstance(random, _random.Random):
            draw = random.random
        elif callable(random):
            draw = random
        else:
            raise TypeError(f"random must be a random.Random or a function, got {random!r}")
        self._backoff = Backoff(base_s, cap_s, jitter, draw)
        self._retryable = _retry_on(retry_on)
        if retry_if is not None and not callable(retry_if):
            raise TypeError(f"retry_if must be a predicate (result) -> bool, got {retry_if!r}")
        self._retry_if = retry_if
        if budget is not None and not isinstance(budget, RetryBudget):
            raise TypeError(f"budget must be an admission.RetryBudget, got {budget!r}")
        self._budget = budget
        if breaker is not None and not all(
            callable(getattr(breaker, m, None))
            for m in ("try_acquire", "record", "release", "refusal")
        ):
            raise TypeError(
                "breaker must have try_acquire(), record(ok, duration), release() and "
                f"refusal() (see admission.retry.Breaker), got {breaker!r}"
            )
        self._breaker = breaker
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str or None, got {name!r}")
        self._name = name
        if clock is not None and not isinstance(clock, (ManualClock, LoopClock)):
            raise TypeError(
                f"clock must be an admission.testing.ManualClock, an admission.LoopClock or "
                f"None, got {clock!r}"
            )
        self._clock = clock
        self._manual = clock if isinstance(clock, ManualClock) else None
        self._counts = _Counts()
        self._fast_async = self._fast_path(self._now_async())
        self._fast_blocking = self._fast_path(self._now_blocking())
        if name is not None:
            _track(self)

    # --- configuration, read-only ----------------------------------------------------------

    @property
    def name(self) -> str | None:
        """The name given, if any."""
        return self._name

    @property
    def attempts(self) -> int | None:
        """Attempts per call, the first included (None: bounded by the deadline only)."""
        return self._attempts

    @property
    def deadline(self) -> float | None:
        """Seconds from the start of a call at and after which no attempt starts, or None."""
        return self._deadline

    @property
    def base(self) -> float:
        """The first retry's backoff ceiling, in seconds."""
        return self._backoff.base

    @property
    def cap(self) -> float:
        """The largest backoff ceiling, in seconds (before jitter)."""
        return self._backoff.cap

    @property
    def jitter(self) -> Jitter:
        """``"full"``, ``"decorrelated"`` or ``"none"``."""
        return self._backoff.jitter

    @property
    def budget(self) -> RetryBudget | None:
        """The shared `RetryBudget`, if any."""
        return self._budget

    @property
    def breaker(self) -> Breaker | None:
        """The circuit breaker, if any."""
        return self._breaker

    @property
    def clock(self) -> ManualClock | LoopClock | None:
        """The clock given, if any."""
        return self._clock

    def stats(self) -> RetryStats:
        """The counters: calls, attempts, retries and how calls ended (see `RetryStats`)."""
        return self._counts.snapshot()

    def __repr__(self) -> str:
        b = self._backoff
        return (
            f"Retry(attempts={self._attempts}, deadline={self._deadline}, base={b.base}, "
            f"cap={b.cap}, jitter={b.jitter!r}, name={self.name!r})"
        )

    # --- time ------------------------------------------------------------------------------

    def _now_async(self) -> Callable[[], float]:
        """The clock of async calls: the manual clock, or the running loop's."""
        return self._manual.now if self._manual is not None else _loop_time

    def _now_blocking(self) -> Callable[[], float]:
        """The clock of calls in threads: the manual clock, or the monotonic clock."""
        if self._manual is not None:
            return self._manual.now
        if isinstance(self._clock, LoopClock):
            return _refuse_loop_clock
        return time.monotonic

    async def _sleep_async(self, seconds: float) -> None:
        if self._manual is None:
            await _backend.current().sleep(seconds)
        else:
            self._manual.advance(seconds)
            await _backend.current().checkpoint()

    def _sleep_blocking(self, seconds: float) -> None:
        if self._manual is None:
            time.sleep(seconds)
        else:
            self._manual.advance(seconds)

    def _refuse_blocking_in_a_loop(self, failure: BaseException | None) -> None:
        # A blocking wait in the thread of a running event loop would stall every task on
        # it; virtual time passes at once, so it is allowed.
        if self._manual is None and in_event_loop_thread():
            raise RuntimeError(
                "admission: a blocking retry (call_blocking, `for attempt in retry`, a sync "
                "function decorated with a Retry) would sleep in the thread of a running "
                "event loop: use `await retry.call(...)` or decorate an async function"
            ) from failure

    # --- the calls -------------------------------------------------------------------------

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Decorates ``fn`` (sync or async) to retry it. ``wrapped.retry`` is this `Retry`.

        The wrapper runs what `call` (or `call_blocking`) runs, bound once: the first attempt
        calls ``fn`` once, and the retry logic is entered only if it fails.
        """
        if inspect.isasyncgenfunction(fn) or inspect.isgeneratorfunction(fn):
            raise TypeError(
                f"Retry cannot decorate the generator function {fn!r}: a retry would only "
                "retry making the generator; retry the code that consumes it instead"
            )
        if not callable(fn):
            raise TypeError(f"Retry decorates functions, got {fn!r}")
        wrapper: Any
        if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
            getattr(fn, "__call__", None)  # noqa: B004 - an object with an async __call__
        ):
            wrapper = self._async(fn)  # type: ignore[arg-type]
        else:
            wrapper = self._blocking(fn)
        functools.update_wrapper(wrapper, fn)
        wrapper.retry = self
        return wrapper  # type: ignore[no-any-return]

    async def call(self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Awaits ``fn(*args, **kwargs)``, retrying it; its result, or its last exception.

        On asyncio (and uvloop) and trio; waits are the loop's sleeps.
        """
        return await self._async(fn)(*args, **kwargs)

    def call_blocking(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Calls ``fn(*args, **kwargs)`` in this thread, retrying it (waits block the thread).

        Raises `RuntimeError` instead of sleeping in the thread of a running event loop.
        """
        return self._blocking(fn)(*args, **kwargs)

    # The fast path: the first attempt calls ``fn`` once, counted by two ``next()``s, and
    # the plan (a generator) is made only if it fails. Its start time is read from the
    # clock the plan will use (the loop's, or the manual clock) so that a deadline counts
    # the first attempt's (virtual) time too.

    def _async(
        self, fn: Callable[..., Awaitable[R]], discard: _AsyncDiscard | None = None
    ) -> Callable[..., Awaitable[R]]:
        """``fn`` retried on the running event loop; ``discard``: see `_drive_async`."""
        started, first_ok, now, retry_if, deposit = self._fast_async
        retry = self
        if self._breaker is not None:

            async def through_the_breaker(*args: Any, **kwargs: Any) -> Any:
                start = now()
                started()
                if deposit is not None:
                    deposit()
                steps = retry._plan(start, _PENDING, _PENDING, False)
                return await retry._drive_async(steps, fn, args, kwargs, discard)

            return through_the_breaker

        async def retrying(*args: Any, **kwargs: Any) -> Any:
            start = now()  # first: if it raises (no loop), nothing was counted
            started()
            if deposit is not None:
                deposit()
            try:
                result = await fn(*args, **kwargs)
            except BaseException as exc:
                failure: BaseException | None = exc
            else:
                try:
                    again = retry_if is not None and retry_if(result)
                except BaseException as error:
                    retry._misjudged(error)
                    if discard is not None:
                        await discard(result)
                    raise
                if not again:
                    first_ok()
                    return result
                failure = None
            # Out of the except block: what the plan raises later is not chained to this.
            done = result if failure is None else None  # (unbound when the attempt raised)
            return await retry._after_first_async(start, failure, done, fn, args, kwargs, discard)

        return retrying

    def _first_async(self) -> _FastPath | None:
        """The fast path's pieces, for a caller that runs the first attempt itself as
        ``_async``'s wrapper runs it (the httpx transport: one coroutine less per request),
        then `_after_first_async` if it failed; None with a breaker (every attempt, the first
        included, goes through the plan)."""
        return None if self._breaker is not None else self._fast_async

    async def _after_first_async(
        self,
        start: float,
        failure: BaseException | None,
        result: R | None,
        fn: Callable[..., Awaitable[R]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any] | None = None,
        discard: _AsyncDiscard | None = None,
    ) -> R:
        """The rest of a call whose first attempt (begun at ``start``, by the fast path's
        clock) raised ``failure`` or (None) returned ``result``, which ``retry_if`` refused:
        what ``_async``'s wrapper runs after it. Called out of the except block that caught
        ``failure``: what the plan raises later is not chained to it. ``discard``: see
        `_drive_async`."""
        held = result if failure is None else _PENDING
        steps = self._plan(start, failure, None if held is _PENDING else held, False)
        done: R = await self._drive_async(steps, fn, args, kwargs or {}, discard, held)
        return done

    def _misjudged(self, error: BaseException) -> None:
        """Counts a call ended by its first result's ``retry_if`` raising ``error`` (on a
        fast path: as the plan counts a later one's), with that attempt."""
        with self._counts.lock:
            self._counts.attempts += 1
        self._end("failed" if isinstance(error, Exception) else "cancelled")

    def _blocking(
        self, fn: Callable[..., R], discard: Callable[[Any], object] | None = None
    ) -> Callable[..., R]:
        """``fn`` retried in the calling thread; ``discard``: see `_drive_blocking`."""
        started, first_ok, now, retry_if, deposit = self._fast_blocking
        retry = self
        if self._breaker is not None:

            def through_the_breaker(*args: Any, **kwargs: Any) -> Any:
                start = now()
                started()
                if deposit is not None:
                    deposit()
                steps = retry._plan(start, _PENDING, _PENDING, True)
                return retry._drive_blocking(steps, fn, args, kwargs, discard)

            return through_the_breaker

        def retrying(*args: Any, **kwargs: Any) -> Any:
            start = now()  # first: if it raises (no loop), nothing was counted
            started()
            if deposit is not None:
                deposit()
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                failure: BaseException | None = exc
            else:
                try:
                    again = retry_if is not None and retry_if(result)
                except BaseException as error:
                    retry._misjudged(error)
                    if discard is not None:
                        discard(result)
                    raise
                if not again:
                    first_ok()
                    return result
                failure = None
            held = result if failure is None else _PENDING
            steps = retry._plan(start, failure, None if held is _PENDING else held, True)
            return retry._drive_blocking(steps, fn, args, kwargs, discard, held)

        return retrying

    def _fast_path(self, now: Callable[[], float]) -> _FastPath:
        """What a fast path reads, bound once (no reference back to this Retry: no cycle)."""
        counts = self._counts
        if self._deadline is None and self._breaker is None:
            now = _no_time  # nothing would look at the start time
        deposit = self._budget.deposit if self._budget is not None else None
        return counts.started.__next__, counts.first_ok.__next__, now, self._retry_if, deposit

    async def _drive_async(
        self,
        plan: _Plan,
        fn: Callable[..., Awaitable[Any]],
        args: Any,
        kwargs: Any,
        discard: _AsyncDiscard | None = None,
        held: Any = _PENDING,
    ) -> Any:
        """Runs ``plan``'s steps on the running loop until it returns (or raises).

        ``discard``: awaited once with each result of ``fn`` the call will not return (one
        retried, before the wait; the last one when the call raises instead, e.g. from a
        ``retry_if`` that raised), so that what it holds is freed (the httpx transport closes
        the response); it must not raise. ``held``: the first attempt's result, which the
        plan was made with (`_PENDING`: none)."""
        try:
            step = next(plan)
            while True:
                if step is None:
                    try:
                        held = await fn(*args, **kwargs)
                        outcome: _Outcome | None = (None, held)
                    except BaseException as exc:
                        outcome = (exc, None)
                else:
                    if held is not _PENDING and discard is not None:
                        result, held = held, _PENDING
                        await discard(result)  # retried: freed before the wait
                    try:
                        await self._sleep_async(step)
                    except BaseException as exc:
                        plan.throw(exc)
                    outcome = None
                step = plan.send(outcome)
        except StopIteration as done:
            return done.value  # (the last result: never discarded)
        except BaseException:
            if held is not _PENDING and discard is not None:
                await discard(held)
            raise
        finally:
            plan.close()

    def _drive_blocking(
        self,
        plan: _Plan,
        fn: Callable[..., Any],
        args: Any,
        kwargs: Any,
        discard: Callable[[Any], object] | None = None,
        held: Any = _PENDING,
    ) -> Any:
        """Runs ``plan``'s steps in this thread until it returns (or raises); ``discard`` and
        ``held`` as `_drive_async`'s (``discard`` called, not awaited)."""
        try:
            step = next(plan)
            while True:
                if step is None:
                    try:
                        held = fn(*args, **kwargs)
                        outcome: _Outcome | None = (None, held)
                    except BaseException as exc:
                        outcome = (exc, None)
                else:
                    if held is not _PENDING and discard is not None:
                        result, held = held, _PENDING
                        discard(result)  # retried: freed before the wait
                    try:
                        self._sleep_blocking(step)
                    except BaseException as exc:
                        plan.throw(exc)
                    outcome = None
                step = plan.send(outcome)
        except StopIteration as done:
            return done.value  # (the last result: never discarded)
        except BaseException:
            if held is not _PENDING and discard is not None:
                discard(held)
            raise
        finally:
            plan.close()

    # --- the plan --------------------------------------------------------------------------

    def _plan(
        self,
        start: float,
        exc: BaseException | None,
        result: Any,
        blocking: bool,
        results: bool = True,
    ) -> _Plan:
        """The decisions of one call, whose first attempt began at ``start`` and ended with
        ``exc`` / ``result`` (both `_PENDING`: not made yet). Yields None for "make an
        attempt" (send back its `_Outcome`) and a float for "wait this long" (send back
        None, or throw what interrupted the wait); returns the result or raises.
        ``results``: whether outcomes carry results for ``retry_if`` (not in iterations)."""
        counts = self._counts
        now = self._now_blocking() if blocking else self._now_async()
        deadline_at = None if self._deadline is None else start + self._deadline
        retry_if = self._retry_if if results else None
        attempt = 1
        previous = self._backoff.base  # the last backoff (decorrelated jitter grows from it)
        ended = False
        # A first result given is one ``retry_if`` refused already: not asked again.
        judged = exc is None
        if exc is not _PENDING:
            with counts.lock:
                counts.attempts += 1
        try:
            while True:
                refused, began = False, None
                if exc is _PENDING:
                    exc, result, refused, began = yield from self._attempt(now)
                if judged:
                    reason, judged = None, False
                else:
                    try:
                        reason = self._verdict(exc, result, refused, retry_if)
                    except BaseException:
                        # A ``retry_if`` that raised: the attempt says nothing about the
                        # dependency, and its breaker slot must not stay taken (a half-open
                        # breaker would wait for its probe's outcome for good).
                        if began is not None:
                            self._report("cancelled", 0.0)
                        raise
                if began is not None:
                    self._report(reason, now() - began)
                if reason == "succeeded":
                    with counts.lock:
                        counts.succeeded += 1
                    ended = True
                    return result
                if reason is None and self._attempts is not None and attempt >= self._attempts:
                    reason = "attempts"
                if reason is None:
                    wait = self._backoff.wait(attempt, previous)
                    previous = wait
                    hint = retry_after(exc if exc is not None else result)
                    if hint is not None and hint > wait:
                        wait = hint
                    if deadline_at is not None and now() + wait >= deadline_at:
                        reason = "deadline"
                    else:
                        if blocking:
                            self._refuse_blocking_in_a_loop(exc)
                        if self._budget is not None and not self._budget.try_withdraw():
                            reason = "budget"
                if reason is not None:
                    self._end(reason, exc if exc is not None else result, attempt)
                    ended = True
                    if exc is None:
                        return result
                    raise exc
                self._log_retry(exc if exc is not None else result, attempt, wait)
                with counts.lock:
                    counts.retries += 1
                    counts.waited += wait
                yield wait
                attempt += 1
                exc = result = _PENDING
        except BaseException as interrupted:
            # Thrown in at a wait (cancelled, KeyboardInterrupt, a refusal to block a loop),
            # raised by retry_if / retry_on themselves, or the plan dropped unfinished
            # (GeneratorExit: a `for attempt in retry` left mid-way): the call ends here.
            if not ended:
                self._end("failed" if isinstance(interrupted, Exception) else "cancelled")
            raise

    def _verdict(
        self,
        exc: BaseException | None,
        result: Any,
        refused: bool,
        retry_if: Callable[[Any], bool] | None,
    ) -> str | None:
        """What an attempt's outcome means: ``"succeeded"``; ``"failed"`` (not retryable) or
        ``"cancelled"`` (not an `Exception`), raised at once; None: worth retrying (a
        breaker's refusal always is)."""
        if exc is None:
            return None if retry_if is not None and retry_if(result) else "succeeded"
        if not isinstance(exc, Exception):
            return "cancelled"
        if refused or self._retryable(exc):
            return None
        return "failed"

    def _attempt(
        self, now: Callable[[], float]
    ) -> Generator[None, _Outcome, tuple[Any, Any, bool, float | None]]:
        """One attempt, through the breaker if there is one: ``(exc, result, refused,
        began)``; ``began`` (when the breaker let it through) is None without a breaker."""
        breaker = self._breaker
        if breaker is not None and not breaker.try_acquire():
            return breaker.refusal(), None, True, None
        with self._counts.lock:
            self._counts.attempts += 1
        began = None if breaker is None else now()
        try:
            exc, result = yield None
        except BaseException:
            if breaker is not None:  # the call was dropped during the attempt
                breaker.release()
            raise
        return exc, result, False, began

    def _report(self, verdict: str | None, duration: float) -> None:
        """Tells the breaker how a permitted attempt went: a failure this retry would retry
        is not ok; a cancelled one says nothing about the dependency (its slot goes back)."""
        breaker = self._breaker
        assert breaker is not None
        if verdict == "cancelled":
            breaker.release()
        else:
            breaker.record(verdict in ("succeeded", "failed"), duration)

    def _end(self, reason: str, outcome: object = None, attempt: int = 0) -> None:
        """Counts how a call ended (``reason``: a `GIVE_UP_REASONS`, "failed", "cancelled")."""
        counts = self._counts
        with counts.lock:
            if reason == "cancelled":
                counts.cancelled += 1
            elif reason == "failed":
                counts.failed += 1
            else:
                counts.gave_up[reason] += 1
        if reason in GIVE_UP_REASONS and _log.isEnabledFor(logging.DEBUG):
            _log.debug(
                "retry %s: gave up after %d attempt(s) (%s): %r",
                self.name or UNNAMED,
                attempt,
                reason,
                outcome,
            )

    def _log_retry(self, outcome: object, attempt: int, wait: float) -> None:
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug(
                "retry %s: attempt %d failed (%r); next attempt in %.3f s",
                self.name or UNNAMED,
                attempt,
                outcome,
                wait,
            )

    # --- for attempt in retry --------------------------------------------------------------

    def __iter__(self) -> Iterator[Attempt]:
        """``for attempt in retry: with attempt: ...``, in threads (waits block)."""
        return _Attempts(self, blocking=True)

    def __aiter__(self) -> AsyncIterator[Attempt]:
        """``async for attempt in retry: with attempt: ...`` (asyncio, trio)."""
        return _Attempts(self, blocking=False)


@final
class Attempt:
    """One attempt of ``for attempt in retry``: use it as ``with attempt:`` (or
    ``async with``) around the code to retry.

    A failure the retry will retry is swallowed here (the loop waits and goes round
    again); anything else, or a failure it gives up on, leaves the block as usual.
    """

    __slots__ = ("_attempts", "number")

    def __init__(self, attempts: _Attempts, number: int) -> None:
        self._attempts = attempts
        self.number = number
        """1 for the first attempt, 2 for the first retry, ..."""

    def __enter__(self) -> Attempt:
        return self

    def __exit__(
        self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        return self._attempts._ended(exc)

    async def __aenter__(self) -> Attempt:
        return self

    async def __aexit__(
        self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        return self._attempts._ended(exc)

    def __repr__(self) -> str:
        return f"<Attempt {self.number}>"


class _Attempts:
    """The iterator behind ``for attempt in retry`` / ``async for``: drives the plan, one
    `Attempt` per "attempt" step; an attempt's outcome is sent in when its block ends."""

    __slots__ = ("_blocking", "_number", "_plan", "_retry", "_step")

    def __init__(self, retry: Retry, blocking: bool) -> None:
        self._retry = retry
        self._blocking = blocking
        self._plan: _Plan | None = None
        # The plan's next step: None (an attempt), a float (a wait), or _PENDING while an
        # attempt handed out has not ended.
        self._step: Any = _PENDING
        self._number = 0

    def _advance(self) -> bool:
        """Before handing out an attempt: starts the plan, or ends it (False) if the previous
        attempt's block never ended (a body without ``with attempt:`` that did not raise: a
        success)."""
        if self._plan is None:
            if self._number:
                return False  # ended: succeeded, or given up (its error left the loop)
            retry = self._retry
            start = (retry._now_blocking() if self._blocking else retry._now_async())()
            next(retry._counts.started)
            if retry._budget is not None:
                retry._budget.deposit()
            self._plan = retry._plan(start, _PENDING, _PENDING, self._blocking, results=False)
            self._step = next(self._plan)
        elif self._step is _PENDING:
            self._send((None, None))
            return False
        return True

    def _hand_out(self) -> Attempt:
        self._number += 1
        self._step = _PENDING
        return Attempt(self, self._number)

    def _send(self, value: Any) -> None:
        assert self._plan is not None
        try:
            self._step = self._plan.send(value)
        except BaseException:
            self._plan = None
            raise

    def _ended(self, exc: BaseException | None) -> bool:
        """The block of the current attempt ended with ``exc``: True swallows it (retry)."""
        if self._plan is None or self._step is not _PENDING:
            return False  # an Attempt used twice: nothing more to decide
        try:
            self._send((exc, None))
        except StopIteration:
            return False  # succeeded
        except BaseException as raised:
            if raised is exc:
                return False  # given up on: the block's exception leaves it as it is
            raise
        return exc is not None

    def _interrupted(self, exc: BaseException) -> None:
        plan, self._plan = self._plan, None
        assert plan is not None
        plan.throw(exc)

    def __iter__(self) -> _Attempts:
        return self

    def __next__(self) -> Attempt:
        try:
            if not self._advance():
                raise StopIteration
        except StopIteration:
            raise StopIteration from None
        while self._step is not None:
            try:
                self._retry._sleep_blocking(self._step)
            except BaseException as exc:
                self._interrupted(exc)
            self._send(None)
        return self._hand_out()

    def __aiter__(self) -> _Attempts:
        return self

    async def __anext__(self) -> Attempt:
        try:
            if not self._advance():
                raise StopAsyncIteration
        except StopIteration:
            raise StopAsyncIteration from None
        while self._step is not None:
            try:
                await self._retry._sleep_async(self._step)
            except BaseException as exc:
                self._interrupted(exc)
            self._send(None)
        return self._hand_out()


# ---------------------------------------------------------------------------------------------
# Metrics: admission_retries_total{retry, outcome}, admission_retry_calls_total{retry, outcome}
# ---------------------------------------------------------------------------------------------
# Named retries only (`Retry.__init__` tracks those): an unnamed one has no series. Retries
# of one name share a series, a dropped retry's counts included.

_live_lock = threading.Lock()
_live: weakref.WeakSet[Retry] = weakref.WeakSet()
# The final counters of dropped retries, until a scrape adds them to `_retired`. Appended by
# a finalizer, which may run inside any allocation (a garbage collection), even one made
# with `_live_lock` held: so it takes no lock (deque.append is atomic).
_dropped: collections.deque[tuple[str, RetryStats]] = collections.deque()


@dataclass(slots=True)
class _Totals:
    """Counters of the dropped retries of one name (a counter never goes down)."""

    retried: int = 0
    calls: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(("succeeded", "failed", "cancelled", "gave_up"), 0)
    )
    gave_up: dict[str, int] = field(default_factory=lambda: dict.fromkeys(GIVE_UP_REASONS, 0))

    def add(self, s: RetryStats) -> None:
        self.retried += s.retries
        self.calls["succeeded"] += s.succeeded
        self.calls["failed"] += s.failed
        self.calls["cancelled"] += s.cancelled
        self.calls["gave_up"] += sum(s.gave_up.values())
        for reason, n in s.gave_up.items():
            self.gave_up[reason] += n


_retired: dict[str, _Totals] = {}


def _track(retry: Retry) -> None:
    with _live_lock:
        _live.add(retry)
    assert retry.name is not None  # only named retries have a series
    weakref.finalize(retry, _retire, retry.name, retry._counts)


def _retire(name: str, counts: _Counts) -> None:
    # The retry is gone, so nobody else holds its counters' lock.
    _dropped.append((name, counts.snapshot()))


def _families() -> Iterable[Family]:
    """The retries' families (a source of `admission.metrics.add_source`): reported even
    with no retry, so that OpenTelemetry creates their instruments up front."""
    with _live_lock:
        live = list(_live)  # strong references: none of these retires while we read
        while _dropped:  # every retry not in `live` is dropped, and already in `_dropped`
            name, stats = _dropped.popleft()
            _retired.setdefault(name, _Totals()).add(stats)
        totals = {
            name: _Totals(t.retried, dict(t.calls), dict(t.gave_up)) for name, t in _retired.items()
        }
    for retry in live:
        assert retry.name is not None
        totals.setdefault(retry.name, _Totals()).add(retry.stats())
    retries: list[Sample] = []
    calls: list[Sample] = []
    for name, t in sorted(totals.items()):
        retries.append(Sample({"retry": name, "outcome": "retried"}, float(t.retried)))
        for reason, n in t.gave_up.items():
            retries.append(Sample({"retry": name, "outcome": f"refused_{reason}"}, float(n)))
        for outcome, n in t.calls.items():
            calls.append(Sample({"retry": name, "outcome": outcome}, float(n)))
    yield Family(
        "admission_retries",
        "counter",
        "Retry decisions on retryable failures: retried, or refused (no attempts left, past "
        "the deadline, over the retry budget).",
        tuple(retries),
    )
    yield Family(
        "admission_retry_calls",
        "counter",
        "Calls through a Retry, by how they ended.",
        tuple(calls),
    )


add_source(_families)
