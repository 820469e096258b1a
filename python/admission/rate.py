"""Rate limiters: `TokenBucket` (GCRA) and `SlidingWindow` (exact).

Both share one surface:

- ``try_acquire(cost=1) -> bool`` admits now or refuses now; never blocks.
- ``peek(cost=1) -> Decision`` says what ``try_acquire`` would do; consumes nothing.
- ``await acquire(cost=1, timeout=None)`` and ``async with limiter:`` wait (in this task) until
  admitted, FIFO; immediate admission completes without suspending or creating a Task.
- ``acquire_blocking(cost=1, timeout=None)`` and ``with limiter:`` wait (in this thread).
- A timeout that cannot be met fails at once with `AcquireTimeout`, whose ``needed`` is the
  wait it would have taken. Waiters hold a place in the queue, not a slot of time: one that
  gives up (timeout, cancellation of any kind) leaves, and the ones behind it move up.
- ``stats() -> LimiterStats``: exact counters, the requests waiting now, and a histogram of
  how long admitted requests waited (recorded by waiters only: immediate admission is free).
- ``reserve(estimate)``: admitted like ``acquire``, settled afterwards at the real cost
  (`admission.reserve`); ``pause(seconds)`` / ``pause_until(deadline)`` and
  ``sync(remaining=..., reset_after=...)``: what a provider said (a 429, its rate-limit
  headers), never admitting anything nor letting anyone past the waiters.

The decisions are native (Rust); this module adds the waiting and the Python conveniences.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, cast, final, overload

from admission import _backend, _native, _rate_wait, _registry, durations
from admission._rate_wait import RateLimiter
from admission._validate import timeout_seconds
from admission.reserve import OnError, Reserve
from admission.stats import LimiterStats, WaitHistogram

if TYPE_CHECKING:
    from admission.stores import NetworkStore, SharedMemory, SharedTokenBucket
    from admission.stores.remote import OnStoreError, RemoteTokenBucket

__all__ = ["SlidingWindow", "TokenBucket"]


def _acquire_blocking(limiter: RateLimiter, cost: int, timeout: float | str | None) -> None:
    timeout = timeout_seconds(timeout)
    if limiter._try_take(cost):
        return
    _rate_wait.refuse_blocking_in_a_loop((limiter,))
    wake = _backend.ThreadWaker()
    ticket = limiter._enqueue(cost, timeout, wake)
    if ticket is not None:
        waits = ((limiter, ticket),)
        _rate_wait.wait_blocking(waits, (), timeout, wake)
        _rate_wait.consume(waits)


async def _acquire_async(limiter: RateLimiter, cost: int, timeout: float | None) -> None:
    """The waiting path of ``await limiter.acquire()``: queue, wait for the turn, take it.

    On asyncio the native ``acquire`` comes here only when it must wait. On trio it always
    does, since every call must be a checkpoint: an already-cancelled caller raises
    ``Cancelled`` and takes nothing, and one admitted at once still lets the others run.
    """
    backend = _backend.current()
    if await backend.first_step(lambda: limiter._try_take(cost)):
        return
    wake = backend.waker()
    ticket = limiter._enqueue(cost, timeout, wake)
    if ticket is None:  # admitted at once (room was made meanwhile)
        await backend.admitted()
        return
    waits = ((limiter, ticket),)
    await _rate_wait.wait_async(waits, (), timeout, backend, wake)
    _rate_wait.consume(waits)


def _stats(limiter: RateLimiter) -> LimiterStats:
    admitted, admitted_cost, rejected, timed_out, cancelled = limiter._counters()
    return LimiterStats(
        name=limiter.name,
        admitted=admitted,
        admitted_cost=admitted_cost,
        rejected=rejected,
        timed_out=timed_out,
        cancelled=cancelled,
        waiting=limiter.waiting,
        wait=WaitHistogram._from_native(limiter._wait_histogram()),
    )


class _RateLimiter:
    """What `TokenBucket` and `SlidingWindow` add to their native halves, written once."""

    __slots__ = ()

    def __init__(self, *args: object, **kwargs: object) -> None:
        # The native __new__ has parsed and checked the arguments; this makes the limiter
        # visible to metrics and alerts (a weak reference: it never keeps it alive).
        _registry.register(self)

    def _limiter(self) -> RateLimiter:
        # Always combined with its native half (`TokenBucket`, `SlidingWindow` below).
        return cast("RateLimiter", self)

    def acquire_blocking(self, cost: int = 1, timeout: float | str | None = None) -> None:
        """Waits in this thread until ``cost`` is admitted (FIFO).

        Raises `AcquireTimeout` at once, without waiting, if admission would take longer
        than ``timeout`` seconds; `CapacityError` if ``cost`` exceeds the capacity.
        """
        _acquire_blocking(self._limiter(), cost, timeout)

    async def _acquire_slow(self, cost: int, timeout: float | None) -> None:
        await _acquire_async(self._limiter(), cost, timeout)

    def stats(self) -> LimiterStats:
        """Exact counters: admitted, rejected, timed out, cancelled; and the wait histogram."""
        return _stats(self._limiter())

    def reserve(
        self, estimate: int = 1, *, timeout: float | str | None = None, on_error: OnError = "keep"
    ) -> Reserve:
        """Admits ``estimate`` like `acquire` (FIFO, within ``timeout``), to be settled at the
        real cost: ``async with tpm.reserve(est) as r: ...; r.settle(actual)`` (``with`` in
        threads). Unused cost goes back (waiters first), an overage is charged as a debt;
        unsettled, the estimate stands; on an exception, ``on_error`` ("keep" or "refund").
        See `admission.reserve`.

        Raises:
            CapacityError: ``estimate`` larger than the capacity (at once).
        """
        return Reserve((self._limiter(),), (estimate,), timeout, on_error)

    def pause(self, seconds: float | str) -> None:
        """Admits nothing for ``seconds`` (a number or ``"30s"``): a provider's 429 with
        ``Retry-After`` for the whole account. Waiters keep their order and are admitted
        after it; a pause shorter than the limiter's own wait changes nothing.

        A `TokenBucket` is empty at the end of the pause and refills at its rate from there
        (a full burst at that instant would earn the next 429); a `SlidingWindow` admits by
        its window from then. Nothing given back during the pause (a refund, a cancelled
        grant) and no request of cost 0 is admitted before its end.
        """
        self._limiter()._pause(durations.seconds(seconds, "seconds"))

    def pause_until(self, deadline: float) -> None:
        """`pause` until ``deadline`` on the limiter's clock: ``time.monotonic()`` by default,
        the manual clock's ``now()``, or the running loop's time under `LoopClock`."""
        limiter = self._limiter()
        clock = limiter.clock
        if clock is not None:
            now = clock.now()
        elif limiter._clock_kind == "loop":
            now = _backend.current().time()
        else:
            now = time.monotonic()
        limiter._pause(max(0.0, durations.seconds(deadline, "deadline") - now))

    def sync(self, remaining: int, reset_after: float | str | None = None) -> None:
        """What the provider says is left: the limiter never believes it has more than
        ``remaining`` now (it only ever takes capacity away: it adds nothing the provider did
        not grant). With ``reset_after`` (seconds until the provider's quota is full again),
        a `TokenBucket` read as the provider's own (its burst = the provider's limit) is not
        full again before then; a `SlidingWindow` holds the difference until then.

        Raises:
            TypeError / ValueError: ``remaining`` not an int >= 0, or a bad duration.
        """
        if isinstance(remaining, bool) or not isinstance(remaining, int):
            raise TypeError(
                f"remaining must be an int, got {type(remaining).__name__} {remaining!r}"
            )
        if remaining < 0:
            raise ValueError(f"remaining must be >= 0, got {remaining}")
        reset = None if reset_after is None else durations.seconds(reset_after, "reset_after")
        self._limiter()._sync(remaining, reset)


@final
class TokenBucket(_RateLimiter, _native.TokenBucket):
    """A token bucket: ``rate`` tokens per ``per`` seconds, bursts of up to ``burst``.

    Implemented as GCRA on one atomic word: a decision is a clock read and a compare-and-swap,
    lock-free, and a refused request writes nothing. The bucket starts full. Over any interval
    of ``t`` seconds it admits at most ``burst + rate * t / per`` cost, and a steady caller
    gets exactly the rate. ``burst`` defaults to ``rate`` (at least 1).

    >>> import admission as adm
    >>> b = adm.TokenBucket(rate=50, per=60.0, burst=10)   # 50 per minute, bursts of 10
    >>> b.try_acquire()
    True
    >>> b.try_acquire(cost=3)
    True
    >>> d = b.peek()   # what one more would get: allowed, with 5 left after it
    >>> d.allowed, d.remaining
    (True, 5)

    Args:
        rate: tokens added per ``per`` seconds (> 0).
        per: the period, in seconds (> 0). Default 1.0.
        burst: the capacity: the most tokens a single burst can take (integer >= 1).
        clock: a `admission.testing.ManualClock` for deterministic tests; default monotonic.
        name: a label for stats and metrics.
        store: an `admission.stores.SharedMemory`: the bucket (found by ``name``, which is
            then required) is shared by every process of the host that opens the same store;
            returns an `admission.stores.SharedTokenBucket` (same surface). A network store
            (``adm.stores.Postgres``, ``adm.stores.Redis``): shared by every process of every
            host; returns an `admission.stores.RemoteTokenBucket` (async only).
        on_store_error: a network store's bucket, when the store fails: ``"closed"``
            (default: raise `StoreUnavailable`), ``"open"`` (admit) or ``"local"`` (an
            in-process bucket of ``rate / instances``).
        instances: the processes sharing the limit (required by ``"local"``).
        batch: a network store's bucket takes this many tokens per round trip and spends
            them locally (see `admission.stores.RemoteTokenBucket`).

    Raises:
        ValueError: a non-positive, NaN or infinite ``rate``/``per``, or ``burst < 1``.
        TypeError: an argument of the wrong type.
    """

    __slots__ = ()

    @overload
    def __new__(
        cls,
        rate: float | str,
        per: float | str | None = None,
        burst: int | None = None,
        *,
        clock: _native.ManualClock | _native.LoopClock | None = None,
        name: str | None = None,
        store: None = None,
    ) -> TokenBucket: ...

    @overload
    def __new__(  # type: ignore[misc]  # a store's bucket is another class, same surface
        cls,
        rate: float | str,
        per: float | str | None = None,
        burst: int | None = None,
        *,
        name: str,
        store: SharedMemory,
    ) -> SharedTokenBucket: ...

    @overload
    def __new__(  # type: ignore[misc]  # a store's bucket is another class, same surface
        cls,
        rate: float | str,
        per: float | str | None = None,
        burst: int | None = None,
        *,
        name: str,
        store: NetworkStore,
        on_store_error: OnStoreError = "closed",
        instances: int | None = None,
        batch: int | None = None,
    ) -> RemoteTokenBucket: ...

    def __new__(  # type: ignore[misc]  # see the overloads
        cls,
        rate: float | str,
        per: float | str | None = None,
        burst: int | None = None,
        *,
        clock: _native.ManualClock | _native.LoopClock | None = None,
        name: str | None = None,
        store: SharedMemory | NetworkStore | None = None,
        **network: Any,
    ) -> TokenBucket | SharedTokenBucket | RemoteTokenBucket:
        # Rate and duration strings ("60/min", per="1m") are accepted here as everywhere;
        # both are checked by the library's one check of a rate and of a duration, then
        # the native constructor checks them together (at most 1e9 per second, ...).
        if isinstance(rate, str) and per is not None:
            raise ValueError(f"rate {rate!r} already says its period: do not also give per={per!r}")
        parsed = durations.rate(rate, "rate")
        if isinstance(rate, str):
            rate, per = parsed.count, parsed.per
        per = 1.0 if per is None else durations.seconds(per, "per", positive=True)
        if store is not None or network:
            return _in_store(store, rate, per, burst, clock, name, network)
        return super().__new__(cls, rate, per, burst, clock=clock, name=name)

    def __repr__(self) -> str:
        name = f", name={self.name!r}" if self.name is not None else ""
        return f"TokenBucket(rate={self.rate!r}, per={self.per!r}, burst={self.burst}{name})"


def _in_store(
    store: object,
    rate: float,
    per: float,
    burst: int | None,
    clock: object,
    name: str | None,
    network: dict[str, Any],
) -> SharedTokenBucket | RemoteTokenBucket:
    from admission.stores import NetworkStore, SharedTokenBucket
    from admission.stores.remote import RemoteTokenBucket, network_options

    if clock is not None:
        raise ValueError("a bucket in a store uses the store's clock: do not pass clock=")
    if isinstance(store, NetworkStore):
        options = network_options("TokenBucket", network, "on_store_error", "instances", "batch")
        return RemoteTokenBucket(store, name, rate, per, burst, local=_local_bucket, **options)
    network_options("TokenBucket", network)  # none allowed without a network store
    return SharedTokenBucket(store, name, rate, per, burst)  # type: ignore[arg-type]


def _local_bucket(rate: float, per: float, burst: int) -> TokenBucket:
    return TokenBucket(rate, per, burst)


@final
class SlidingWindow(_RateLimiter, _native.SlidingWindow):
    """At most ``limit`` cost in any window of ``window`` seconds, exactly.

    Keeps a log of the admissions still inside the window, at most 16 bytes per unit of cost
    admitted in the last ``window``: at most 16 bytes per unit of ``limit`` (1.6 MB for a
    limit of 100,000), allocated with at most twice that. The memory follows the log back
    down: once the log falls to a quarter of its allocation, the allocation is halved
    (amortized, not on every call), and a drained window keeps about 1 KiB. When a steady
    rate with bursts is what you need, `TokenBucket` is O(1) in memory and faster.

    >>> import admission as adm
    >>> w = adm.SlidingWindow(limit=2, window=60.0)
    >>> w.try_acquire(), w.try_acquire(), w.try_acquire()
    (True, True, False)

    ``store=`` is refused (`TypeError`): the log does not fit a fixed-size slot of shared
    memory; a `TokenBucket` with ``burst=limit`` is the shared alternative.

    Raises:
        ValueError: ``limit < 1``, or a non-positive, NaN or infinite ``window``.
    """

    __slots__ = ()

    def __new__(
        cls,
        limit: int,
        window: float | str,
        *,
        clock: _native.ManualClock | _native.LoopClock | None = None,
        name: str | None = None,
        store: None = None,
    ) -> SlidingWindow:
        if store is not None:
            raise TypeError(
                "a SlidingWindow cannot live in a store: its state is a log of up to `limit` "
                "admissions, which does not fit a fixed-size slot of shared memory; use "
                f"TokenBucket(rate={limit}, per={window!r}, burst={limit}, store=...) instead"
            )
        window = durations.seconds(window, "window", positive=True)  # also "1m", "30s"
        return super().__new__(cls, limit, window, clock=clock, name=name)

    def __repr__(self) -> str:
        name = f", name={self.name!r}" if self.name is not None else ""
        return f"SlidingWindow(limit={self.limit}, window={self.window!r}{name})"
