"""Reservations settled afterwards (issue 15), against the reference model, with waiters.

The rate queue's state machine (`test_rate_queue_machine.RateQueueMachine`: arrivals,
withdrawals from anywhere, polls as time passes, immediate attempts) gains reservations, made
at once or from a queued grant, and settled at any real cost while others wait. The model is
the rule written plainly:

- settled lower, the unused part goes back by the rule of a grant given up before use (exact
  when nothing was admitted since or the bucket still owed more than the time since; else
  less that time; a window's entry loses it exactly), and then the heads that fit are
  granted: a refund goes to the waiters first, never past them;
- settled higher, the overage is charged at the settling time as a debt (beyond the burst
  if need be), refused never, admitting nobody;
- ``admitted_cost`` becomes the settled cost; the admission count stays.

And the provider's signals, while others wait and reservations are open:

- ``pause(seconds)`` / ``pause_until(deadline)``: a token bucket is empty until then and
  refills at its rate from there (``tat >= until + burst·T - T``); a sliding window admits
  nothing before then. The model admits nobody before a pause's end (it asserts so), not
  even a request of no cost, nor after a grant given back during the pause (a bucket's
  give-back stops at the pause's floor), and the waiters keep their places (only the head
  is granted, in order);
- ``sync(remaining, reset_after)``: the bucket never holds more than ``remaining``, nor is
  it full before the reset (``tat >= now + burst·T - remaining·T``, ``>= now + reset``);
  the window holds the provider's used part it did not know of until the reset. A sync
  never adds capacity: checked on the limiter itself, before and after, at one instant.

Every invariant of the base machine holds throughout: the stands and due times of the
waiters, the counters, the limit over every interval (reservations count at their settled
cost, debts consume capacity but are not admissions), the decisions when nobody waits.
"""

from __future__ import annotations

from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, multiple, precondition, rule
from reference import NS, GcraModel, ModelDecision, WindowModel
from test_rate_queue_machine import QueueModel, RateQueueMachine

from admission.reserve import Reservation


def held(decision: Any, cost: int) -> int:
    """What a `peek(cost)` says the limiter holds now."""
    return int(decision.remaining) + (cost if decision.allowed else 0)


class PausedWindow(WindowModel):
    """The window model with a pause: nothing fits before ``not_before``."""

    not_before: int = 0

    def earliest_fit(self, now: int, cost: int) -> int:
        return super().earliest_fit(max(now, self.not_before), cost)

    def peek(self, now: int, cost: int) -> ModelDecision:
        decision = super().peek(now, cost)
        if not decision.allowed or now >= self.not_before:
            return decision
        # Paused: refused, as a request that does not fit (the log unchanged).
        live = [ts for ts, c in self.log if c > 0 and ts > now - self.window_ns]
        reset = max((ts + self.window_ns - now for ts in live), default=0)
        used = self.used(now)
        return ModelDecision(False, self.limit - used, self.earliest_fit(now, cost) - now, reset)


class PausedQueue(QueueModel):
    """The queue model over a limiter that may be paused; it admits nobody before
    ``paused_until`` (every pause's end so far)."""

    paused_until = 0

    def fits(self, now: int, cost: int) -> bool:
        # Nothing fits before the pause's end, whatever its cost (a bucket's tat alone would
        # let a request of no cost through a pause's last emission interval).
        return now >= self.paused_until and super().fits(now, cost)

    def due_after(self, now: int, cost: int) -> int:
        return max(super().due_after(now, cost), self.paused_until)

    def admit(self, now: int, cost: int) -> int:
        assert now >= self.paused_until, "admitted before the end of a pause"
        return super().admit(now, cost)

    def give_back(self, now: int, cost: int, record: int, at: int) -> None:
        lim = self.lim
        before = lim.tat if isinstance(lim, GcraModel) else 0
        super().give_back(now, cost, record, at)
        if isinstance(lim, GcraModel) and self.paused_until:
            # Never below the pause's floor: what comes back during a pause waits for its end.
            floor = self.paused_until + lim.capacity_ns - lim.T
            lim.tat = max(lim.tat, min(floor, before))


