"""trio's synchronization tests, ported to `admission.Semaphore` under trio.

Source: python-trio/trio, ``src/trio/_tests/test_sync.py`` at commit
60d0c2f84854ec6ef74995663dcdce3296840485 (v0.34.0 + 3). Ported: ``test_Semaphore``,
``test_Semaphore_bounded``, ``test_CapacityLimiter_inf``, ``test_CapacityLimiter_memleak_548``
and the three generic lock tests with the ``Semaphore(1)`` and ``CapacityLimiter(1)``
factories (both are ``adm.Semaphore(1)``, so one parameter). Not ported, not applicable:
``test_Event``, ``test_Condition`` (no such primitives); ``test_Lock_and_StrictFIFOLock``,
``test_lock_acquire_unowned_lock``, ``test_lock_multiple_acquire``, ``test_lock_handover``
(lock ownership: the owner task, errors on re-acquiring or releasing a lock one does not own,
the parking-lot breaker; admission's permits belong to no task); ``test_CapacityLimiter``,
``test_CapacityLimiter_change_total_tokens``, ``test_CapacityLimiter_zero_limit_tokens``
(built on borrower identity: ``acquire_on_behalf_of``, ``statistics().borrowers``, the
RuntimeError for a task borrowing twice; admission counts permits, not borrowers); the
generic tests' ``Lock``, ``StrictFIFOLock`` and ``ChannelLock*`` factories.

Translation (API names only; every assertion is upstream's):

- ``Semaphore(v)`` -> ``adm.Semaphore(v)``; a trio semaphore that the test releases above
  its initial value ``v`` (trio's are unbounded by default) -> ``held(m, value=v)``, an
  ``adm.Semaphore(m)`` with ``m - v`` permits taken (see ``external_support.py``);
  ``max_value`` -> ``limit``; ``CapacityLimiter(n)`` -> ``adm.Semaphore(n)``,
  ``total_tokens`` -> ``limit``.
- ``s.value`` -> ``s.available``; ``statistics().tasks_waiting`` / ``_pending_borrowers`` ->
  ``waiting``.
- ``acquire_nowait()`` raises ``WouldBlock`` where ``try_acquire()`` returns False:
  ``acquire_nowait()`` -> ``assert s.try_acquire()``, and
  ``with pytest.raises(WouldBlock): s.acquire_nowait()`` -> ``assert not s.try_acquire()``.
- ``nursery.start_soon(s.acquire)`` -> ``start_soon(acquire, s)``: start_soon takes an async
  function, and admission's ``acquire`` returns a native awaitable.
- Error messages name admission's argument: ``initial value must be >= 0`` ->
  ``limit must be ...``.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
from external_support import held
from trio.testing import assert_checkpoints, wait_all_tasks_blocked

import admission as adm

pytestmark = pytest.mark.anyio

README_BOUNDED = (
    "README, What you get, Semaphore: 'releasing more than held raises': every admission "
    "semaphore is bounded by its limit (trio's Semaphore has max_value=None by default)"
)
README_LIMIT = (
    "README, Configuration: a concurrency limit is 'an integer from 1 to 1073741823' "
    "(Semaphore docstring: TypeError/ValueError otherwise): no infinite limit, no value 0"
)
README_NO_INITIAL_VALUE = (
    "README, What you get: `Semaphore(limit, name=None)`: a semaphore starts with all of "
    "its limit free; there is no initial value apart from the bound to refuse"
)


@pytest.fixture
def anyio_backend() -> Any:
    return "trio"


async def acquire(s: adm.Semaphore) -> None:
    await s.acquire()


@pytest.mark.parametrize(
    "unbounded",
    [
        pytest.param(
            True,
            id="as-upstream",
            marks=pytest.mark.xfail(raises=AssertionError, reason=README_BOUNDED, strict=True),
        ),
        pytest.param(False, id="bounded"),
    ],
)
async def test_Semaphore(unbounded: bool) -> None:
    # "bounded": the same test with its one assertion of unboundedness (max_value is None)
    # replaced by admission's documented bound, so that the rest of it runs.
    with pytest.raises(TypeError):
        adm.Semaphore(1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^limit must be "):
        adm.Semaphore(-1)
    s = held(2, value=1)  # Semaphore(1), released once above its initial value below
    repr(s)  # smoke test
    assert s.available == 1
    if unbounded:
        assert s.limit is None  # type: ignore[comparison-overlap]
    else:
        assert s.limit == 2
    s.release()
    assert s.available == 2
    assert s.waiting == 0
    assert s.try_acquire()
    assert s.available == 1
    with assert_checkpoints():
        await s.acquire()
    assert s.available == 0
    assert not s.try_acquire()

    s.release()
    assert s.available == 1
    with assert_checkpoints():
        async with s:
            assert s.available == 0
    assert s.available == 1
    assert s.try_acquire()

    record = []

    async def do_acquire(s: adm.Semaphore) -> None:
        record.append("started")
        await s.acquire()
        record.append("finished")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(do_acquire, s)
        await wait_all_tasks_blocked()
        assert record == ["started"]
        assert s.available == 0
        s.release()
        # Fairness:
        assert s.available == 0
        assert not s.try_acquire()
    assert record == ["started", "finished"]


@pytest.mark.xfail(raises=TypeError, reason=README_NO_INITIAL_VALUE, strict=True)
def test_Semaphore_bounded() -> None:
    with pytest.raises(TypeError):
        adm.Semaphore(limit=1.0)  # type: ignore[arg-type]  # Semaphore(1, max_value=1.0)
    with pytest.raises(ValueError, match=r"^max_values must be >= initial_value$"):
        adm.Semaphore(1, value=2)  # type: ignore[call-arg]  # Semaphore(2, max_value=1)
    bs = adm.Semaphore(1)  # Semaphore(1, max_value=1)
    assert bs.limit == 1
    repr(bs)  # smoke test
    with pytest.raises(ValueError, match=r"^semaphore released too many times$"):
        bs.release()
    assert bs.available == 1
    assert bs.try_acquire()
    assert bs.available == 0
    bs.release()
    assert bs.available == 1


@pytest.mark.xfail(raises=TypeError, reason=README_LIMIT, strict=True)
async def test_CapacityLimiter_inf() -> None:
    from math import inf

    c = adm.Semaphore(inf)  # type: ignore[arg-type]
    repr(c)  # smoke test
    assert c.limit == inf
    assert c.in_use == 0
    assert c.available == inf
    with pytest.raises(RuntimeError):
        c.release()
    assert c.in_use == 0
    assert c.try_acquire()
    assert c.in_use == 1
    assert c.available == inf


# regression test for issue #548
async def test_CapacityLimiter_memleak_548() -> None:
    limiter = adm.Semaphore(limit=1)
    await limiter.acquire()

    async with trio.open_nursery() as n:
        n.start_soon(acquire, limiter)
        await wait_all_tasks_blocked()  # give it a chance to run the task
        n.cancel_scope.cancel()

    # if this is 1, the acquire call (despite being killed) is still there in the task, and will
    # leak memory all the while the limiter is active
    assert limiter.waiting == 0


def semaphore_1() -> adm.Semaphore:
    return adm.Semaphore(1)


generic_lock_test = pytest.mark.parametrize(
    "lock_factory",
    [semaphore_1],
    ids=["Semaphore(1)"],  # also CapacityLimiter(1)
)


# Spawn a bunch of workers that take a lock and then yield; make sure that
# only one worker is ever in the critical section at a time.
@generic_lock_test
async def test_generic_lock_exclusion(lock_factory: Any) -> None:
    LOOPS = 10
    WORKERS = 5
    in_critical_section = False
    acquires = 0

    async def worker(lock_like: adm.Semaphore) -> None:
        nonlocal in_critical_section, acquires
        for _ in range(LOOPS):
            async with lock_like:
                acquires += 1
                assert not in_critical_section
                in_critical_section = True
                await trio.lowlevel.checkpoint()
                await trio.lowlevel.checkpoint()
                assert in_critical_section
                in_critical_section = False

    async with trio.open_nursery() as nursery:
        lock_like = lock_factory()
        for _ in range(WORKERS):
            nursery.start_soon(worker, lock_like)
    assert not in_critical_section
    assert acquires == LOOPS * WORKERS


# Several workers queue on the same lock; make sure they each get it, in
# order.
@generic_lock_test
async def test_generic_lock_fifo_fairness(lock_factory: Any) -> None:
    initial_order = []
    record = []
    LOOPS = 5

    async def loopy(name: int, lock_like: adm.Semaphore) -> None:
        # Record the order each task was initially scheduled in
        initial_order.append(name)
        for _ in range(LOOPS):
            async with lock_like:
                record.append(name)

    lock_like = lock_factory()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(loopy, 1, lock_like)
        nursery.start_soon(loopy, 2, lock_like)
        nursery.start_soon(loopy, 3, lock_like)
    # The first three could be in any order due to scheduling randomness,
    # but after that they should repeat in the same order
    for i in range(LOOPS):
        assert record[3 * i : 3 * (i + 1)] == initial_order


@generic_lock_test
async def test_generic_lock_acquire_nowait_blocks_acquire(lock_factory: Any) -> None:
    lock_like = lock_factory()

    record = []

    async def lock_taker() -> None:
        record.append("started")
        async with lock_like:
            pass
        record.append("finished")

    async with trio.open_nursery() as nursery:
        assert lock_like.try_acquire()
        nursery.start_soon(lock_taker)
        await wait_all_tasks_blocked()
        assert record == ["started"]
        lock_like.release()
