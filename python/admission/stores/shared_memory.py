"""The shared-memory store: limiters shared by every process of one host.

`SharedMemory` names a segment, a file in ``/dev/shm``; each limiter in it is a slot holding
the same atomic words an in-process limiter keeps in its own memory (the GCRA word of a
`TokenBucket`; a semaphore's permit word, with its permits recorded as leases of the
processes holding them). A `KeyedTokenBucket`'s table of per-key GCRA words is a file of
its own next to the segment's (``admission.<name>.keys-*``), removed with it. Every
decision is one native call on those words, lock-free: no lock is ever held, so a process
killed at any point leaves nothing locked. Linux only.

This module owns the Python half of the store (naming, lifecycle, waiting, stats); it never
decides anything itself: the decisions are ``admission_core::shared``'s and
``admission_core::shared_keyed``'s.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, final

from admission import _backend, _native
from admission._validate import timeout_seconds
from admission.errors import AcquireTimeout, TooManyKeys
from admission.stats import KeyedStats, LimiterStats, SemaphoreStats, WaitHistogram

if TYPE_CHECKING:
    from admission.metrics import Family

if sys.platform == "linux":
    _Segment = _native.SharedSegment
    _Bucket = _native.SharedTokenBucket
    _Semaphore = _native.SharedSemaphore
    _KeyedBucket = _native.SharedKeyedTokenBucket
else:  # pragma: no cover - the extension has the store on Linux only

    class _Unsupported:
        def __new__(cls, *args: object, **kwargs: object) -> Any:
            raise OSError("admission's shared-memory store needs Linux (/dev/shm, futex, /proc)")

    _Segment = _Bucket = _Semaphore = _KeyedBucket = _Unsupported  # type: ignore[misc, assignment]

__all__ = [
    "SharedKeyedTokenBucket",
    "SharedLimiter",
    "SharedMemory",
    "SharedSemaphore",
    "SharedTokenBucket",
]

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,200}")

#: A waiting rate limiter's longest sleep between two looks at the shared word, and an async
#: semaphore waiter's: the bound on how late such a waiter notices room made by another
#: process (a thread waiting on a semaphore sleeps on a futex and is woken at once).
POLL_MAX = 0.01
_POLL_MIN = 0.0005


@dataclass(frozen=True, slots=True)
class SharedLimiter:
    """One limiter of a segment, as every process sees it (host-wide counters).

    ``kind`` is ``"TokenBucket"`` (``config``: ``rate``, ``per``, ``burst``),
    ``"Semaphore"`` (``config``: ``limit``) or ``"KeyedTokenBucket"`` (``config``: ``rate``,
    ``per``, ``burst``, ``max_keys``); ``in_use`` is a semaphore's permits held now, or a
    keyed bucket's keys whose bucket is not full; ``expired`` and ``refused_full`` are a
    keyed bucket's (see `admission.KeyedStats`).
    """

    kind: str
    name: str
    config: dict[str, float]
    admitted: int
    admitted_cost: int
    rejected: int
    timed_out: int
    cancelled: int
    in_use: int = 0
    expired: int = 0
    refused_full: int = 0


_FIELDS = {
    "TokenBucket": ("rate", "per", "burst"),
    "Semaphore": ("limit",),
    "KeyedTokenBucket": ("rate", "per", "burst", "max_keys"),
}
_KINDS = {
    "TokenBucket": "token_bucket",
    "Semaphore": "semaphore",
    "KeyedTokenBucket": "keyed_token_bucket",
}


class SharedMemory(_Segment):
    """A named shared-memory segment holding limiters shared by the processes of this host.

    >>> import admission as adm, uuid
    >>> store = adm.stores.SharedMemory(f"doc-{uuid.uuid4().hex}")
    >>> openai = adm.TokenBucket(rate=60, per=60, name="openai", store=store)
    >>> openai.try_acquire()
    True
    >>> db = adm.Semaphore(20, name="db", store=store)
    >>> with db:
    ...     db.in_use
    1
    >>> store.unlink()
    True

    Every process that opens the same store name and limiter name shares one limit. The
    segment is created on first use (file ``/dev/shm/admission.<name>``, permissions
    ``mode``, 0600 by default) with room for ``capacity`` limiters, fixed from then on; a
    limiter's slot is taken when it is first opened and kept until the segment is removed.

    Lifecycle: the segment outlives the processes (a restarted worker finds its limits as
    they were). Remove it with `unlink` when no process uses it any more (at deployment, or
    in the server's master process at exit); processes that still have it open keep using
    the old one, and the next open creates a new one.

    Opening a limiter with another configuration than the one in the segment (same name,
    another rate, burst or limit) raises `ValueError`; a segment made by an incompatible
    version of admission is refused with `RuntimeError`; a full one raises `RuntimeError`.

    The object pickles as its name and options, so it can be passed to spawned processes.
    """

    __slots__ = ("_directory", "_mode", "_name")
    _directory: str
    _mode: int
    _name: str

    def __new__(
        cls,
        name: str,
        *,
        capacity: int = 256,
        mode: int = 0o600,
        directory: str = "/dev/shm",
    ) -> SharedMemory:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ValueError(
                f"a shared-memory store's name is 1 to 200 letters, digits, '_', '.' or '-', "
                f"got {name!r}"
            )
        if isinstance(capacity, bool) or not isinstance(capacity, int):
            raise TypeError(f"capacity must be an int, got {capacity!r}")
        self = super().__new__(cls, os.path.join(directory, f"admission.{name}"), capacity, mode)
        self._name = name
        self._mode = mode
        self._directory = directory
        return self

    @property
    def name(self) -> str:
        """The store's name."""
        return self._name

    def unlink(self) -> bool:
        """Removes the segment's file and its keyed limiters' tables (False if the segment
        was already gone). Limiters open in any process keep working on the old segment; the
        next open creates a new one."""
        for table in self._table_paths():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(table)
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            return False
        return True

    def limiters(self) -> list[SharedLimiter]:
        """Every limiter in the segment with its host-wide counters: what one exporter per
        host reports (see `admission.metrics`), whichever process it runs in."""
        out = []
        for kind, name, fields, counts, in_use, (expired, full) in self._limiters():
            config = dict(zip(_FIELDS[kind], fields, strict=True))
            out.append(SharedLimiter(kind, name, config, *counts, in_use, expired, full))
        return out

    def export_metrics(self) -> Callable[[], None]:
        """Adds this segment's limiters to every metrics exporter of this process (see
        `admission.metrics.add_source`); returns the function that removes them.

        The figures are host-wide (read from the shared words), so call this in **one**
        process per host (the server's master, or a sidecar serving ``adm.metrics.serve``):
        then one exporter reports the whole host, and nothing is counted twice. Limiters in
        a store are never part of a process's own series (``admission_acquisitions`` and
        the rest), so the workers' exporters, if any, do not report them again.

        Families (labels ``store``, ``kind``, ``limiter``): ``admission_shared_acquisitions``
        (counter, label ``outcome``), ``admission_shared_admitted_cost`` (counter),
        ``admission_shared_permits_in_use`` and ``admission_shared_limit`` (gauges); for keyed
        buckets (one series per limiter, never per key) ``admission_shared_keys`` and
        ``admission_shared_max_keys`` (gauges) and ``admission_shared_keys_removed`` (counter,
        label ``reason``: ``expired``, a full bucket's slot reused; ``refused_full``, a new
        key refused for want of room).
        """
        from admission import metrics

        return metrics.add_source(self._families)

    def _families(self) -> list[Family]:
        from admission.metrics import Family, Sample

        limiters = self.limiters()

        def labels(s: SharedLimiter, **extra: str) -> dict[str, str]:
            return {"store": self._name, "kind": _KINDS[s.kind], "limiter": s.name, **extra}

        keyed = [s for s in limiters if s.kind == "KeyedTokenBucket"]

        outcomes = ("admitted", "rejected", "timeout", "cancelled")
        return [
            Family(
                "admission_shared_acquisitions",
                "counter",
                "Requests to limiters in shared memory, every process of the host, by outcome.",
                tuple(
                    Sample(labels(s, outcome=o), float(v))
                    for s in limiters
                    for o, v in zip(
                        outcomes, (s.admitted, s.rejected, s.timed_out, s.cancelled), strict=True
                    )
                ),
            ),
            Family(
                "admission_shared_admitted_cost",
                "counter",
                "Sum of the admitted costs of limiters in shared memory, every process.",
                tuple(Sample(labels(s), float(s.admitted_cost)) for s in limiters),
            ),
            Family(
                "admission_shared_permits_in_use",
                "gauge",
                "Permits of shared semaphores held now, by every process of the host.",
                tuple(Sample(labels(s), float(s.in_use)) for s in limiters if "limit" in s.config),
            ),
            Family(
                "admission_shared_keys",
                "gauge",
                "Keys of shared keyed buckets whose bucket is not full now, every process.",
                tuple(Sample(labels(s), float(s.in_use)) for s in keyed),
            ),
            Family(
                "admission_shared_max_keys",
                "gauge",
                "Keys a shared keyed bucket's table holds (max_keys, fixed at creation).",
                tuple(Sample(labels(s), s.config["max_keys"]) for s in keyed),
            ),
            Family(
                "admission_shared_keys_removed",
                "counter",
                "Shared keyed buckets: slots of full buckets reused (expired), new keys refused "
                "for want of room (refused_full).",
                tuple(
                    Sample(labels(s, reason=r), float(v))
                    for s in keyed
                    for r, v in (("expired", s.expired), ("refused_full", s.refused_full))
                ),
            ),
            Family(
                "admission_shared_limit",
                "gauge",
                "A shared semaphore's limit, or a shared token bucket's burst.",
                tuple(
                    Sample(labels(s), s.config.get("limit", s.config.get("burst", 0.0)))
                    for s in limiters
                ),
            ),
        ]

    def __reduce__(self) -> tuple[Any, ...]:
        options = {"capacity": self.capacity, "mode": self._mode, "directory": self._directory}
        return (_reopen, (self._name, options))

    def __repr__(self) -> str:
        return f"SharedMemory({self._name!r}, capacity={self.capacity})"


def _reopen(name: str, options: dict[str, Any]) -> SharedMemory:
    return SharedMemory(name, **options)


def _require(kind: str, store: object, name: str | None) -> str:
    if not isinstance(store, SharedMemory):
        raise TypeError(f"store must be an admission.stores store, got {store!r}")
    if name is None:
        raise ValueError(f"a {kind} in shared memory needs a name=: processes share it by name")
    return name


def _next_rate_try(
    decision: _native.Decision, deadline: float | None, timeout: float | None
) -> float:
    """A waiting rate limiter's sleep before its next try, from what its word says now;
    raises `AcquireTimeout` if the deadline will pass first."""
    needed = decision.retry_after
    if deadline is not None and time.monotonic() + needed > deadline:
        raise AcquireTimeout(timeout if timeout is not None else 0.0, needed)
    return min(max(needed, _POLL_MIN), POLL_MAX) if needed <= 0 else needed


class _Waiting:
    """The waiting of a shared limiter, for threads and async tasks: try, then sleep."""

    __slots__ = ()

    if TYPE_CHECKING:  # the native half's methods, and each class's own

        def _try_take(self, cost: int, /) -> bool: ...
        def _gave_up(self, timed_out: bool, /) -> None: ...
        def _next_try(self, cost: int, deadline: float | None, timeout: float | None) -> float:
            """Seconds to sleep before the next try; raises `AcquireTimeout` if the deadline
            will pass first."""

    def _acquire_blocking(self, cost: int, timeout: float | str | None) -> None:
        seconds = timeout_seconds(timeout)
        if self._try_take(cost):
            return
        deadline = None if seconds is None else time.monotonic() + seconds
        try:
            self._wait_blocking(cost, deadline, seconds)
        except AcquireTimeout:
            self._gave_up(True)
            raise
        except BaseException:
            self._gave_up(False)
            raise

    def _wait_blocking(self, cost: int, deadline: float | None, timeout: float | None) -> None:
        while not self._try_take(cost):
            time.sleep(self._next_try(cost, deadline, timeout))

    async def _acquire(self, cost: int, timeout: float | str | None) -> None:
        seconds = timeout_seconds(timeout)
        backend = _backend.current()
        if self._try_take(cost):
            await backend.admitted()
            return
        deadline = None if seconds is None else time.monotonic() + seconds
        try:
            while True:
                await backend.sleep(self._next_try(cost, deadline, seconds))
                if self._try_take(cost):
                    return
        except AcquireTimeout:
            self._gave_up(True)
            raise
        except BaseException:
            self._gave_up(False)
            raise


@final
class SharedTokenBucket(_Bucket):
    """A `TokenBucket` whose GCRA word lives in a `SharedMemory` segment: one limit for every
    process of the host. Made by ``adm.TokenBucket(..., name=..., store=store)``.

    ``try_acquire`` and ``peek`` are the in-process bucket's, on the shared word. A waiter
    (``acquire``, ``with``) takes its turn: its cost is charged at once, in the shared word,
    and it sleeps until the turn comes. Turns are served in the order they were taken, by
    every process (a large cost is never passed by smaller ones), and ``try_acquire`` refuses
    while a turn is pending (no barging). A waiter that gives up (cancelled, interrupted)
    takes its charge back if nobody took a turn after it; otherwise its turn passes unused,
    which admits less, never more; a process killed while waiting leaves the same.
    ``stats()`` gives the host-wide counters (no wait histogram).
    """

    __slots__ = ()

    def __new__(
        cls,
        store: SharedMemory,
        name: str | None,
        rate: float,
        per: float,
        burst: int | None = None,
    ) -> SharedTokenBucket:
        return super().__new__(cls, store, _require("TokenBucket", store, name), rate, per, burst)

    @property
    def waiting(self) -> int:
        """Always 0: a waiter's turn is a charge in the shared word, not a place in a queue."""
        return 0

    def _turn(self, cost: int, seconds: float | None) -> tuple[float, int]:
        """Charges ``cost`` for its turn: ``(seconds until it comes, its tat)``; raises
        `AcquireTimeout` at once, charging nothing, if it would come after ``seconds``."""
        turn = self._reserve(cost, seconds)
        if turn is None:
            self._gave_up(True)
            raise AcquireTimeout(seconds or 0.0, self.peek(cost).retry_after)
        return turn

    def acquire_blocking(self, cost: int = 1, timeout: float | str | None = None) -> None:
        """Waits in this thread for ``cost``'s turn; raises `AcquireTimeout` at once if that
        would take longer than ``timeout``."""
        wait, tat = self._turn(cost, timeout_seconds(timeout))
        if wait > 0:
            try:
                while wait > 0:
                    time.sleep(wait)
                    wait = self._until(tat)
            except BaseException:
                self._gave_back(tat, cost)
                raise
            self._commit(cost)

    async def acquire(self, cost: int = 1, timeout: float | str | None = None) -> None:
        """Waits in this task (asyncio or trio) for ``cost``'s turn; raises `AcquireTimeout`
        at once if that would take longer than ``timeout``."""
        seconds = timeout_seconds(timeout)
        backend = _backend.current()
        wait, tat = self._turn(cost, seconds)
        if wait == 0:
            await backend.admitted()
            return
        try:
            # The turn is on the host's clock; the framework's may be virtual (trio's
            # MockClock, a test loop's): go ahead only once the host says it has come.
            while wait > 0:
                await backend.sleep(wait)
                wait = self._until(tat)
        except BaseException:
            self._gave_back(tat, cost)
            raise
        self._commit(cost)

    def _gave_back(self, tat: int, cost: int) -> None:
        """A waiter that gave up: its charge back if nobody took a turn after it, counted."""
        self._untake(tat, cost)
        self._gave_up(False)

    def __enter__(self) -> None:
        self.acquire_blocking()

    def __exit__(self, *exc: object) -> None:
        pass

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc: object) -> None:
        pass

    def stats(self) -> LimiterStats:
        """Host-wide counters: every process's admissions and refusals (no wait histogram)."""
        admitted, admitted_cost, rejected, timed_out, cancelled = self._counters()
        return LimiterStats(self.name, admitted, admitted_cost, rejected, timed_out, cancelled, 0)

    def __repr__(self) -> str:
        return (
            f"TokenBucket(rate={self.rate!r}, per={self.per!r}, burst={self.burst}, "
            f"name={self.name!r}, store=shared memory)"
        )


