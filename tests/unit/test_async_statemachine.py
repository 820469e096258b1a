"""A hypothesis state machine over an async Semaphore: acquire / release / cancel / timeout /
resize / close, checked step by step against a small FIFO model.

The machine drives a private asyncio event loop whose clock it sets by hand, so timeouts expire
exactly when a rule advances the time. After each rule the loop runs until every woken task has
run, then the invariants are checked:

- the semaphore's ``in_use``, ``waiting``, ``limit`` and counters equal the model's;
- never more than ``limit`` held by grants made after the last resize (a lowered limit never
  revokes permits held, so ``in_use`` may stay above it until releases bring it down);
- ``available + in_use == limit`` whenever ``in_use <= limit``;
- FIFO: no waiter is granted while one that queued before it still waits, and the waiters
  granted are exactly those the FIFO model grants;
- ``waiting`` equals the number of waiter tasks still pending;
- counters add up: admitted + rejected + timed_out + cancelled == attempts decided so far.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import Any

from hypothesis import event
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from support import ManualTimeLoop

import admission as adm


@dataclass(eq=False)
class Waiter:
    id: int
    n: int
    seq: int | None = None  # position in the queue order, if it ever queued
    deadline: float | None = None
    task: asyncio.Task[None] | None = None
    # "granted", "timed_out", "closed", "too_large", "cancelled", "refused_closed",
    # "refused_capacity", or None while the real task has not finished.
    result: str | None = None
    expected: str | None = None  # what the model says; None while waiting
    extra: dict[str, Any] = field(default_factory=dict)


class SemaphoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = ManualTimeLoop()
        self.ids = itertools.count()
        self.seqs = itertools.count()
        self.s: adm.Semaphore | None = None
        # The model.
        self.limit = 0
        self.in_use = 0
        self.closed = False
        self.queue: list[Waiter] = []  # FIFO
        self.held: list[Waiter] = []  # granted (by the model), not yet released
        self.all: list[Waiter] = []
        self.counts = {"admitted": 0, "rejected": 0, "timed_out": 0, "cancelled": 0}
        self.attempts = 0  # requests that got (or will get) one counted outcome
        self.ceiling = 0  # in_use right after a resize below it; 0 once back under the limit

    # -- driving the real semaphore ------------------------------------------------------

    @property
    def sem(self) -> adm.Semaphore:
        assert self.s is not None
        return self.s

    def drain(self) -> None:
        """Runs the loop until every task that was woken has run (no time passes)."""
        for _ in range(6):
            self.loop.run_until_complete(asyncio.sleep(0))

    async def waiter_task(self, w: Waiter, timeout: float | None) -> None:
        try:
            await self.sem.acquire(w.n, timeout=timeout)
        except adm.AcquireTimeout:
            w.result = "timed_out"
        except adm.Closed:
            w.result = "closed" if w.seq is not None else "refused_closed"
        except adm.CapacityError:
            w.result = "too_large" if w.seq is not None else "refused_capacity"
        except asyncio.CancelledError:
            w.result = "cancelled"
            raise
        else:
            w.result = "granted"

    # -- the model -------------------------------------------------------------------------

    def model_grant(self) -> None:
        while self.queue and not self.closed and self.in_use + self.queue[0].n <= self.limit:
            w = self.queue.pop(0)
            self.in_use += w.n
            self.counts["admitted"] += 1
            w.expected = "granted"
            self.held.append(w)

    def model_release(self, w: Waiter) -> None:
        self.held.remove(w)
        self.in_use -= w.n
        self.model_grant()

    def model_withdraw(self, w: Waiter, outcome: str) -> None:
        self.queue.remove(w)
        self.counts[outcome] += 1
        w.expected = outcome
        self.model_grant()

    def new_waiter(self, n: int, timeout: float | None) -> Waiter:
        w = Waiter(id=next(self.ids), n=n)
        self.all.append(w)
        self.attempts += 1  # refusals by an error count too (issue 11, case 9)
        if self.closed:
            w.expected = "refused_closed"
            self.counts["rejected"] += 1
        elif n > self.limit:
            w.expected = "refused_capacity"
            self.counts["rejected"] += 1
        else:
            if not self.queue and self.in_use + n <= self.limit:
                self.in_use += n
                self.counts["admitted"] += 1
                w.expected = "granted"
                self.held.append(w)
            else:
                w.seq = next(self.seqs)
                if timeout is not None:
                    w.deadline = self.loop.now + timeout
                self.queue.append(w)
        w.task = self.loop.create_task(self.waiter_task(w, timeout))
        return w

    def expire(self) -> None:
        """Timeouts due now, in deadline order (as the loop fires them)."""
        due = sorted(
            (w for w in self.queue if w.deadline is not None and w.deadline <= self.loop.now),
            key=lambda w: w.deadline or 0.0,
        )
        for w in due:
            if w in self.queue:
                self.model_withdraw(w, "timed_out")
            else:
                event("a waiter was granted in the instant its timeout fired")

    # -- rules -------------------------------------------------------------------------------

    @initialize(limit=st.integers(1, 5))
    def create(self, limit: int) -> None:
        self.s = adm.Semaphore(limit, name="machine")
        self.limit = limit

    @rule(n=st.integers(1, 6))
    def acquire(self, n: int) -> None:
        self.new_waiter(n, None)
        self.drain()

    @rule(n=st.integers(1, 6), seconds=st.integers(0, 3))
    def acquire_with_timeout(self, n: int, seconds: int) -> None:
        # A unique fraction keeps deadlines distinct (the loop's order for equal timers is
        # unspecified); 0 s times out on the next loop iteration if it has to queue.
        fraction = 0 if seconds == 0 else (next(self.ids) % 900 + 1) / 1000
        self.new_waiter(n, seconds + fraction)
        if seconds == 0:
            self.expire()
        self.drain()

    @rule(seconds=st.integers(1, 3))
    def advance_time(self, seconds: int) -> None:
        self.loop.now += seconds
        self.expire()
        self.drain()

    @precondition(lambda self: self.held)
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        w = data.draw(st.sampled_from(self.held))
        self.sem.release(w.n)
        self.model_release(w)
        self.drain()

    @precondition(lambda self: self.queue)
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        w = data.draw(st.sampled_from(self.queue))
        assert w.task is not None
        w.task.cancel()
        self.model_withdraw(w, "cancelled")
        self.drain()

    @precondition(lambda self: self.held and self.queue)
    @rule(data=st.data())
    def release_then_cancel_at_once(self, data: st.DataObject) -> None:
        # The permit may be handed to the waiter in the very instant it is cancelled: it must
        # then be passed on, never lost.
        holder = data.draw(st.sampled_from(self.held))
        w = data.draw(st.sampled_from(self.queue))
        assert w.task is not None
        self.sem.release(holder.n)
        w.task.cancel()
        self.model_release(holder)
        if w in self.held:  # granted by that release: its task passes the permits on
            event("a permit was granted in the instant of cancellation")
            w.expected = "cancelled"
            # It never took the grant: counted as cancelled, not admitted (issue 11, case 6).
            self.counts["admitted"] -= 1
            self.counts["cancelled"] += 1
            self.model_release(w)
        else:
            self.model_withdraw(w, "cancelled")
        self.drain()

    @rule(limit=st.integers(1, 6))
    def resize(self, limit: int) -> None:
        self.sem.limit = limit
        self.limit = limit
        for w in [w for w in self.queue if w.n > limit]:
            self.queue.remove(w)
            self.counts["rejected"] += 1
            w.expected = "too_large"
        self.model_grant()
        self.ceiling = self.in_use if self.in_use > limit else 0
        if self.ceiling:
            event("resized below in_use")
        self.drain()

    @precondition(lambda self: not self.closed)
    @rule()
    def close(self) -> None:
        self.sem.close()
        self.closed = True
        for w in self.queue:
            self.counts["rejected"] += 1
            w.expected = "closed"
        self.queue.clear()
        self.drain()

    # -- invariants --------------------------------------------------------------------------

    @invariant()
    def matches_the_model(self) -> None:
        if self.s is None:
            return
        s = self.s
        assert s.limit == self.limit
        assert s.closed == self.closed
        assert s.in_use == self.in_use, "permits lost or duplicated"
        assert s.in_use == sum(w.n for w in self.held)
        assert s.waiting == len(self.queue)
        for w in self.all:
            assert w.result == w.expected, f"waiter {w.id} (n={w.n}): {w.result} != {w.expected}"

    @invariant()
    def waiting_counts_the_pending_waiter_tasks(self) -> None:
        if self.s is None:
            return
        pending = [w for w in self.all if w.task is not None and not w.task.done()]
        assert self.s.waiting == len(pending)

    @invariant()
    def never_more_than_the_limit(self) -> None:
        if self.s is None:
            return
        s = self.s
        if s.in_use <= s.limit:
            self.ceiling = 0  # from here on, no grant may take it above the limit
            assert s.available + s.in_use == s.limit
        else:
            assert s.available == 0
            assert self.ceiling, "in_use above the limit without a resize below it"
            assert s.in_use <= self.ceiling, "a grant made after the resize broke the limit"

    @invariant()
    def fifo(self) -> None:
        queued = [w for w in self.all if w.seq is not None]
        granted = [w.seq for w in queued if w.result == "granted"]
        still_waiting = [w.seq for w in queued if w.result is None]
        if granted and still_waiting:
            assert min(still_waiting) > max(granted), "a later waiter was granted first"

    @invariant()
    def counters_add_up(self) -> None:
        if self.s is None:
            return
        stats = self.s.stats()
        counts = {
            "admitted": stats.admitted,
            "rejected": stats.rejected,
            "timed_out": stats.timed_out,
            "cancelled": stats.cancelled,
        }
        assert counts == self.counts
        assert stats.attempts == self.attempts - len(self.queue)
        assert stats.high_water >= max(
            (w.n for w in self.all if w.expected == "granted"), default=0
        )

    def teardown(self) -> None:
        try:
            for w in self.all:
                if w.task is not None and not w.task.done():
                    w.task.cancel()
            self.drain()
            assert all(w.task is None or w.task.done() for w in self.all)
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        finally:
            self.loop.close()


TestSemaphoreMachine = SemaphoreMachine.TestCase
