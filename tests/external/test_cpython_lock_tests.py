"""CPython's threading semaphore tests, ported to `admission.Semaphore`'s thread API.

Source: python/cpython, ``Lib/test/lock_tests.py`` at tag v3.13.0 (read from the CPython
3.13.0 installation's ``test`` package): ``BaseSemaphoreTests``, ``SemaphoreTests`` and
``BoundedSemaphoreTests`` (``Lib/test/test_threading.py`` runs them with
``threading.Semaphore`` and ``threading.BoundedSemaphore``). Both map to ``adm.Semaphore``,
so the ``BaseSemaphoreTests`` run once. The ``Bunch`` helper is upstream's, with
``test.support``'s retry loops written out (``SHORT_TIMEOUT`` 30 s) and ``threading.Thread``
for ``_thread.start_new_thread``. Not ported: both ``test_repr`` (they check the standard
library's repr, ``<threading.Semaphore at ...: value=3>``; admission's is
``Semaphore(3, in_use=0, waiting=0)``).

Translation (API names only; every assertion is upstream's):

- ``semtype(value)`` -> ``adm.Semaphore(value)``; the keyword ``value=`` -> ``limit=``;
  ``semtype()`` -> ``adm.Semaphore(1)`` (admission's limit has no default), except in
  ``test_default_value``, whose subject is that default.
- ``sem.acquire()`` -> ``acquire_blocking()``, ``sem.acquire(timeout=t)`` ->
  ``acquire_blocking(1, t)``, ``sem.acquire(False)`` / ``acquire(blocking=False)`` ->
  ``try_acquire()``. threading's acquire returns True or False; admission's blocking acquire
  returns None and raises `AcquireTimeout` at the deadline: the ``acquire`` adapter below
  maps that back (True when admitted, False on `AcquireTimeout`).
- ``sem.release(n)`` is the same call in both.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import admission as adm

if sys.version_info < (3, 11):
    from exceptiongroup import ExceptionGroup

SHORT_TIMEOUT = 30.0

README_LIMIT_REQUIRED = (
    "README, What you get: the constructor is `Semaphore(limit, name=None)`: the limit has "
    "no default (threading's value defaults to 1)"
)
README_BOUNDED = (
    "README, What you get, Semaphore: 'releasing more than held raises': every admission "
    "semaphore is bounded, there is no unbounded release (threading.Semaphore)"
)
README_TRY_ACQUIRE = (
    "README: `try_acquire(cost=1) -> bool`: admits now or refuses now; never blocks: it takes "
    "no timeout, so acquire(False, timeout=1.0) has no counterpart to refuse with ValueError "
    "(TypeError: unexpected keyword)"
)


def acquire(sem: adm.Semaphore, blocking: bool = True, timeout: float | None = None) -> bool:
    """threading's ``acquire(blocking, timeout)`` on admission's thread API."""
    if not blocking:
        return sem.try_acquire()
    try:
        sem.acquire_blocking(1, timeout)
    except adm.AcquireTimeout:
        return False
    return True


def sleeping_retry(timeout: float) -> Any:
    """``test.support.sleeping_retry``: yields until the caller breaks; fails at the timeout."""
    deadline = time.monotonic() + timeout
    delay = 0.010
    while True:
        yield
        if time.monotonic() > deadline:
            raise AssertionError(f"timeout ({timeout:.1f} seconds)")
        time.sleep(delay)
        delay = min(delay * 2, 1.0)


def wait_threads_blocked(nthread: int) -> None:
    # Arbitrary sleep to wait until N threads are blocked,
    # like waiting for a lock.
    time.sleep(0.010 * nthread)


class Bunch:
    """
    A bunch of threads.
    """

    def __init__(
        self, func: Callable[[], object], nthread: int, wait_before_exit: bool = False
    ) -> None:
        """
        Construct a bunch of `nthread` threads running the same function `func`.
        If `wait_before_exit` is True, the threads won't terminate until
        do_finish() is called.
        """
        self.func = func
        self.nthread = nthread
        self.started: list[int] = []
        self.finished: list[int] = []
        self.exceptions: list[BaseException] = []
        self._can_exit = not wait_before_exit
        self._threads: list[threading.Thread] = []

    def task(self) -> None:
        tid = threading.get_ident()
        self.started.append(tid)
        try:
            self.func()
        except BaseException as exc:
            self.exceptions.append(exc)
        finally:
            self.finished.append(tid)
            for _ in sleeping_retry(SHORT_TIMEOUT):
                if self._can_exit:
                    break

    def __enter__(self) -> Bunch:
        try:
            for _ in range(self.nthread):
                thread = threading.Thread(target=self.task, daemon=True)
                thread.start()
                self._threads.append(thread)
        except BaseException:
            self._can_exit = True
            raise

        for _ in sleeping_retry(SHORT_TIMEOUT):
            if len(self.started) >= self.nthread:
                break

        return self

    def __exit__(self, *exc_info: object) -> None:
        for _ in sleeping_retry(SHORT_TIMEOUT):
            if len(self.finished) >= self.nthread:
                break

        # Wait until threads completely exit (upstream: threading_helper.wait_threads_exit)
        for thread in self._threads:
            thread.join(SHORT_TIMEOUT)

        exceptions = self.exceptions
        if exceptions:
            raise ExceptionGroup(f"{self.func} threads raised exceptions", exceptions)  # type: ignore[arg-type]

    def do_finish(self) -> None:
        self._can_exit = True


def assert_timeout(actual: float, expected: float) -> None:
    # The waiting and/or time.monotonic() can be imprecise, which
    # is why comparing to the expected value would sometimes fail
    # (especially under Windows).
    assert actual >= expected * 0.6
    # Test nothing insane happened
    assert actual < expected * 10.0


# ---------------------------------------------------------------------------------------------
# BaseSemaphoreTests


def test_constructor() -> None:
    with pytest.raises(ValueError):  # noqa: PT011 (upstream: assertRaises(ValueError, ...))
        adm.Semaphore(limit=-1)
    with pytest.raises(ValueError):  # noqa: PT011
        adm.Semaphore(limit=-sys.maxsize)


def test_acquire() -> None:
    sem = adm.Semaphore(1)
    acquire(sem)
    sem.release()
    sem = adm.Semaphore(2)
    acquire(sem)
    acquire(sem)
    sem.release()
    sem.release()


def test_acquire_destroy() -> None:
    sem = adm.Semaphore(1)  # semtype(): the default value, 1
    acquire(sem)
    del sem


def test_acquire_contended() -> None:
    sem_value = 7
    sem = adm.Semaphore(sem_value)
    acquire(sem)

    sem_results = []
    results1 = []
    results2 = []
    phase_num = 0

    def func() -> None:
        sem_results.append(acquire(sem))
        results1.append(phase_num)

        sem_results.append(acquire(sem))
        results2.append(phase_num)

    def wait_count(count: int) -> None:
        for _ in sleeping_retry(SHORT_TIMEOUT):
            if len(results1) + len(results2) >= count:
                break

    N = 10
    with Bunch(func, N):
        # Phase 0
        count1 = sem_value - 1
        wait_count(count1)
        assert results1 + results2 == [0] * count1

        # Phase 1
        phase_num = 1
        for _ in range(sem_value):
            sem.release()
        count2 = sem_value
        wait_count(count1 + count2)
        assert sorted(results1 + results2) == [0] * count1 + [1] * count2

        # Phase 2
        phase_num = 2
        count3 = sem_value - 1
        for _ in range(count3):
            sem.release()
        wait_count(count1 + count2 + count3)
        assert sorted(results1 + results2) == [0] * count1 + [1] * count2 + [2] * count3
        # The semaphore is still locked
        assert not acquire(sem, False)

        # Final release, to let the last thread finish
        count4 = 1
        sem.release()

    assert sem_results == [True] * (count1 + count2 + count3 + count4)


def test_multirelease() -> None:
    sem_value = 7
    sem = adm.Semaphore(sem_value)
    acquire(sem)

    results1 = []
    results2 = []
    phase_num = 0

    def func() -> None:
        acquire(sem)
        results1.append(phase_num)

        acquire(sem)
        results2.append(phase_num)

    def wait_count(count: int) -> None:
        for _ in sleeping_retry(SHORT_TIMEOUT):
            if len(results1) + len(results2) >= count:
                break

    with Bunch(func, 10):
        # Phase 0
        count1 = sem_value - 1
        wait_count(count1)
        assert results1 + results2 == [0] * count1

        # Phase 1
        phase_num = 1
        count2 = sem_value
        sem.release(count2)
        wait_count(count1 + count2)
        assert sorted(results1 + results2) == [0] * count1 + [1] * count2

        # Phase 2
        phase_num = 2
        count3 = sem_value - 1
        sem.release(count3)
        wait_count(count1 + count2 + count3)
        assert sorted(results1 + results2) == [0] * count1 + [1] * count2 + [2] * count3
        # The semaphore is still locked
        assert not acquire(sem, False)

        # Final release, to let the last thread finish
        sem.release()


def test_try_acquire() -> None:
    sem = adm.Semaphore(2)
    assert acquire(sem, False)
    assert acquire(sem, False)
    assert not acquire(sem, False)
    sem.release()
    assert acquire(sem, False)


def test_try_acquire_contended() -> None:
    sem = adm.Semaphore(4)
    acquire(sem)
    results = []

    def f() -> None:
        results.append(acquire(sem, False))
        results.append(acquire(sem, False))

    with Bunch(f, 5):
        pass
    # There can be a thread switch between acquiring the semaphore and
    # appending the result, therefore results will not necessarily be
    # ordered.
    assert sorted(results) == [False] * 7 + [True] * 3


@pytest.mark.xfail(raises=TypeError, reason=README_TRY_ACQUIRE, strict=True)
def test_acquire_timeout() -> None:
    sem = adm.Semaphore(2)
    with pytest.raises(ValueError):  # noqa: PT011 (upstream: acquire(False, timeout=1.0))
        sem.try_acquire(timeout=1.0)  # type: ignore[call-arg]
    assert acquire(sem, timeout=0.005)
    assert acquire(sem, timeout=0.005)
    assert not acquire(sem, timeout=0.005)
    sem.release()
    assert acquire(sem, timeout=0.005)
    t = time.monotonic()
    assert not acquire(sem, timeout=0.5)
    dt = time.monotonic() - t
    assert_timeout(dt, 0.5)


@pytest.mark.xfail(raises=TypeError, reason=README_LIMIT_REQUIRED, strict=True)
def test_default_value() -> None:
    # The default initial value is 1.
    sem = adm.Semaphore()  # type: ignore[call-arg]
    acquire(sem)

    def f() -> None:
        acquire(sem)
        sem.release()

    with Bunch(f, 1) as bunch:
        # Thread blocked on sem.acquire()
        wait_threads_blocked(1)
        assert not bunch.finished

        # Thread unblocked
        sem.release()


def test_with() -> None:
    sem = adm.Semaphore(2)

    def _with(err: type[BaseException] | None = None) -> None:
        with sem:
            assert acquire(sem, False)
            sem.release()
            with sem:
                assert not acquire(sem, False)
                if err:
                    raise err

    _with()
    assert acquire(sem, False)
    sem.release()
    with pytest.raises(TypeError):
        _with(TypeError)
    assert acquire(sem, False)
    sem.release()


# ---------------------------------------------------------------------------------------------
# SemaphoreTests (unbounded) and BoundedSemaphoreTests


@pytest.mark.xfail(raises=ValueError, reason=README_BOUNDED, strict=True)
def test_semaphore_release_unacquired() -> None:
    # Unbounded releases are allowed and increment the semaphore's value
    sem = adm.Semaphore(1)
    sem.release()
    acquire(sem)
    acquire(sem)
    sem.release()


def test_bounded_semaphore_release_unacquired() -> None:
    # Cannot go past the initial value
    sem = adm.Semaphore(1)  # semtype(): the default value, 1
    with pytest.raises(ValueError):  # noqa: PT011 (upstream: assertRaises(ValueError, ...))
        sem.release()
    acquire(sem)
    sem.release()
    with pytest.raises(ValueError):  # noqa: PT011
        sem.release()
