"""Bounded concurrency: `Semaphore`, FIFO, resizable, closable, with full accounting."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, final, overload

from admission import _backend, _native, _registry
from admission._validate import blocking_timeout, timeout_seconds
from admission.errors import AcquireTimeout, CapacityError, Closed
from admission.stats import SemaphoreStats, WaitHistogram

if TYPE_CHECKING:
    from admission.stores import NetworkStore, SharedMemory, SharedSemaphore
    from admission.stores.remote import OnStoreError, RemoteSemaphore

__all__ = ["Semaphore"]


@final
class Semaphore(_native.Semaphore):
    """A counting semaphore of ``limit`` permits.

    - Lock-free permit accounting; waiting is strictly FIFO, multi-permit requests included
      (a large request is never starved by small ones; newcomers never barge past waiters).
    - ``limit`` can be changed at any time. Lowering it never revokes held permits: ``in_use``
      may exceed the new limit until releases bring it down.
    - ``close()`` wakes every waiter with `Closed`; held permits stay valid until released.
    - Releasing more permits than are held raises `ValueError`.

    >>> import admission as adm
    >>> s = adm.Semaphore(10, name="llm")
    >>> s.try_acquire(n=3)
    True
    >>> s.in_use, s.available
    (3, 7)
    >>> s.release(3)
    >>> with s:
    ...     s.in_use
    1

    ``locked()`` says whether acquiring one permit would have to wait (no permit free, or
    someone queued: newcomers never pass a waiter), as ``asyncio.Semaphore.locked()`` does:

    >>> one = adm.Semaphore(1)
    >>> one.locked()
    False
    >>> one.try_acquire()
    True
    >>> one.locked()
    True
    >>> one.release()

    In async code, ``async with s:`` and ``await s.acquire(n, timeout=...)``; when permits are
    free this completes without suspending and without creating a Task or Future (asyncio; on
    trio every acquisition is a checkpoint, as trio requires). ``acquire()`` takes nothing
    until it is awaited: a forgotten ``await`` holds no permit. A waiter that is cancelled
    leaves no trace; permits handed to it at that instant are passed on, and it counts as
    cancelled. ``with s:`` (or ``acquire_blocking``) that would have to wait in the thread of a
    running event loop raises `RuntimeError` rather than block the loop.

    ``store=adm.stores.SharedMemory(...)`` (with a ``name``) shares the semaphore with every
    process of the host that opens the same store: it returns an
    `admission.stores.SharedSemaphore` (same surface; permits are leases of their process).
    A network store (``adm.stores.Postgres``, ``adm.stores.Redis``) shares it with every
    process of every host: it returns an `admission.stores.RemoteSemaphore` (async only),
    whose permits are leases of ``lease`` (default "30s") renewed while held, with fencing
    tokens; ``on_store_error`` and ``instances`` as for `TokenBucket`.

    Raises:
        ValueError: ``limit`` outside ``1..MAX_PERMITS``.
    """

    __slots__ = ()

    @overload
    def __new__(cls, limit: int, *, name: str | None = None, store: None = None) -> Semaphore: ...

    @overload
    def __new__(  # type: ignore[misc]  # a store's semaphore is another class, same surface
        cls, limit: int, *, name: str, store: SharedMemory
    ) -> SharedSemaphore: ...

    @overload
    def __new__(  # type: ignore[misc]  # a store's semaphore is another class, same surface
        cls,
        limit: int,
        *,
        name: str,
        store: NetworkStore,
        lease: float | str = 30.0,
        on_store_error: OnStoreError = "closed",
        instances: int | None = None,
    ) -> RemoteSemaphore: ...

    def __new__(  # type: ignore[misc]  # see the overloads
        cls,
        limit: int,
        *,
        name: str | None = None,
        store: SharedMemory | NetworkStore | None = None,
        **network: Any,
    ) -> Semaphore | SharedSemaphore | RemoteSemaphore:
        if store is not None or network:
            from admission.stores import NetworkStore, SharedSemaphore
            from admission.stores.remote import RemoteSemaphore, network_options

            if isinstance(store, NetworkStore):
                options = network_options(
                    "Semaphore", network, "lease", "on_store_error", "instances"
                )
                return RemoteSemaphore(
                    store, name, limit, local=Semaphore, gate=Semaphore._unlisted, **options
                )
            network_options("Semaphore", network)  # none allowed without a network store
            return SharedSemaphore(store, name, limit)  # type: ignore[arg-type]
        semaphore = super().__new__(cls, limit, name=name)
        # Visible to metrics and alerts (a weak reference: it never keeps it alive). A
        # semaphore in a store is not: its figures are the host's, reported once per host
        # (`SharedMemory.export_metrics`).
        _registry.register(semaphore)
        return semaphore

    @classmethod
    def _unlisted(cls, limit: int) -> Semaphore:
        """One that metrics and alerts do not see: a network-store semaphore's gate, whose
        figures are that limiter's own (`admission.stores.remote.RemoteSemaphore`)."""
        return super().__new__(cls, limit)

    def acquire_blocking(self, n: int = 1, timeout: float | str | None = None) -> None:
        """Waits in this thread until ``n`` permits are held (FIFO).

        ``timeout`` is seconds or a duration string; ``None``, infinity or any time too long
        to wait for (beyond ``threading.TIMEOUT_MAX``) waits as long as it takes.

        Raises:
            AcquireTimeout: not admitted within ``timeout`` seconds.
            CapacityError: ``n`` exceeds the limit (now, or after a resize while waiting).
            Closed: the semaphore is closed, or was closed while waiting.
            RuntimeError: it would have to wait in the thread of a running event loop
                (asyncio or trio), which it would block: use ``await s.acquire()`` or
                ``async with s:`` there. Admission without waiting is allowed anywhere.
        """
        timeout = timeout_seconds(timeout)
        if self._try_take(n):
            return
        if _backend.in_event_loop_thread():
            self._reject()
            raise RuntimeError(
                "Semaphore.acquire_blocking (or `with semaphore:`) would block the event loop "
                "running in this thread: use `await semaphore.acquire()` or "
                "`async with semaphore:` in async code"
            )
        waker = _backend.ThreadWaker()
        ticket = self._enqueue(n, waker)
        if ticket is None:
            return
        try:
            woken = waker.wait(blocking_timeout(timeout))
        except BaseException:
            self._give_up(ticket)  # interrupted (KeyboardInterrupt, a signal handler's error)
            raise
        self._after_wait(ticket, woken, n, timeout)

    async def _acquire_slow(self, n: int, timeout: float | None) -> None:
        """``await acquire()`` / ``async with`` on trio, waiting or not.

        On asyncio (and uvloop) the native ``acquire`` never comes here: it admits at once,
        or returns a native waiter (the task blocks on it directly: no coroutine, no Future;
        the same waker contract as here, see `admission._backend`). trio has no futures, so
        its task is parked until the waker runs; and every call is a checkpoint, as trio
        requires of an async call: an already-cancelled caller raises ``Cancelled`` and
        takes nothing, and one admitted at once still lets the other tasks run (a task that
        re-acquires in a loop does not starve the queue).
        """
        backend = _backend.current()  # (a clear error outside any loop)
        if await backend.first_step(lambda: self._try_take(n)):
            return
        waker = backend.waker()
        ticket = self._enqueue(n, waker)
        if ticket is None:  # freed meanwhile (by another thread): admitted
            await backend.admitted()
            return
        try:
            woken = await waker.wait(timeout)
        except BaseException:
            self._give_up(ticket)  # cancelled
            raise
        self._after_wait(ticket, woken, n, timeout)

    def _give_up(self, ticket: _native.Ticket) -> None:
        """Leaves the queue; permits handed over in the same instant are passed on."""
        if self._cancel(ticket) == "granted":
            self._pass_on(ticket)

    def _after_wait(
        self,
        ticket: _native.Ticket,
        woken: bool,
        n: int,
        timeout: float | None,
    ) -> None:
        """Ends a wait that was woken (or not: timed out) without an exception."""
        if not woken:
            outcome = self._cancel(ticket, timed_out=True)
            if outcome == "cancelled":
                raise AcquireTimeout(timeout if timeout is not None else 0.0)
            # Settled just as the timeout expired: granted (it is ours, keep it), or closed /
            # too large, which say more than a timeout would.
            self._check_outcome(ticket, outcome, n)
            return
        self._check_outcome(ticket, ticket.outcome, n)

    def _check_outcome(self, ticket: _native.Ticket, outcome: str, n: int) -> None:
        if outcome == "granted":
            self._commit(ticket)  # taken: now it counts as admitted
            return
        if outcome == "closed":
            raise Closed("the semaphore was closed while waiting")
        if outcome == "too_large":
            raise CapacityError(n, self.limit)
        raise RuntimeError(f"unexpected semaphore outcome {outcome!r}")  # pragma: no cover

    # `with s:` is native (`__enter__` takes a free permit without any Python code, and calls
    # `acquire_blocking(1)` only when it must wait; `__exit__` releases).

    def stats(self) -> SemaphoreStats:
        """Gauges (limit, in_use, available, waiting, high_water, oldest_wait), exact
        counters, and a histogram of how long admitted requests waited (timed natively from
        queueing to being granted; immediate admissions count as zero waits)."""
        admitted, admitted_cost, rejected, timed_out, cancelled = self._counters()
        return SemaphoreStats(
            name=self.name,
            limit=self.limit,
            in_use=self.in_use,
            available=self.available,
            waiting=self.waiting,
            high_water=self.high_water,
            admitted=admitted,
            admitted_cost=admitted_cost,
            rejected=rejected,
            timed_out=timed_out,
            cancelled=cancelled,
            oldest_wait=self._oldest_wait(),
            wait=WaitHistogram._from_native(self._wait_histogram()),
        )

    def __repr__(self) -> str:
        name = f", name={self.name!r}" if self.name is not None else ""
        return (
            f"Semaphore({self.limit}{name}, in_use={self.in_use}, waiting={self.waiting}"
            f"{', closed' if self.closed else ''})"
        )
