"""The rate limiters' waiting queue against a reference model (hypothesis state machine).

Arrivals, withdrawals from anywhere (waiting or granted-but-unused), the head's polls as time
passes, immediate attempts and takes, on a token bucket and on a sliding window under a
manual clock. The model is the specification written plainly: a FIFO of places over the
admissions-only state of `GcraModel` / `WindowModel` from `reference.py`:

- a request is admitted at once only if nobody waits and it fits; otherwise it queues, unless
  the queue ahead plus itself could not be admitted within its timeout (counted timed out);
- only the head is ever granted, when it fits; heads are granted in order;
- a waiting request that leaves is removed, and those behind move up;
- a grant given up before use goes back: exactly to the limiter if nothing was admitted since
  or the bucket still owed more than the time since (token bucket), else less that time; on
  a sliding window always exactly (it leaves the log); then the heads that fit are granted;
- counters count each request once, by its outcome; admitted only when taken.
"""

from __future__ import annotations

import functools
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    multiple,
    precondition,
    rule,
)
from reference import NS, GcraModel, WindowModel

import admission as adm

S = NS


class QueueModel:
    """A FIFO of places over an admissions-only limiter model (see the module docstring)."""

    def __init__(self, limiter: GcraModel | WindowModel) -> None:
        self.lim = limiter
        self.queue: list[tuple[int, int]] = []  # (ident, cost), head first
        self.granted: dict[int, tuple[int, int, int]] = {}  # ident -> (cost, record, at)
        self.outcome: dict[int, str] = {}
        self.woken: list[int] = []
        # Every admission that was used, at the time it was made: (time, cost).
        self.admissions: list[tuple[int, int]] = []

    @property
    def is_bucket(self) -> bool:
        return isinstance(self.lim, GcraModel)

    def fits(self, now: int, cost: int) -> bool:
        if self.is_bucket:
            lim = self.lim
            assert isinstance(lim, GcraModel)
            return max(lim.tat, now) + cost * lim.T <= now + lim.capacity_ns
        lim = self.lim
        assert isinstance(lim, WindowModel)
        lim._prune(now)
        return lim.used(now) + cost <= lim.limit

    def admit(self, now: int, cost: int) -> int:
        """Writes an admission (uncounted); returns its record."""
        if isinstance(self.lim, GcraModel):
            self.lim.tat = max(self.lim.tat, now) + cost * self.lim.T
            return self.lim.tat
        self.lim.log.append((now, cost))
        return now

    def due_after(self, now: int, cost: int) -> int:
        """When ``cost`` behind the whole queue would be admitted (token bucket: exact)."""
        ahead = sum(c for _, c in self.queue)
        lim = self.lim
        assert isinstance(lim, GcraModel)
        return max(max(lim.tat, now) + (ahead + cost) * lim.T - lim.capacity_ns, now)

    def enqueue(self, ident: int, now: int, cost: int, max_wait: int | None) -> str:
        if not self.queue and self.fits(now, cost):
            self.admit(now, cost)
            self.lim.counters.admit(cost)
            self.admissions.append((now, cost))
            self.outcome[ident] = "admitted"
            return "admitted"
        if max_wait is not None and self.due_after(now, cost) - now > max_wait:
            self.lim.counters.timed_out += 1
            self.outcome[ident] = "timed_out"
            return "timed_out"
        self.queue.append((ident, cost))
        self.outcome[ident] = "waiting"
        return "queued"

    def poll(self, now: int) -> None:
        while self.queue and self.fits(now, self.queue[0][1]):
            ident, cost = self.queue.pop(0)
            self.granted[ident] = (cost, self.admit(now, cost), now)
            self.outcome[ident] = "granted"

    def take(self, ident: int) -> bool:
        if self.outcome.get(ident) != "granted":
            return False
        cost, _, at = self.granted.pop(ident)
        self.lim.counters.admit(cost)
        self.admissions.append((at, cost))
        self.outcome[ident] = "consumed"
        return True

    def withdraw(self, ident: int, now: int, timed_out: bool) -> str:
        stand = self.outcome[ident]
        if stand == "waiting":
            self.queue = [q for q in self.queue if q[0] != ident]
            what = "removed"
        elif stand == "granted":
            cost, record, at = self.granted.pop(ident)
            self.give_back(now, cost, record, at)
            what = "gave_back"
        else:
            return "ended"
        self.outcome[ident] = "withdrawn"
        if timed_out:
            self.lim.counters.timed_out += 1
        else:
            self.lim.counters.cancelled += 1
        self.poll(now)
        return what

    def give_back(self, now: int, cost: int, record: int, at: int) -> None:
        if isinstance(self.lim, GcraModel):
            increment = cost * self.lim.T
            exact = self.lim.tat == record or record - increment >= now
            back = increment if exact else max(0, increment - (now - at))
            self.lim.tat -= min(back, self.lim.tat)
            return
        # The grant's units at its timestamp leave the log (entries of one instant are one).
        left = cost
        log = self.lim.log
        for i, (ts, c) in enumerate(log):
            if ts == record and left:
                take = min(c, left)
                log[i] = (ts, c - take)
                left -= take
        # (or it left the window already: nothing holds it)

    def status(self, ident: int, now: int) -> tuple[str, int]:
        stand = self.outcome[ident]
        if stand == "granted":
            return "granted", 0
        if stand != "waiting":
            return "ended", 0
        if self.queue[0][0] != ident:
            return "queued", 0
        cost = self.queue[0][1]
        if isinstance(self.lim, GcraModel):
            due = max(max(self.lim.tat, now) + cost * self.lim.T - self.lim.capacity_ns, now)
        else:
            due = self.lim.earliest_fit(now, cost)
        return "head", due - now


