"""Pure-Python reference models of the native primitives, and small helpers shared by tests.

The models work on integer nanoseconds and state the *specification* each primitive must meet;
the tests drive a model and the native object side by side and compare every decision. They are
deliberately simple (lists and sums, no clever bookkeeping) so that they are easy to trust.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

NS = 1_000_000_000
#: Largest span the core represents (``MAX_SPAN_NS`` in rust/core/src/lib.rs).
MAX_SPAN_NS = 1 << 61


class ModelCapacityError(Exception):
    """The model's CapacityError: the cost can never fit."""

    def __init__(self, cost: int, capacity: int) -> None:
        super().__init__(cost, capacity)
        self.cost = cost
        self.capacity = capacity


class ModelTimeout(Exception):
    """The model's AcquireTimeout: admission needs ``needed_ns``, more than allowed."""

    def __init__(self, needed_ns: int) -> None:
        super().__init__(needed_ns)
        self.needed_ns = needed_ns


class ModelClosed(Exception):
    """The model's Closed."""


@dataclass
class Counters:
    """Outcome counters, as ``stats()`` reports them."""

    admitted: int = 0
    admitted_cost: int = 0
    rejected: int = 0
    timed_out: int = 0
    cancelled: int = 0

    def admit(self, cost: int) -> None:
        self.admitted += 1
        self.admitted_cost += cost

    def as_tuple(self) -> tuple[int, int, int, int, int]:
        return (self.admitted, self.admitted_cost, self.rejected, self.timed_out, self.cancelled)


def stats_tuple(stats: object) -> tuple[int, int, int, int, int]:
    """The counters of a ``LimiterStats``/``SemaphoreStats`` in `Counters.as_tuple` order."""
    names = ("admitted", "admitted_cost", "rejected", "timed_out", "cancelled")
    a, b, c, d, e = (int(getattr(stats, name)) for name in names)
    return (a, b, c, d, e)


def seconds_to_deadline_ns(seconds: float | None) -> int | None:
    """A timeout in seconds as a whole number of nanoseconds: the nearest one.

    This is the same conversion `ManualClock.advance` and ``SlidingWindow(window=...)`` use, so
    a timeout equal to a wait reported in seconds (``AcquireTimeout.needed``) is met.
    """
    if seconds is None:
        return None
    return round(seconds * 1e9)


# --------------------------------------------------------------------------------------------
# Token bucket (GCRA)
# --------------------------------------------------------------------------------------------


def _round_half_away(x: float) -> float:
    """Rust's ``f64::round`` (halves away from zero), for x >= 0."""
    floor = math.floor(x)
    return float(floor + 1) if x - floor >= 0.5 else float(floor)


def emission_interval_ns(rate: float, per: float) -> int:
    """``T``, nanoseconds per token: ``per / rate`` rounded up to whole ns (never faster).

    Mirrors ``emission_interval_ns`` in rust/core/src/gcra.rs, including its tolerance for
    float noise just above a whole number. Raises ValueError for rates finer than 1 ns or
    slower than one token per ``MAX_SPAN_NS``.
    """
    exact = (float(per) * float(NS)) / float(rate)
    rounded = _round_half_away(exact)
    t = rounded if abs(exact - rounded) <= exact * 1e-12 else float(math.ceil(exact))
    if t < 1.0 or exact < 1.0 - 1e-9:
        raise ValueError("rate: finer than 1 ns per token")
    if t >= float(MAX_SPAN_NS):
        raise ValueError("rate: slower than one token per MAX_SPAN_NS")
    return int(t)


@dataclass(frozen=True)
class ModelDecision:
    allowed: bool
    remaining: int
    retry_after_ns: int
    reset_after_ns: int