@final
class SharedSemaphore(_Waiting, _Semaphore):
    """A `Semaphore` whose permits are leases in a `SharedMemory` segment: one limit for every
    process of the host. Made by ``adm.Semaphore(limit, name=..., store=store)``.

    Each permit held is recorded against the process holding it (pid and start time: a pid
    reused later is another process). When a process dies holding permits, the next process
    that finds no room gives them back (it looks at most every 10 ms). A thread waiting in
    ``with s:`` sleeps on a futex, woken by any process's release; an async waiter polls
    every ``POLL_MAX`` seconds at most. Waiters in different processes are not served in
    order. ``limit`` is fixed when the semaphore is created in the segment; permits are
    released by the process that took them (a forked child cannot release its parent's).
    """

    __slots__ = ()

    def __new__(cls, store: SharedMemory, name: str | None, limit: int) -> SharedSemaphore:
        return super().__new__(cls, store, _require("Semaphore", store, name), limit)

    def _next_try(self, cost: int, deadline: float | None, timeout: float | None) -> float:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AcquireTimeout(timeout if timeout is not None else 0.0)
            return min(left, POLL_MAX)
        return POLL_MAX

    def _wait_blocking(self, cost: int, deadline: float | None, timeout: float | None) -> None:
        left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        if _backend.in_event_loop_thread():
            raise RuntimeError(
                "a shared semaphore's acquire_blocking (or `with semaphore:`) would block the "
                "event loop running in this thread: use `await semaphore.acquire()`"
            )
        if not self._wait(cost, left):
            raise AcquireTimeout(timeout if timeout is not None else 0.0)

    @property
    def waiting(self) -> int:
        """Always 0: waiters in other processes are not counted."""
        return 0

    def acquire_blocking(self, n: int = 1, timeout: float | str | None = None) -> None:
        """Waits in this thread (asleep on the futex, without the GIL) until ``n`` permits
        are held; `AcquireTimeout` after ``timeout`` seconds."""
        self._acquire_blocking(n, timeout)

    async def acquire(self, n: int = 1, timeout: float | str | None = None) -> None:
        """Waits in this task (asyncio or trio) until ``n`` permits are held, polling at
        most every ``POLL_MAX`` seconds; `AcquireTimeout` after ``timeout`` seconds."""
        await self._acquire(n, timeout)

    def locked(self) -> bool:
        """Whether one more permit would have to wait."""
        return self.available == 0

    def __enter__(self) -> None:
        self.acquire_blocking()

    def __exit__(self, *exc: object) -> None:
        self.release()

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self.release()

    def stats(self) -> SemaphoreStats:
        """Host-wide gauges and counters (no wait histogram; ``waiting`` is 0)."""
        admitted, admitted_cost, rejected, timed_out, cancelled = self._counters()
        in_use = self.in_use
        return SemaphoreStats(
            name=self.name,
            limit=self.limit,
            in_use=in_use,
            available=max(self.limit - in_use, 0),
            waiting=0,
            high_water=self.high_water,
            admitted=admitted,
            admitted_cost=admitted_cost,
            rejected=rejected,
            timed_out=timed_out,
            cancelled=cancelled,
            wait=WaitHistogram.empty(),
        )

    def __repr__(self) -> str:
        return (
            f"Semaphore({self.limit}, name={self.name!r}, in_use={self.in_use}, "
            "store=shared memory)"
        )


