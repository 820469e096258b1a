"""The native reservation (issue 15, the client's hot path): `take_now` takes every limit at
once or none, `Reservation` settles in one call, and a transport host's `TokenTally` takes
and settles its reservation with its token counts. The rules themselves (FIFO give-backs,
debts, pauses' floors, counters) are `test_reserve.py`'s and `test_reserve_machine.py`'s;
these cover what the native calls add: all or nothing on every outcome, the checks, the
counts they keep.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import admission as adm
from admission import _native
from admission.reserve import Reservation, take_now


def counts(limiter: adm.TokenBucket | adm.SlidingWindow) -> tuple[int, int, int]:
    stats = limiter.stats()
    return stats.admitted, stats.admitted_cost, stats.rejected


@pytest.mark.parametrize("kind", ["bucket", "window"])
def test_take_now_takes_every_limit_or_none(kind: str) -> None:
    clock = adm.testing.ManualClock()
    rpm = adm.TokenBucket(rate=10, per=60.0, clock=clock)
    tokens: adm.TokenBucket | adm.SlidingWindow = (
        adm.TokenBucket(rate=100, per=60.0, clock=clock)
        if kind == "bucket"
        else adm.SlidingWindow(limit=100, window=60.0, clock=clock)
    )
    got = take_now((rpm, tokens), (1, 90), 1)
    assert isinstance(got, Reservation)
    assert got.reserved == (1, 90)
    assert counts(rpm) == (1, 1, 0)
    assert counts(tokens) == (1, 90, 0)
    # The second limit refuses: the first gives its request back, nothing is counted.
    assert take_now((rpm, tokens), (1, 11), 1) is None
    assert counts(rpm) == (1, 1, 0)
    assert counts(tokens) == (1, 90, 0)
    assert rpm.peek(9).allowed
    assert tokens.peek(10).allowed
    assert not tokens.peek(11).allowed


def test_take_now_gives_back_what_it_took_when_a_later_limit_raises() -> None:
    """A cost over a later limit's capacity raises CapacityError with nothing held (the
    Python `take_now` kept the first limit's cost taken)."""
    first, second = adm.TokenBucket(rate=5, per=60.0), adm.TokenBucket(rate=10, per=60.0)
    with pytest.raises(adm.CapacityError):
        take_now((first, second), (5, 11))
    assert first.peek(5).allowed
    assert counts(first) == (0, 0, 0)


def test_take_now_checks_its_arguments() -> None:
    b = adm.TokenBucket(rate=10, per=60.0)
    with pytest.raises(TypeError, match="TokenBucket or SlidingWindow"):
        take_now((b, object()), (1, 1))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="one entry per limiter"):
        take_now((b,), (1, 1))
    with pytest.raises(ValueError, match="primary"):
        take_now((b,), (1,), 1)
    with pytest.raises(ValueError, match="cost"):
        take_now((b,), (-1,))
    assert counts(b) == (0, 0, 0)
    assert b.peek(10).allowed


def test_a_reservation_of_grants_checks_its_parts() -> None:
    b = adm.TokenBucket(rate=10, per=60.0)
    with pytest.raises(TypeError, match="TokenBucket or SlidingWindow"):
        Reservation([("bucket", 1, (0, 0))], 0)  # type: ignore[list-item]
    with pytest.raises(ValueError, match="primary"):
        Reservation([(b, 1, (0, 0))], 1)
    with pytest.raises(ValueError, match="length 3"):
        Reservation([(b, 1)], 0)  # type: ignore[list-item]


def test_settle_refuses_a_cost_beyond_what_a_limiter_counts() -> None:
    b = adm.TokenBucket(rate=10, per=60.0)
    r = take_now((b,), (5,), 0)
    assert r is not None
    with pytest.raises(ValueError, match=r"at most 2\*\*64 - 1"):
        r.settle(1 << 64)
    with pytest.raises(ValueError, match=r"costs must be at most 2\*\*64 - 1"):
        r.settle(costs=[1 << 64])
    with pytest.raises(TypeError, match=r"costs must be an int, got float 1\.0"):
        r.settle(costs=[1.0])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="one entry per limiter"):
        r.settle(costs="5")  # type: ignore[arg-type]
    assert r.settled is None
    r.settle((1 << 64) - 1)  # a debt as large as a limiter counts: refused never
    assert r.settled == ((1 << 64) - 1,)
    assert not b.peek(1).allowed