class RateQueueMachine(RuleBasedStateMachine):
    tickets = Bundle("tickets")

    def __init__(self) -> None:
        super().__init__()
        self.clock = adm.testing.ManualClock()
        self.kind = ""
        self.handles: dict[int, Any] = {}
        self.next_id = 0
        self.woken: list[int] = []
        self.lim: Any = None
        self.model: QueueModel | None = None

    @precondition(lambda self: self.lim is None)
    @rule(kind=st.sampled_from(["bucket", "window"]), burst=st.integers(1, 4))
    def create(self, kind: str, burst: int) -> None:
        self.kind = kind
        if kind == "bucket":
            self.lim = adm.TokenBucket(rate=1, per=1.0, burst=burst, clock=self.clock)
            self.model = QueueModel(GcraModel(1, 1.0, burst))
        else:
            self.lim = adm.SlidingWindow(burst, 2.0, clock=self.clock)
            self.model = QueueModel(WindowModel(burst, 2 * S))

    @property
    def capacity(self) -> int:
        lim = self.model.lim if self.model is not None else None
        return lim.burst if isinstance(lim, GcraModel) else lim.limit if lim is not None else 0

    @property
    def now(self) -> int:
        return int(self.clock.now_ns())

    @precondition(lambda self: self.lim is not None)
    @rule(target=tickets, cost=st.integers(1, 2), timeout=st.sampled_from([None, None, 0, 1, 3]))
    def enqueue(self, cost: int, timeout: int | None) -> object:
        assert self.model is not None
        if cost > self.capacity:
            return multiple()  # covered by the capacity tests
        if timeout is not None and not self.model.is_bucket:
            timeout = None  # the window's deadline check is a lower bound past one window
        ident = self.next_id
        self.next_id += 1
        want = self.model.enqueue(ident, self.now, cost, None if timeout is None else timeout * S)
        waker = functools.partial(self.woken.append, ident)
        if want == "timed_out":
            try:
                self.lim._enqueue(cost, timeout, waker)
            except adm.AcquireTimeout:
                return multiple()
            raise AssertionError("expected an AcquireTimeout")
        ticket = self.lim._enqueue(cost, timeout, waker)
        if want == "admitted":
            assert ticket is None
            return multiple()
        assert ticket is not None
        self.handles[ident] = ticket
        return ident

    @precondition(lambda self: self.lim is not None)
    @rule(seconds=st.sampled_from([0.0, 0.25, 0.5, 1.0, 2.0]))
    def time_passes_and_the_head_polls(self, seconds: float) -> None:
        assert self.model is not None
        self.clock.advance(seconds)
        self.lim._poll()
        self.model.poll(self.now)

    @precondition(lambda self: self.lim is not None)
    @rule(cost=st.integers(1, 2))
    def try_acquire(self, cost: int) -> None:
        assert self.model is not None
        if cost > self.capacity:
            return  # covered by the capacity tests
        want = not self.model.queue and self.model.fits(self.now, cost)
        if want:
            self.model.admit(self.now, cost)
            self.model.lim.counters.admit(cost)
            self.model.admissions.append((self.now, cost))
        else:
            self.model.lim.counters.rejected += 1
        assert self.lim.try_acquire(cost) is want

    @rule(ident=tickets)
    def take(self, ident: int) -> None:
        assert self.model is not None
        want = self.model.take(ident)
        assert self.lim._consume(self.handles[ident]) is want

    @rule(ident=tickets, timed_out=st.booleans())
    def withdraw(self, ident: int, timed_out: bool) -> None:
        assert self.model is not None
        want = self.model.withdraw(ident, self.now, timed_out)
        assert self.lim._withdraw(self.handles[ident], timed_out) == want

    @invariant()
    def stands_match(self) -> None:
        if self.model is None:
            return
        for ident, ticket in self.handles.items():
            stand, due_in = self.lim._status(ticket)
            want, want_due = self.model.status(ident, self.now)
            assert stand == want, f"ticket {ident}"
            assert round(due_in * 1e9) == want_due

    @invariant()
    def counters_match(self) -> None:
        if self.model is None:
            return
        assert self.lim._counters() == self.model.lim.counters.as_tuple()
        assert self.lim.waiting == len(self.model.queue)

    @invariant()
    def the_limit_holds_over_every_interval(self) -> None:
        """What was used never exceeds the limit: a bucket's burst plus one unit per T over
        any interval, a window's limit in any window (grants given up do not count)."""
        if self.model is None:
            return
        lim = self.model.lim
        used = sorted(self.model.admissions)
        for i, (start, _) in enumerate(used):
            total = 0
            for when, cost in used[i:]:
                total += cost
                if isinstance(lim, GcraModel):
                    assert total * lim.T <= lim.capacity_ns + (when - start), used
                elif when - start < lim.window_ns:
                    assert total <= lim.limit, used

    @invariant()
    def decisions_match(self) -> None:
        if self.model is None or self.model.queue:
            return
        # Nobody waits: peek is the limiter's own decision, as the plain models say.
        got = self.lim.peek(1)
        want = self.model.lim.peek(self.now, 1)
        assert got.allowed == want.allowed
        assert round(got.retry_after * 1e9) == want.retry_after_ns


RateQueueMachine.TestCase.settings = settings(
    RateQueueMachine.TestCase.settings, stateful_step_count=60
)
TestRateQueueMachine = RateQueueMachine.TestCase