class ReserveMachine(RateQueueMachine):
    reservations = Bundle("reservations")

    def __init__(self) -> None:
        super().__init__()
        # ident -> (reservation, cost, record, at) of each reservation not settled yet.
        self.open: dict[int, tuple[Reservation, int, int, int]] = {}

    @precondition(lambda self: self.lim is None)
    @rule(kind=st.sampled_from(["bucket", "window"]), burst=st.integers(1, 4))
    def create(self, kind: str, burst: int) -> None:
        RateQueueMachine.create(self, kind, burst)
        assert self.model is not None
        if kind == "window":
            self.model = PausedQueue(PausedWindow(burst, 2 * NS))
        else:
            self.model = PausedQueue(self.model.lim)

    def _pause_model(self, until: int) -> None:
        assert isinstance(self.model, PausedQueue)
        now, lim = self.now, self.model.lim
        if until <= now:
            return  # (a pause that is over changes nothing)
        self.model.paused_until = max(self.model.paused_until, until)
        if isinstance(lim, GcraModel):
            # Empty until then, the first token due then, refilling at the rate after.
            lim.tat = max(lim.tat, until + lim.capacity_ns - lim.T)
        else:
            assert isinstance(lim, PausedWindow)
            lim.not_before = max(lim.not_before, until)

    @precondition(lambda self: self.lim is not None)
    @rule(seconds=st.sampled_from([0.0, 0.5, 1.0, 2.5, 5.0]))
    def pause(self, seconds: float) -> None:
        self._pause_model(self.now + round(seconds * NS))
        self.lim.pause(seconds)

    @precondition(lambda self: self.lim is not None)
    @rule(offset=st.sampled_from([-1.0, 0.0, 0.75, 3.0]))
    def pause_until(self, offset: float) -> None:
        """A deadline on the limiter's clock (quarter seconds: exact in binary)."""
        deadline = max(0.0, self.clock.now() + offset)  # (a time: never below zero)
        self._pause_model(round(deadline * NS))
        self.lim.pause_until(deadline)

    @precondition(lambda self: self.lim is not None)
    @rule(remaining=st.integers(0, 5), reset=st.sampled_from([None, 0.0, 0.5, 1.0, 3.0]))
    def sync(self, remaining: int, reset: float | None) -> None:
        assert self.model is not None
        now, lim = self.now, self.model.lim
        reset_ns = None if reset is None else round(reset * NS)
        if isinstance(lim, GcraModel):
            floor = max(0, now + lim.capacity_ns - remaining * lim.T)
            lim.tat = max(lim.tat, floor, 0 if reset_ns is None else now + reset_ns)
        else:
            lim._prune(now)
            unseen = max(0, lim.limit - sum(c for _, c in lim.log)) - remaining
            if unseen > 0:
                leaves_in = lim.window_ns if reset_ns is None else min(reset_ns, lim.window_ns)
                lim.log.append((min(max(0, now + leaves_in - lim.window_ns), now), unseen))
        costs = range(1, self.capacity + 1)
        before = [self.lim.peek(cost) for cost in costs]
        self.lim.sync(remaining, reset_after=reset)
        after = [self.lim.peek(cost) for cost in costs]
        # Never more than before, whatever the provider says: nothing held now that was not
        # (a decision's remaining is what is left after it if allowed, else what is held),
        # and no cost fits sooner.
        for cost, was, now_is in zip(costs, before, after, strict=True):
            assert held(now_is, cost) <= held(was, cost)
            assert now_is.retry_after >= was.retry_after
            assert was.allowed or not now_is.allowed

    def _charge_model(self, now: int, cost: int) -> None:
        assert self.model is not None
        lim = self.model.lim
        if isinstance(lim, GcraModel):
            lim.tat = max(lim.tat, now) + cost * lim.T
        else:
            lim.log.append((now, cost))

    @precondition(lambda self: self.lim is not None)
    @rule(target=reservations, cost=st.integers(0, 3))
    def reserve_now(self, cost: int) -> Any:
        assert self.model is not None
        if cost > self.capacity or self.model.queue or not self.model.fits(self.now, cost):
            return multiple()  # it would wait: the waiting is the base machine's
        record = self.model.admit(self.now, cost)
        self.model.lim.counters.admit(cost)
        self.model.admissions.append((self.now, cost))
        reservation = self.lim.reserve(cost).acquire_blocking()
        assert reservation.reserved == (cost,)
        ident = self.next_id
        self.next_id += 1
        self.open[ident] = (reservation, cost, record, self.now)
        return ident

    @rule(target=reservations, ident=RateQueueMachine.tickets)
    def reserve_from_a_grant(self, ident: int) -> Any:
        """A reservation that waited: its grant is taken, and settled later by its record."""
        assert self.model is not None
        granted = self.model.granted.get(ident)
        if not self.model.take(ident):
            assert self.lim._consume(self.handles[ident]) is False
            return multiple()
        assert granted is not None
        cost, record, at = granted
        ticket = self.handles[ident]
        assert self.lim._consume(ticket) is True
        grant = ticket._grant
        assert grant is not None
        self.open[ident] = (Reservation([(self.lim, cost, grant)], 0), cost, record, at)
        return ident

    @rule(ident=reservations, actual=st.integers(0, 6))
    def settle(self, ident: int, actual: int) -> None:
        assert self.model is not None
        entry = self.open.pop(ident, None)
        if entry is None:
            return  # settled already (a second settle is refused: the unit tests)
        reservation, cost, record, at = entry
        now = self.now
        if actual < cost:
            self.model.give_back(now, cost - actual, record, at)
            self.model.poll(now)
            # It counts at its settled cost over the intervals (the refund rule keeps the
            # bound as if it had asked for that much).
            self.model.admissions.remove((at, cost))
            self.model.admissions.append((at, actual))
        elif actual > cost:
            self._charge_model(now, actual - cost)
        self.model.lim.counters.admitted_cost += actual - cost
        reservation.settle(actual)
        assert reservation.settled == (actual,)


ReserveMachine.TestCase.settings = settings(
    ReserveMachine.TestCase.settings, stateful_step_count=60
)
TestReserveMachine = ReserveMachine.TestCase