def test_a_reservation_says_what_it_holds() -> None:
    rpm, tpm = adm.TokenBucket(rate=10, per=60.0), adm.TokenBucket(rate=100, per=60.0)
    one = take_now((tpm,), (7,), 0)
    both = take_now((rpm, tpm), (1, 20))
    assert one is not None
    assert both is not None
    assert repr(one) == "<Reservation reserved=(7,) settled=None>"
    both.refund()
    assert repr(both) == "<Reservation reserved=(1, 20) settled=(0, 0)>"
    with pytest.raises(TypeError, match="costs="):
        both.settle(3)
    with pytest.raises(RuntimeError, match=r"settled already at \(0, 0\)"):
        both.refund()
    assert counts(rpm) == (1, 0, 0)
    assert rpm.peek(10).allowed


def test_a_hosts_tally_takes_and_settles_its_reservation() -> None:
    rpm, tpm = adm.TokenBucket(rate=10, per=60.0), adm.TokenBucket(rate=100, per=60.0)
    tally = _native.TokenTally()
    r = tally.reserve_now(rpm, tpm, 80)
    assert r is not None
    assert r.reserved == (1, 80)
    assert tally.read() == (80, 0)
    # Refused: nothing taken, nothing counted reserved.
    assert tally.reserve_now(rpm, tpm, 21) is None
    assert tally.read() == (80, 0)
    assert counts(rpm) == (1, 1, 0)
    tally.settle_reservation(r, 30)
    assert r.settled == (1, 30)
    assert tally.read() == (80, 30)
    assert tpm.peek(70).allowed
    assert not tpm.peek(71).allowed
    # Unsettled (no usage in the answer): the estimate stands and is counted settled.
    kept = tally.reserve_now(None, tpm, 50)
    assert kept is not None
    assert kept.reserved == (50,)
    tally.settle_reservation(kept, None)
    assert kept.settled is None
    assert tally.read() == (130, 80)
    # A host with a request rate only: its reservation is the request; no tokens counted.
    requests_only = tally.reserve_now(rpm, None, 0)
    assert requests_only is not None
    assert requests_only.reserved == (1,)
    assert tally.read() == (130, 80)
    with pytest.raises(TypeError, match="costs="):
        tally.settle_reservation(requests_only, 5)


class _FailingTimeLoop(asyncio.SelectorEventLoop):
    """An asyncio loop whose clock fails from its ``ok``-th reading on: what a LoopClock
    reads. Each failure names its reading."""

    def __init__(self) -> None:
        super().__init__()
        self.ok: int | None = None
        self.reads = 0

    def time(self) -> float:
        if self.ok is not None:
            self.reads += 1
            if self.reads > self.ok:
                raise OSError(f"clock read {self.reads} failed")
        return super().time()


def _on_failing_loop(main: Any) -> Any:
    loop = _FailingTimeLoop()
    try:
        return loop.run_until_complete(main(loop))
    finally:
        loop.close()


def test_a_failed_take_raises_its_own_error_when_the_give_back_fails_too() -> None:
    """The second limit's clock fails (the take's error), then the first's while giving its
    part back: the take's error is raised, the give-back's noted on it (the give-back's used
    to replace it)."""
    first = adm.TokenBucket(rate=10, per=60.0, clock=adm.LoopClock())
    second = adm.TokenBucket(rate=10, per=60.0, clock=adm.LoopClock())

    async def main(loop: _FailingTimeLoop) -> None:
        loop.ok = 1  # the first take reads once; then every reading fails
        with pytest.raises(OSError, match="clock read 2 failed") as raised:
            take_now((first, second), (1, 1))
        loop.ok = None  # (the loop reads it too)
        assert loop.reads == 3
        assert "giving back" in str(getattr(raised.value, "__notes__", ""))
        assert "clock read 3 failed" in str(raised.value.__notes__)

    _on_failing_loop(main)


def test_a_settle_whose_clock_fails_says_what_stands() -> None:
    """Two limits settled; the second's clock fails: the first is settled, the second keeps
    its estimate, in the limiter and in ``settled`` (which said (2, 3) though the second
    limit still held 8)."""
    clock = adm.testing.ManualClock()
    requests = adm.TokenBucket(rate=10, per=60.0, clock=clock)
    tokens = adm.TokenBucket(rate=100, per=60.0, clock=adm.LoopClock())

    async def main(loop: _FailingTimeLoop) -> Reservation:
        got = take_now((requests, tokens), (3, 8))
        assert got is not None
        loop.ok = 0
        with pytest.raises(OSError, match="clock read 1 failed"):
            got.settle(costs=(2, 3))
        loop.ok = None  # (the loop reads it too)
        return got

    reservation = _on_failing_loop(main)
    assert reservation.settled == (2, 8)
    assert counts(requests) == (1, 2, 0)
    assert counts(tokens) == (1, 8, 0)
    with pytest.raises(RuntimeError, match=r"settled already at \(2, 8\)"):
        reservation.settle(costs=(1, 1))
