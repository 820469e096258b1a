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

Every invariant of the base machine holds throughout: the stands and due times of the
waiters, the counters, the limit over every interval (reservations count at their settled
cost, debts consume capacity but are not admissions), the decisions when nobody waits.
"""

from __future__ import annotations

from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, multiple, precondition, rule
from reference import GcraModel
from test_rate_queue_machine import RateQueueMachine

from admission.reserve import Reservation


class ReserveMachine(RateQueueMachine):
    reservations = Bundle("reservations")

    def __init__(self) -> None:
        super().__init__()
        # ident -> (reservation, cost, record, at) of each reservation not settled yet.
        self.open: dict[int, tuple[Reservation, int, int, int]] = {}

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
