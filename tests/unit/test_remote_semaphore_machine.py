"""A semaphore in a network store against a reference model (hypothesis state machine).

`MemoryStore` on the event loop's clock, moved by hand. Waiters arrive (some with a
timeout), are cancelled, time out, are granted; holders release. Time moves in steps longer
than a waiter's longest pause between two requests to the store (`POLL_MAX`), until no room
is left or nobody waits. Checked after every step: never more than ``limit`` held (in the
store and here), never more than ``limit`` of the client's callers holding or queued in the
store (the rest wait at its gate), no room left while someone waits (no lost wake-up),
every fence greater than all before it, a waiter given up gone from the store's queue, and
the limiter's counters are the model's. (First come, first served is checked exactly by the
unit tests.)
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule
from support import ManualTimeLoop

import admission as adm
from admission.stores import Lease, MemoryStore
from admission.stores.remote import POLL_MAX

LIMIT = 2
STEP = POLL_MAX + 0.01


@dataclass(eq=False)
class Waiter:
    id: int
    task: asyncio.Task[Lease]
    deadline: float | None
    state: str = "waiting"  # "holding", "released", "cancelled", "timed_out"


class RemoteSemaphoreMachine(RuleBasedStateMachine):
    waiters = Bundle("waiters")

    def __init__(self) -> None:
        super().__init__()
        self.loop = ManualTimeLoop(now=1_000.0)
        self.store = MemoryStore(clock=lambda: self.loop.now)
        self.semaphore = adm.Semaphore(LIMIT, name="m", store=self.store, lease="30s")
        self.ids = itertools.count()
        # The model.
        self.queue: list[Waiter] = []
        self.holding: list[Waiter] = []
        self.fences: list[int] = []
        self.counts = {"admitted": 0, "timed_out": 0, "cancelled": 0}

    def teardown(self) -> None:
        self.loop.close_cancelling()

    def settle(self) -> None:
        self.loop.settle(8)

    def take_finished(self) -> None:
        """Moves the waiters whose task finished: granted ones to the holders (their fences
        larger than every earlier one), timed-out ones out."""
        granted = []
        for w in list(self.queue):
            if not w.task.done():
                continue
            self.queue.remove(w)
            if isinstance(w.task.exception(), adm.AcquireTimeout):
                assert w.deadline is not None
                assert self.loop.now >= w.deadline
                w.state = "timed_out"
                self.counts["timed_out"] += 1
            else:
                w.state = "holding"
                granted.append(w)
        for w in sorted(granted, key=lambda w: w.task.result().fence):
            fence = w.task.result().fence
            assert not self.fences or fence > self.fences[-1]
            self.fences.append(fence)
            self.holding.append(w)
            self.counts["admitted"] += 1

    @rule(target=waiters, timeout=st.sampled_from([None, None, 0.2]))
    def arrive(self, timeout: float | None) -> Waiter:
        room = LIMIT - len(self.holding)
        ahead = len(self.queue)
        task = self.loop.create_task(self.semaphore.acquire(timeout=timeout))
        self.settle()
        waiter = Waiter(next(self.ids), task, None if timeout is None else self.loop.now + timeout)
        self.queue.append(waiter)
        assert task.done() == (ahead < room)  # granted in its first round trip iff it fits
        self.take_finished()
        return waiter

    @rule(waiter=waiters)
    def release(self, waiter: Waiter) -> None:
        if waiter.state != "holding":
            return
        self.semaphore.release(waiter.task.result())
        self.settle()
        waiter.state = "released"
        self.holding.remove(waiter)
        self.take_finished()  # the next at the client's gate may be granted at once

    @rule(waiter=waiters)
    def cancel(self, waiter: Waiter) -> None:
        if waiter.state != "waiting":
            return
        waiter.task.cancel()
        self.settle()
        assert waiter.task.cancelled()
        waiter.state = "cancelled"
        self.queue.remove(waiter)
        self.counts["cancelled"] += 1
        self.take_finished()  # its place at the gate goes to the next, maybe granted at once

    @rule()
    def step(self) -> None:
        for _ in range(20):
            self.loop.now += STEP
            for _ in range(3):  # the sleeps end, each waiter asks again, the answers arrive
                self.settle()
            self.take_finished()
            if not self.queue or len(self.holding) == LIMIT:
                break
        assert not self.queue or len(self.holding) == LIMIT, "room left while waiters wait"

    @invariant()
    def agrees_with_the_model(self) -> None:
        assert self.semaphore.in_use == len(self.holding) <= LIMIT
        in_use, queued = self.loop.run_until_complete(self.semaphore.state())
        assert in_use == len(self.holding)
        assert queued <= len(self.queue)  # a newcomer is in the store's queue once it asked
        # The client's gate: no more of its callers hold or ask than the limit.
        assert in_use + queued <= LIMIT
        stats = self.semaphore.stats()
        assert {k: getattr(stats, k) for k in self.counts} == self.counts


RemoteSemaphoreMachine.TestCase.settings = settings(
    max_examples=50, stateful_step_count=30, deadline=None
)
TestRemoteSemaphoreMachine = RemoteSemaphoreMachine.TestCase