class _OneKey(_Waiting):
    """The waiting of one key of a `SharedKeyedTokenBucket` (the shared waiting, keyed)."""

    __slots__ = ("_key", "_limiter", "_no_room")

    def __init__(self, limiter: SharedKeyedTokenBucket, key: str | bytes | int) -> None:
        self._limiter = limiter
        self._key = key
        self._no_room = False

    def _try_take(self, cost: int) -> bool:
        taken = self._limiter._try_take(self._key, cost)
        if taken < 0:
            # Counted natively (a refusal); the wait, if any, ends without counting again.
            self._no_room = True
            limiter = self._limiter
            raise TooManyKeys(
                f"shared KeyedTokenBucket {limiter.name!r} holds max_keys={limiter.max_keys} "
                f"keys whose buckets are not full (both of this key's sets are full): key "
                f"{self._key!r} refused"
            )
        return bool(taken)

    def _gave_up(self, timed_out: bool) -> None:
        if not self._no_room:
            self._limiter._gave_up(timed_out)

    def _next_try(self, cost: int, deadline: float | None, timeout: float | None) -> float:
        return _next_rate_try(self._limiter.peek(self._key, cost), deadline, timeout)


@final
class SharedKeyedTokenBucket(_KeyedBucket):
    """A `KeyedTokenBucket` whose table of per-key GCRA words lives in shared memory: one
    limit per key for every process of the host. Made by
    ``adm.KeyedTokenBucket(..., name=..., store=store, max_keys=...)``.

    >>> import admission as adm, uuid
    >>> store = adm.stores.SharedMemory(f"doc-{uuid.uuid4().hex}")
    >>> per_user = adm.KeyedTokenBucket(rate=10, burst=2, name="users", store=store,
    ...                                 max_keys=1000)
    >>> per_user.try_acquire("user:42"), per_user.try_acquire("user:42", 2)
    (True, False)
    >>> len(per_user), per_user.stats().admitted
    (1, 1)
    >>> store.unlink()
    True

    Each key behaves as its own `TokenBucket` (starting full), exactly, whichever process
    asks: a key's GCRA word is one slot of a table whose size is fixed when the limiter is
    created in the segment (64 bytes per ``max_keys``). A key whose bucket is full again is
    no different from a key never seen, so its slot goes to the next new key that needs it
    (``expired`` in `stats`): ``idle_ttl`` does not apply. A new key is refused only when
    the table holds no room for it: both of the two sets of 8 slots it may use hold keys
    whose buckets are not full (with ``max_keys`` such keys that is very rare; with more,
    more frequent). Then ``try_acquire`` answers ``False`` and ``acquire`` raises
    `admission.TooManyKeys` (counted in ``refused_full``); a bucket that is not full is
    never evicted, so no key is ever admitted beyond its limit.

    Waiting (``acquire``, ``with limiter(key):``) sleeps until the key's bucket says the
    request fits, then tries again, as `SharedTokenBucket` does: no queue across processes.
    ``stats()`` gives host-wide totals over every key (never one figure per key).
    """

    __slots__ = ()

    def __new__(
        cls,
        store: SharedMemory,
        name: str | None,
        rate: float,
        per: float,
        burst: int | None = None,
        max_keys: int = 1_000_000,
    ) -> SharedKeyedTokenBucket:
        name = _require("KeyedTokenBucket", store, name)
        return super().__new__(cls, store, name, rate, per, burst, max_keys)

    def waiting(self, key: str | bytes | int) -> int:
        """Always 0: waiters in other processes are not counted, nor kept in a queue."""
        return 0

    def acquire_blocking(
        self, key: str | bytes | int, cost: int = 1, timeout: float | str | None = None
    ) -> None:
        """Waits in this thread until ``cost`` is admitted for ``key``; raises `AcquireTimeout`
        at once if that would take longer than ``timeout``, `admission.TooManyKeys` if a new
        key finds no room."""
        _OneKey(self, key)._acquire_blocking(cost, timeout)

    async def acquire(
        self, key: str | bytes | int, cost: int = 1, timeout: float | str | None = None
    ) -> None:
        """Waits in this task (asyncio or trio) until ``cost`` is admitted for ``key``; see
        `acquire_blocking`."""
        await _OneKey(self, key)._acquire(cost, timeout)

    def __call__(self, key: str | bytes | int, cost: int = 1) -> _KeyHold:
        """``async with limiter(key):`` / ``with limiter(key):`` acquire ``cost`` for ``key``."""
        return _KeyHold(self, key, cost)

    def stats(self) -> KeyedStats:
        """Host-wide totals over every key, every process; see `admission.KeyedStats`
        (``expired``: slots of full buckets given to new keys; ``evicted`` is always 0)."""
        admitted, admitted_cost, rejected, timed_out, cancelled, expired, full = self._counters()
        return KeyedStats(
            name=self.name,
            keys=len(self),
            max_keys=self.max_keys,
            admitted=admitted,
            admitted_cost=admitted_cost,
            rejected=rejected,
            timed_out=timed_out,
            cancelled=cancelled,
            waiting=0,
            expired=expired,
            evicted=0,
            refused_full=full,
        )

    def __repr__(self) -> str:
        return (
            f"KeyedTokenBucket(rate={self.rate!r}, per={self.per!r}, burst={self.burst}, "
            f"max_keys={self.max_keys}, name={self.name!r}, store=shared memory)"
        )


class _KeyHold:
    """``limiter(key)``: a context manager (sync and async) acquiring for one key."""

    __slots__ = ("_cost", "_key", "_limiter")

    def __init__(self, limiter: SharedKeyedTokenBucket, key: str | bytes | int, cost: int) -> None:
        self._limiter = limiter
        self._key = key
        self._cost = cost

    def __enter__(self) -> None:
        self._limiter.acquire_blocking(self._key, self._cost)

    def __exit__(self, *exc: object) -> None:
        pass

    async def __aenter__(self) -> None:
        await self._limiter.acquire(self._key, self._cost)

    async def __aexit__(self, *exc: object) -> None:
        pass
