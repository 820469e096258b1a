"""`CircuitBreaker` against a reference model (hypothesis state machine).

Calls are permitted, ended (success, failure, slow, an ignored error) or given back in any
order, time jumps, an operator resets. The model is the specification written plainly:

- closed: every call is permitted; outcomes go into the last ``WINDOW`` calls; with at least
  ``min(MIN_CALLS, WINDOW)`` calls there and failures (or slow calls) at or above their rate,
  it opens for ``OPEN_FOR * 2**k`` (capped), ``k`` the failed probations since it last closed;
- open: refused with the time left; the first call at or after that time turns it half-open
  and is the first probe;
- half-open: at most ``PROBES`` probes out or succeeded; a failed probe reopens; when all have
  succeeded it closes (or reopens if the slow ones reach the slow rate); a probe given back
  frees its place;
- an outcome or give-back from an earlier state counts in the totals only.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import admission as adm
from admission.testing import ManualClock

WINDOW, MIN_CALLS, PROBES = 5, 3, 2
FAILURE_RATE, SLOW_RATE = 0.5, 0.6
OPEN_FOR, OPEN_FOR_MAX, SLOW = 10, 35, 4


@dataclass
class ModelPermit:
    gen: int
    probe: bool
    start: float


class BreakerModel:
    def __init__(self) -> None:
        self.state = "closed"
        self.gen = 0
        self.window: deque[tuple[bool, bool]] = deque(maxlen=WINDOW)
        self.until = 0.0
        self.reopened = 0
        self.out = self.done = self.slow_probes = 0
        self.counts = {k: 0 for k in ("permitted", "success", "failure", "slow", "rejected")}
        self.counts.update(released=0, opened=0)

    def trips(self, calls: int, failures: int, slow: int, min_calls: int) -> bool:
        return calls >= min_calls and (
            failures >= FAILURE_RATE * calls or slow >= SLOW_RATE * calls
        )

    def open(self, now: float) -> None:
        self.state = "open"
        self.gen += 1
        self.until = now + min(OPEN_FOR * 2**self.reopened, OPEN_FOR_MAX)
        self.window.clear()
        self.counts["opened"] += 1

    def acquire(self, now: float) -> ModelPermit | tuple[str, float]:
        if self.state == "open":
            if now < self.until:
                self.counts["rejected"] += 1
                return ("open", self.until - now)
            self.state, self.gen = "half_open", self.gen + 1
            self.out = self.done = self.slow_probes = 0
        if self.state == "half_open":
            if self.out + self.done >= PROBES:
                self.counts["rejected"] += 1
                return ("half_open", 0.0)
            self.out += 1
        self.counts["permitted"] += 1
        return ModelPermit(self.gen, self.state == "half_open", now)

    def end(self, p: ModelPermit, failed: bool, now: float) -> None:
        slow = now - p.start >= SLOW
        self.counts["failure" if failed else "slow" if slow else "success"] += 1
        if p.gen != self.gen:
            return
        if self.state == "closed" and not p.probe:
            self.window.append((failed, slow))
            calls = len(self.window)
            failures = sum(f for f, _ in self.window)
            slows = sum(s for _, s in self.window)
            if self.trips(calls, failures, slows, min(MIN_CALLS, WINDOW)):
                self.open(now)
        elif self.state == "half_open" and p.probe and self.out > 0:
            if failed:
                self.reopened += 1
                self.open(now)
                return
            self.out -= 1
            self.done += 1
            self.slow_probes += slow
            if self.done == PROBES:
                if self.trips(PROBES, 0, self.slow_probes, 1):
                    self.reopened += 1
                    self.open(now)
                else:
                    self.state, self.gen = "closed", self.gen + 1
                    self.window.clear()
                    self.reopened = 0

    def release(self, p: ModelPermit) -> None:
        self.counts["released"] += 1
        if p.probe and p.gen == self.gen and self.state == "half_open" and self.out > 0:
            self.out -= 1

    def reset(self) -> None:
        if self.state != "closed":
            self.state, self.gen = "closed", self.gen + 1
            self.window.clear()
            self.reopened = 0


class BreakerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock()
        self.breaker = adm.CircuitBreaker(
            "m",
            window=WINDOW,
            min_calls=MIN_CALLS,
            failure_rate=FAILURE_RATE,
            slow_call_rate=SLOW_RATE,
            slow_call_duration=SLOW,
            open_for=OPEN_FOR,
            open_for_max=OPEN_FOR_MAX,
            half_open_calls=PROBES,
            failure_on=(ConnectionError,),
            ignore=(LookupError,),
            clock=self.clock,
        )
        self.model = BreakerModel()
        self.now = 0.0
        self.calls: list[tuple[adm._native.BreakerCall, ModelPermit]] = []

    @rule()
    def acquire(self) -> None:
        expected = self.model.acquire(self.now)
        if isinstance(expected, tuple):
            with pytest.raises(adm.CircuitOpen) as refused:
                self.breaker._call()
            assert (refused.value.state, refused.value.retry_after) == expected
            return
        call = self.breaker._call()
        assert call.probe == expected.probe
        self.calls.append((call, expected))

    @precondition(lambda self: self.calls)
    @rule(
        index=st.integers(min_value=0),
        how=st.sampled_from(["success", "failure", "ignored", "release", "other_error"]),
    )
    def end(self, index: int, how: str) -> None:
        call, permit = self.calls.pop(index % len(self.calls))
        if how in ("ignored", "release"):
            if how == "ignored":
                call.end(KeyError("ignored"))
            else:
                call.release()
            self.model.release(permit)
            return
        exc = {"success": None, "failure": ConnectionError(), "other_error": ValueError()}[how]
        call.end(exc)
        self.model.end(permit, how == "failure", self.now)

    @rule(seconds=st.sampled_from([0, 1, 2, 4, 10, 25, 40]))
    def advance(self, seconds: int) -> None:
        self.clock.advance(seconds)
        self.now += seconds

    @rule()
    def reset(self) -> None:
        self.breaker.reset()
        self.model.reset()

    @invariant()
    def agrees(self) -> None:
        s = self.breaker.stats()
        m = self.model
        assert s.state == m.state
        if m.state == "half_open":
            assert (s.probes_in_flight, s.probes_succeeded) == (m.out, m.done)
        if m.state == "open":
            assert s.retry_after == max(0.0, m.until - self.now)
        if m.state == "closed":
            window = (len(m.window), sum(f for f, _ in m.window), sum(x for _, x in m.window))
            assert (s.window_calls, s.window_failures, s.window_slow) == window
        got = {k: getattr(s, k) for k in m.counts}
        assert got == m.counts
        # Every permit is in flight or ended exactly one way.
        assert s.permitted == s.success + s.failure + s.slow + s.released + len(self.calls)


TestBreakerMachine = BreakerMachine.TestCase
