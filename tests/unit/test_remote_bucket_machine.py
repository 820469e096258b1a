"""A token bucket in a network store against a reference model (hypothesis state machine).

The store is `MemoryStore` and its server clock is the event loop's, moved by hand (the
loop never waits for real time), so every decision is deterministic: admissions now,
waiters charged for their turn and woken at it, waiters cancelled before their turn (the
charge given back only when no later charge was made; one kept for that reason given back
once the later ones are), time passing. After every step, the bucket's TAT (as the store
decides with it: once passed, any value is now), the limiter's counters and its waiting
count must be what the model says.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule
from support import ManualTimeLoop

import admission as adm
from admission.stores import MemoryStore

INTERVAL_US = 100_000  # rate 10/s
BURST = 3


@dataclass(eq=False)
class Waiter:
    cost: int
    tat_us: int  # the TAT its charge left (its identity for a give-back)
    due_us: int
    task: asyncio.Task[None]
    state: str = "waiting"  # "admitted", "cancelled"


class RemoteBucketMachine(RuleBasedStateMachine):
    waiters = Bundle("waiters")

    def __init__(self) -> None:
        super().__init__()
        self.now_us = 1_000_000_000  # integers: the model's arithmetic is exact
        self.loop = ManualTimeLoop(now=self.now_us / 1_000_000)
        self.store = MemoryStore(clock=self.loop.time)
        self.bucket = adm.TokenBucket(rate=10, per=1, burst=BURST, name="m", store=self.store)
        # The model.
        self.tat_us: int | None = None
        self.pending: list[Waiter] = []
        self.kept: dict[int, int] = {}  # cancelled, not given back: TAT -> cost
        self.counts = {"admitted": 0, "admitted_cost": 0, "timed_out": 0, "cancelled": 0}

    def teardown(self) -> None:
        self.loop.close_cancelling()

    def settle(self) -> None:
        self.loop.settle()

    def decide(self, cost: int, max_wait_us: int) -> tuple[bool, int]:
        """The model's GCRA: (charged, wait in µs)."""
        now = self.now_us
        tat = max(self.tat_us if self.tat_us is not None else now, now)
        new = tat + cost * INTERVAL_US
        wait = new - BURST * INTERVAL_US - now
        if wait <= 0 or max_wait_us < 0 or wait <= max_wait_us:
            self.tat_us = new
            return True, max(wait, 0)
        return False, wait

    @rule(cost=st.integers(1, BURST))
    def acquire_now(self, cost: int) -> None:
        charged, _ = self.decide(cost, 0)
        try:
            self.loop.run_until_complete(self.bucket.acquire(cost, timeout=0))
            admitted = True
        except adm.AcquireTimeout:
            admitted = False
        assert admitted == charged
        if charged:
            self.counts["admitted"] += 1
            self.counts["admitted_cost"] += cost
        else:
            self.counts["timed_out"] += 1

    @rule(target=waiters, cost=st.integers(1, BURST), timeout_ms=st.sampled_from([None, 150, 400]))
    def start_waiter(self, cost: int, timeout_ms: int | None) -> Waiter | None:
        max_wait = -1 if timeout_ms is None else timeout_ms * 1000
        charged, wait = self.decide(cost, max_wait)
        task = self.loop.create_task(
            self.bucket.acquire(cost, timeout=None if timeout_ms is None else timeout_ms / 1000)
        )
        self.settle()
        if not charged:
            assert task.done()
            assert isinstance(task.exception(), adm.AcquireTimeout)
            self.counts["timed_out"] += 1
            return None
        if wait == 0:
            assert task.done()
            assert task.exception() is None
            self.counts["admitted"] += 1
            self.counts["admitted_cost"] += cost
            return None
        assert not task.done()
        assert self.tat_us is not None
        waiter = Waiter(cost, self.tat_us, self.now_us + wait, task)
        self.pending.append(waiter)
        return waiter

    @rule(waiter=waiters)
    def cancel(self, waiter: Waiter | None) -> None:
        if waiter is None or waiter.state != "waiting":
            return
        waiter.task.cancel()
        self.settle()
        assert waiter.task.cancelled()
        waiter.state = "cancelled"
        self.pending.remove(waiter)
        self.counts["cancelled"] += 1
        self.kept[waiter.tat_us] = waiter.cost
        # The last charge is undone, and so each one kept below it, down to the first
        # that is not (a live waiter's, an admitted one's).
        while self.tat_us in self.kept:
            self.tat_us -= self.kept.pop(self.tat_us) * INTERVAL_US

    @rule(ms=st.sampled_from([1, 50, 100, 250, 1000]))
    def advance(self, ms: int) -> None:
        self.now_us += ms * 1000
        self.loop.now = self.now_us / 1_000_000
        self.settle()
        for w in list(self.pending):
            if w.due_us <= self.now_us:
                assert w.task.done()
                assert w.task.exception() is None
                w.state = "admitted"
                self.pending.remove(w)
                self.counts["admitted"] += 1
                self.counts["admitted_cost"] += w.cost
            else:
                assert not w.task.done()

    @invariant()
    def agrees_with_the_model(self) -> None:
        def as_decided(tat_us: int | None) -> int:
            return self.now_us if tat_us is None else max(tat_us, self.now_us)

        assert as_decided(self.store.tat_us("m")) == as_decided(self.tat_us)
        stats = self.bucket.stats()
        got = {k: getattr(stats, k) for k in self.counts}
        assert got == self.counts
        assert self.bucket.waiting == len(self.pending)


RemoteBucketMachine.TestCase.settings = settings(
    max_examples=200, stateful_step_count=30, deadline=None
)
TestRemoteBucketMachine = RemoteBucketMachine.TestCase