@dataclass
class GcraModel:
    """GCRA on integer ns: admit iff ``max(tat, now) + cost*T <= now + burst*T``.

    A rejection writes nothing. The bucket starts full (``tat = 0``).
    """

    rate: float
    per: float
    burst: int
    tat: int = 0
    counters: Counters = field(default_factory=Counters)

    def __post_init__(self) -> None:
        self.T = emission_interval_ns(self.rate, self.per)
        self.capacity_ns = self.burst * self.T

    def _check(self, cost: int, attempt: bool = False) -> None:
        """An attempt refused by a capacity error counts as rejected (peek counts nothing)."""
        if cost > self.burst:
            if attempt:
                self.counters.rejected += 1
            raise ModelCapacityError(cost, self.burst)

    def try_acquire(self, now: int, cost: int) -> bool:
        self._check(cost, attempt=True)
        new_tat = max(self.tat, now) + cost * self.T
        if new_tat > now + self.capacity_ns:
            self.counters.rejected += 1
            return False
        self.tat = new_tat
        self.counters.admit(cost)
        return True

    def peek(self, now: int, cost: int) -> ModelDecision:
        """What ``try_acquire`` would decide; ``remaining`` counts whole tokens left after it,
        ``reset_after`` is the time until the bucket is full again (after it, if allowed)."""
        self._check(cost)
        start = max(self.tat, now)
        limit = now + self.capacity_ns
        new_tat = start + cost * self.T
        if new_tat <= limit:
            return ModelDecision(True, (limit - new_tat) // self.T, 0, new_tat - now)
        # Tokens held right now; never negative, even while reservations are pending.
        return ModelDecision(False, max(0, limit - start) // self.T, new_tat - limit, start - now)

    def acquire_blocking(self, now: int, cost: int, max_wait_ns: int | None) -> int:
        """Reserves the earliest slot; returns the wait. Raises ModelTimeout (writing nothing
        but the timed-out count) if the wait exceeds ``max_wait_ns``."""
        self._check(cost, attempt=True)
        new_tat = max(self.tat, now) + cost * self.T
        wait = max(0, new_tat - (now + self.capacity_ns))
        if max_wait_ns is not None and wait > max_wait_ns:
            self.counters.timed_out += 1
            raise ModelTimeout(wait)
        self.tat = new_tat
        self.counters.admit(cost)
        return wait


def max_interval_excess(admissions: Sequence[tuple[int, int]], T: int, burst: int) -> int:
    """Largest ``cost(I)*T - len(I) - burst*T`` over intervals ``I = [a, b]`` of admission times.

    The GCRA bound "admitted cost over any interval of length t is at most burst + t/T" holds
    iff the result is <= 0. The worst intervals start and end at admissions, so with prefix
    sums ``P`` the check is ``max over i <= j of (P[j]*T - t[j]) - (P[i-1]*T - t[i])``: O(n).
    ``admissions`` are (time_ns, cost) in time order.
    """
    best = -(1 << 200)
    max_right = -(1 << 200)
    # Scan from the right, keeping the best end point seen so far.
    prefix = [0]
    for _, cost in admissions:
        prefix.append(prefix[-1] + cost)
    for j in range(len(admissions) - 1, -1, -1):
        t_j = admissions[j][0]
        max_right = max(max_right, prefix[j + 1] * T - t_j)
        best = max(best, max_right - (prefix[j] * T - t_j))
    return best - burst * T


# --------------------------------------------------------------------------------------------
# Sliding window (exact log)
# --------------------------------------------------------------------------------------------


@dataclass
class WindowModel:
    """Exact sliding window: a request at ``t`` fits iff the cost admitted in ``(t - W, t]``
    plus its own is at most ``limit``. The log holds every admission (time, cost)."""

    limit: int
    window_ns: int
    log: list[tuple[int, int]] = field(default_factory=list)
    counters: Counters = field(default_factory=Counters)

    def _check(self, cost: int, attempt: bool = False) -> None:
        """An attempt refused by a capacity error counts as rejected (peek counts nothing)."""
        if cost > self.limit:
            if attempt:
                self.counters.rejected += 1
            raise ModelCapacityError(cost, self.limit)

    def _prune(self, now: int) -> None:
        # Entries at or before now - W can never matter again (time only moves forward).
        self.log = [(ts, c) for ts, c in self.log if ts > now - self.window_ns]

    def used(self, t: int) -> int:
        """Cost admitted in the window ending at ``t``."""
        return sum(c for ts, c in self.log if t - self.window_ns < ts <= t)

    def earliest_fit(self, now: int, cost: int) -> int:
        """Earliest ``t >= now`` at which ``cost`` more fits (the log holds no future entries)."""
        assert all(ts <= now for ts, _ in self.log), "model: no future entries expected"
        candidates = sorted({now} | {ts + self.window_ns for ts, _ in self.log})
        for t in candidates:
            if t >= now and self.used(t) + cost <= self.limit:
                return t
        raise AssertionError("unreachable while cost <= limit")  # pragma: no cover

    def try_acquire(self, now: int, cost: int) -> bool:
        self._check(cost, attempt=True)
        self._prune(now)
        if self.used(now) + cost > self.limit:
            self.counters.rejected += 1
            return False
        self.log.append((now, cost))
        self.counters.admit(cost)
        return True

    def peek(self, now: int, cost: int) -> ModelDecision:
        """``remaining``: cost still admissible now (after this request, if allowed);
        ``retry_after``: until this request would fit; ``reset_after``: until the window holds
        nothing (counting this request, if allowed)."""
        self._check(cost)
        self._prune(now)
        used = self.used(now)
        allowed = used + cost <= self.limit
        after = used + cost if allowed else used
        live = [ts for ts, c in self.log if c > 0 and ts > now - self.window_ns]
        if allowed and cost > 0:
            live.append(now)
        reset = max((ts + self.window_ns - now for ts in live), default=0)
        retry = 0 if allowed else self.earliest_fit(now, cost) - now
        return ModelDecision(allowed, self.limit - after, retry, reset)

    def acquire_blocking(self, now: int, cost: int, max_wait_ns: int | None) -> int:
        self._check(cost, attempt=True)
        self._prune(now)
        at = self.earliest_fit(now, cost)
        wait = at - now
        if max_wait_ns is not None and wait > max_wait_ns:
            self.counters.timed_out += 1
            raise ModelTimeout(wait)
        self.log.append((at, cost))
        self.counters.admit(cost)
        return wait


def max_window_load(admissions: Sequence[tuple[int, int]], window_ns: int) -> int:
    """Largest cost admitted in any window ``(t - W, t]``; admissions in time order."""
    best = 0
    total = 0
    left = 0
    for t, cost in admissions:
        total += cost
        while admissions[left][0] <= t - window_ns:
            total -= admissions[left][1]
            left += 1
        best = max(best, total)
    return best


# --------------------------------------------------------------------------------------------
# Driving a native rate limiter and its model side by side
# --------------------------------------------------------------------------------------------


def model_outcome(call: Callable[..., Any], *args: Any) -> tuple[str, Any]:
    """``call(*args)`` as ``("ok", result)``, ``("capacity", None)`` or
    ``("timeout", needed_ns)``."""
    try:
        return "ok", call(*args)
    except ModelCapacityError:
        return "capacity", None
    except ModelTimeout as miss:
        return "timeout", miss.needed_ns


def advance_ns(clock: Any, ns: int) -> int:
    """Advances a ManualClock by exactly ``ns`` (checked); returns the new time in ns."""
    before = clock.now_ns()
    if ns:
        clock.advance(ns / 1e9)
    now = int(clock.now_ns())
    assert now == before + ns, f"advance({ns} ns) moved the clock by {now - before} ns"
    return now


def decision_tuple(d: Any) -> tuple[bool, int, float, float]:
    return (d.allowed, d.remaining, d.retry_after, d.reset_after)


def model_decision_tuple(m: ModelDecision) -> tuple[bool, int, float, float]:
    """A model decision as the native ``Decision`` reports it: durations in float seconds."""
    return (m.allowed, m.remaining, m.retry_after_ns / 1e9, m.reset_after_ns / 1e9)


#: One schedule step: (advance_ns, op, cost, timeout_ns); op is "try", "peek", "block"
#: (no timeout) or "block_timeout".
Step = tuple[int, str, int, int]


def run_against_model(
    clock: Any, limiter: Any, model: GcraModel | WindowModel, steps: Iterable[Step]
) -> None:
    """Replays ``steps`` on the native limiter and the model; every decision, every wait on
    the virtual clock, every error and every counter must agree."""
    import pytest  # only the tests import this module

    import admission as adm

    capacity = model.burst if isinstance(model, GcraModel) else model.limit
    for adv, op, cost, timeout_ns in steps:
        now = advance_ns(clock, adv)
        if op == "try":
            kind, want = model_outcome(model.try_acquire, now, cost)
            if kind == "capacity":
                with pytest.raises(adm.CapacityError) as info:
                    limiter.try_acquire(cost)
                assert (info.value.cost, info.value.capacity) == (cost, capacity)
            else:
                assert limiter.try_acquire(cost) is want
        elif op == "peek":
            kind, want = model_outcome(model.peek, now, cost)
            if kind == "capacity":
                with pytest.raises(adm.CapacityError):
                    limiter.peek(cost)
            else:
                assert decision_tuple(limiter.peek(cost)) == model_decision_tuple(want)
        else:
            timeout = None if op == "block" else timeout_ns / 1e9
            deadline = seconds_to_deadline_ns(timeout)
            kind, want = model_outcome(model.acquire_blocking, now, cost, deadline)
            if kind == "capacity":
                with pytest.raises(adm.CapacityError):
                    limiter.acquire_blocking(cost, timeout)
                assert clock.now_ns() == now
            elif kind == "timeout":
                with pytest.raises(adm.AcquireTimeout) as info:
                    limiter.acquire_blocking(cost, timeout)
                assert info.value.needed == want / 1e9, "needed: exactly the wait"
                assert info.value.timeout == timeout
                assert clock.now_ns() == now, "a deadline that cannot be met fails at once"
            else:
                limiter.acquire_blocking(cost, timeout)
                assert clock.now_ns() == now + want, "the virtual wait is exactly the wait"
        counters = limiter.stats()
        assert stats_tuple(counters) == model.counters.as_tuple()
        if isinstance(model, WindowModel) and op in ("try", "peek") and cost <= capacity:
            # Memory: these evict first, so the log holds at most one entry per unit of
            # limit. (A blocking acquire appends at a later time; the next call evicts.)
            assert limiter._log_len() <= capacity


# --------------------------------------------------------------------------------------------
# Semaphore (FIFO, multi-permit, resizable, closable)
# --------------------------------------------------------------------------------------------


@dataclass
class SemaphoreModel:
    """Permits with a strict FIFO queue (no barging), resizable, closable.

    Queued requests are identified by the caller's ids. ``woken`` lists ids in the order their
    outcomes were settled by someone else (grants, close, shrink); ``outcomes`` maps each id
    to ``"waiting"``, ``"granted"``, ``"closed"``, ``"cancelled"`` or ``"too_large"``.
    """

    limit: int
    in_use: int = 0
    high_water: int = 0
    closed: bool = False
    queue: list[tuple[int, int]] = field(default_factory=list)  # (id, n)
    outcomes: dict[int, str] = field(default_factory=dict)
    woken: list[int] = field(default_factory=list)
    counters: Counters = field(default_factory=Counters)

    @property
    def available(self) -> int:
        return max(0, self.limit - self.in_use)

    def _take(self, n: int) -> None:
        assert self.in_use + n <= self.limit, "model: grants never exceed the limit"
        self.in_use += n
        self.high_water = max(self.high_water, self.in_use)
        self.counters.admit(n)

    def _grant(self) -> None:
        while self.queue and not self.closed:
            ident, n = self.queue[0]
            if self.in_use + n > self.limit:
                break
            self.queue.pop(0)
            self._take(n)
            self.outcomes[ident] = "granted"
            self.woken.append(ident)

    def _check(self, n: int) -> None:
        # A request refused by an error is counted as rejected (issue 11, case 9).
        if self.closed:
            self.counters.rejected += 1
            raise ModelClosed
        if n > self.limit:
            self.counters.rejected += 1
            raise ModelCapacityError(n, self.limit)

    def try_acquire(self, n: int) -> bool:
        self._check(n)
        if self.queue or self.in_use + n > self.limit:
            self.counters.rejected += 1
            return False
        self._take(n)
        return True

    def enqueue(self, ident: int, n: int) -> bool:
        """True: admitted at once. False: queued under ``ident``."""
        self._check(n)
        if not self.queue and self.in_use + n <= self.limit:
            self._take(n)
            return True
        self.queue.append((ident, n))
        self.outcomes[ident] = "waiting"
        return False

    def release(self, n: int) -> None:
        if n > self.in_use:
            raise ValueError("release more than held")
        self.in_use -= n
        self._grant()

    def cancel(self, ident: int, timed_out: bool) -> str:
        outcome = self.outcomes[ident]
        if outcome != "waiting":
            return outcome
        self.queue = [(i, n) for i, n in self.queue if i != ident]
        self.outcomes[ident] = "cancelled"
        if timed_out:
            self.counters.timed_out += 1
        else:
            self.counters.cancelled += 1
        self._grant()
        return "cancelled"

    def resize(self, limit: int) -> None:
        self.limit = limit
        keep = []
        for ident, n in self.queue:
            if n > limit:
                self.outcomes[ident] = "too_large"
                self.counters.rejected += 1
                self.woken.append(ident)
            else:
                keep.append((ident, n))
        self.queue = keep
        self._grant()

    def close(self) -> None:
        self.closed = True
        for ident, _ in self.queue:
            self.outcomes[ident] = "closed"
            self.counters.rejected += 1
            self.woken.append(ident)
        self.queue = []


# --------------------------------------------------------------------------------------------
# Thread helpers (bounded: a stuck thread fails the test instead of hanging it)
# --------------------------------------------------------------------------------------------

JOIN_TIMEOUT = 20.0


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Polls ``predicate`` every millisecond; fails the test if it is not true in time."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached within {timeout} s")
        time.sleep(0.001)


class Worker(threading.Thread):
    """A daemon thread that records what its target returned or raised."""

    def __init__(self, target: Callable[[], object]) -> None:
        super().__init__(daemon=True)
        self._fn = target
        self.result: object = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self._fn()
        except BaseException as exc:
            self.error = exc

    def finish(self, timeout: float = JOIN_TIMEOUT) -> Any:
        """Joins (bounded), re-raises the thread's exception, returns its result."""
        self.join(timeout)
        if self.is_alive():
            raise AssertionError(f"thread did not finish within {timeout} s")
        if self.error is not None:
            raise self.error
        return self.result


def run_threads(targets: Iterable[Callable[[], Any]]) -> list[Any]:
    """Starts one worker per target, joins them all (bounded), returns their results."""
    workers = [Worker(t) for t in targets]
    for w in workers:
        w.start()
    return [w.finish() for w in workers]
