"""Keyed limiters: one limit per key (user, tenant, host) in one object.

`KeyedTokenBucket`, `KeyedSlidingWindow` and `KeyedSemaphore` have the surface of
`TokenBucket`, `SlidingWindow` and `Semaphore` with a key as first argument. Keys are
``str`` or ``bytes``; an ``int`` is accepted and keyed by its decimal digits (``42`` and
``"42"`` are one key); anything else is a ``TypeError``.

The keys live in a sharded native map (see ``rust/core/src/keyed.rs``): a call locks only
its key's shard, a key is known by a secret-keyed 128-bit hash (attacker-chosen keys cannot
collide or pile up), and the state of a key is the few bytes its unkeyed limiter's decision
needs. A key unused for ``idle_ttl`` whose state is at rest (bucket full, window empty, no
permit held) is removed; beyond ``max_keys`` a key at rest makes room: the least recently
used of a sample of 16 in the new key's shard (exact LRU while a shard holds at most 16 keys;
README, "Keyed limiters"). Removing a key at rest changes no answer. A key holding permits,
or with callers waiting, is never removed.

Waiting: when a caller must wait, the key's state moves into an unkeyed limiter of the same
configuration, which serves that key until nobody waits and its state is at rest again; the
waits, timeouts and cancellations are therefore exactly the unkeyed ones'. The move rounds
towards refusing: a bucket is charged its tokens in use rounded up to whole tokens, a window
the cost still inside it as if admitted at the move (a waiting key of a sliding window may
thus be admitted up to one window later than its log alone would allow).

This module never decides: the decisions are the native map's and the unkeyed limiters'.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar, final, overload

from admission import _backend, _native, _registry, durations
from admission._validate import timeout_seconds
from admission.concurrency import Semaphore
from admission.errors import TooManyKeys
from admission.rate import SlidingWindow, TokenBucket
from admission.stats import KeyedStats

if TYPE_CHECKING:
    from admission.stores import NetworkStore, SharedKeyedTokenBucket, SharedMemory
    from admission.stores.remote import OnStoreError, RemoteKeyedTokenBucket

__all__ = [
    "KeyedSemaphore",
    "KeyedSlidingWindow",
    "KeyedStats",
    "KeyedTokenBucket",
    "TooManyKeys",
]

Key = str | bytes | int
"""What a key may be: ``str``, ``bytes``, or ``int`` (keyed by its decimal digits)."""

_ALREADY_LENT: Final = -1
_NO_ROOM: Final = -2
_DEFAULT_IDLE_TTL: Final = 600.0
_DEFAULT_MAX_KEYS: Final = 1_000_000


def _canonical(key: Key) -> bytes:
    # The same bytes the native map hashes (its check has already refused other types).
    if isinstance(key, str):
        return key.encode()
    if isinstance(key, bytes):
        return key
    return str(int(key)).encode()


def _in_store(
    store: object,
    rate: float,
    per: float | str | None,
    burst: int | None,
    clock: object,
    name: str | None,
    network: dict[str, Any],
    local: dict[str, Any],
) -> RemoteKeyedTokenBucket | SharedKeyedTokenBucket:
    from admission.stores import NetworkStore, SharedKeyedTokenBucket, SharedMemory
    from admission.stores.remote import RemoteKeyedTokenBucket, network_options

    if not isinstance(store, (NetworkStore, SharedMemory)):
        raise TypeError(
            f"a KeyedTokenBucket's store= is adm.stores.SharedMemory or a network store "
            f"(adm.stores.Postgres, Redis), got {store!r}"
        )
    if clock is not None:
        raise ValueError("a bucket in a store uses the store's clock: do not pass clock=")
    seconds = 1.0 if per is None else durations.seconds(per, "per", positive=True)
    if isinstance(store, SharedMemory):
        network_options("KeyedTokenBucket", network)  # none allowed without a network store
        # A full bucket's slot is reused at once (it holds nothing), and the table is one.
        if local["idle_ttl"] is not None or local["shards"] is not None:
            raise ValueError(
                "a KeyedTokenBucket in shared memory has no idle_ttl= or shards=: a key's slot "
                "is reused as soon as its bucket is full again"
            )
        max_keys = _DEFAULT_MAX_KEYS if local["max_keys"] is None else local["max_keys"]
        return SharedKeyedTokenBucket(store, name, rate, seconds, burst, max_keys)
    # The server holds the keys, each until its bucket is full again: nothing here to bound.
    given = [option for option, value in local.items() if value is not None]
    if given:
        raise ValueError(
            f"a KeyedTokenBucket in a network store has no {'=, '.join(given)}=: the server "
            "keeps each key until its bucket is full again"
        )
    options = network_options("KeyedTokenBucket", network, "on_store_error", "instances")
    return RemoteKeyedTokenBucket(store, name, rate, seconds, burst, local=_local_keyed, **options)


def _local_keyed(rate: float, per: float, burst: int) -> KeyedTokenBucket:
    return KeyedTokenBucket(rate, per, burst)


def _clock_arg(limiter: Any) -> Any:
    kind = limiter._clock_kind
    if kind == "loop":
        return _native.LoopClock()
    return limiter.clock


L = TypeVar("L", bound="TokenBucket | SlidingWindow | Semaphore")
RateL = TypeVar("RateL", bound="TokenBucket | SlidingWindow")


class _Lending(Generic[L]):
    """The keys whose state is lent to an unkeyed limiter while callers wait, for one keyed
    limiter. All methods run under one lock: lending and giving back are rare."""

    __slots__ = ("_lent", "_lock")

    def __init__(self) -> None:
        self._lent: dict[bytes, _Loan[L]] = {}
        self._lock = threading.Lock()

    def get(self, key: Key) -> L | None:
        loan = self._lent.get(_canonical(key))
        return None if loan is None else loan.lender

    def loans(self) -> list[_Loan[L]]:
        with self._lock:
            return list(self._lent.values())


class _Loan(Generic[L]):
    """One key's state, lent to ``lender``."""

    __slots__ = ("baseline", "borrowers", "lender")

    def __init__(self, lender: L) -> None:
        self.lender: L = lender
        # Moving the state in may count (a semaphore's permits are taken as an admission),
        # and that is no new attempt: only what happens after counts.
        self.baseline = _counts(lender)
        # Acquisitions in progress through the lender: until each has ended (and counted
        # its outcome there), the state stays lent.
        self.borrowers = 0


_Counts = tuple[int, int, int, int, int]


def _counts(lender: TokenBucket | SlidingWindow | Semaphore) -> _Counts:
    s = lender.stats()
    return (s.admitted, s.admitted_cost, s.rejected, s.timed_out, s.cancelled)


def _since(lender: TokenBucket | SlidingWindow | Semaphore, baseline: _Counts) -> _Counts:
    now = _counts(lender)
    return (
        now[0] - baseline[0],
        now[1] - baseline[1],
        now[2] - baseline[2],
        now[3] - baseline[3],
        now[4] - baseline[4],
    )


class _Keyed(Generic[L]):
    """What the three keyed limiters add to their native halves, written once."""

    _lending: _Lending[L]

    def __init__(self, *args: object, **kwargs: object) -> None:
        # The native __new__ has parsed and checked the arguments. Registered (weakly) for
        # the metrics: `_metric_families` reads the keyed limiters from the registry.
        self._lending = _Lending()
        _registry.register(self)
        _add_metrics_source()

    def _native(self) -> Any:
        return self

    # -- the unkeyed limiter of a key whose callers wait ------------------------------------

    def _make(self, held: int) -> L:
        raise NotImplementedError

    def _at_rest(self, lender: L) -> bool:
        raise NotImplementedError

    def _return(self, key: Key, lender: L) -> None:
        self._native()._give_back(key)

    def _borrow(self, key: Key, acquiring: bool = False) -> L:
        """The unkeyed limiter serving ``key``, created (with the key's state) if need be;
        ``acquiring``: for an acquisition, which must call `_settle` when it ends."""
        lending = self._lending
        with lending._lock:
            canonical = _canonical(key)
            loan = lending._lent.get(canonical)
            if loan is not None:
                loan.borrowers += acquiring
                return loan.lender
            state = self._native()._lend(key)
            if state == _NO_ROOM:
                self._native()._absorb(0, 0, 1, 0, 0)  # the attempt ends here: rejected
                name = self._native().name
                raise TooManyKeys(
                    f"{type(self).__name__}{'' if name is None else f' {name!r}'} holds "
                    f"max_keys={self._native().max_keys} keys and none is at rest: "
                    f"key {key!r} refused"
                )
            # A lent key is in `lent` under this lock, so `_lend` cannot find it lent.
            assert state != _ALREADY_LENT, "a lent key has its lender"
            loan = _Loan(self._make(state))
            loan.borrowers += acquiring
            lending._lent[canonical] = loan
            return loan.lender

    def _settle(self, key: Key, acquired: bool = False) -> None:
        """Gives the key's state back if no acquisition is in progress and it is at rest
        (for a semaphore: its held permits go back with it). ``acquired``: an acquisition
        that `_borrow` counted has ended."""
        lending = self._lending
        with lending._lock:
            canonical = _canonical(key)
            loan = lending._lent.get(canonical)
            if loan is None:
                return
            loan.borrowers -= acquired
            lender = loan.lender
            if loan.borrowers or lender.waiting or not self._resting(lender):
                return
            del lending._lent[canonical]
            self._native()._absorb(*_since(lender, loan.baseline))
            self._return(key, lender)

    def _resting(self, lender: L) -> bool:
        try:
            return self._at_rest(lender)
        except RuntimeError:  # a LoopClock read outside a running loop: keep the loan
            return False

    def _settle_all(self) -> None:
        for canonical in list(self._lending._lent):  # keys as bytes: the same identity
            self._settle(canonical)

    # -- what the native half asks about lent keys ------------------------------------------

    def _lender(self, key: Key) -> L | None:
        # None: given back by another thread between the native look-up and this call; the
        # caller then asks the native half again.
        return self._lending.get(key)

    def _lent_try_acquire(self, key: Key, cost: int) -> bool:
        lender = self._lender(key)
        if lender is None:
            return bool(self._native().try_acquire(key, cost))
        admitted = lender.try_acquire(cost)
        self._settle(key)
        return admitted

    def _lent_try_take(self, key: Key, cost: int) -> bool:
        lender = self._lender(key)
        if lender is None:
            return bool(self._native()._try_take(key, cost))
        admitted = lender._try_take(cost)
        self._settle(key)
        return admitted

    # -- the public surface -----------------------------------------------------------------

    def stats(self) -> KeyedStats:
        """Totals over every key, counted exactly; see `KeyedStats`."""
        native = self._native()
        self._settle_all()
        admitted, admitted_cost, rejected, timed_out, cancelled, expired, evicted, full = (
            native._counts()
        )
        waiting = 0
        for loan in self._lending.loans():
            lender = loan.lender
            more = _since(lender, loan.baseline)
            admitted += more[0]
            admitted_cost += more[1]
            rejected += more[2]
            timed_out += more[3]
            cancelled += more[4]
            waiting += lender.waiting
        return KeyedStats(
            name=native.name,
            keys=len(native),
            max_keys=native.max_keys,
            admitted=admitted,
            admitted_cost=admitted_cost,
            rejected=rejected,
            timed_out=timed_out,
            cancelled=cancelled,
            waiting=waiting,
            expired=expired,
            evicted=evicted,
            refused_full=full,
        )

    def waiting(self, key: Key) -> int:
        """Callers waiting for ``key`` now."""
        lender = self._lending.get(key)
        return 0 if lender is None else lender.waiting


async def _first_step(take: Callable[[], bool]) -> bool:
    """Tries ``take`` at once; on trio as a checkpoint (`_backend.Backend.first_step`)."""
    backend = _backend.current()  # (a clear error outside any event loop)
    if _backend.on_trio():
        return await backend.first_step(take)
    return take()  # asyncio: admission without waiting never suspends


def _idle_ttl(idle_ttl: float | str) -> float:
    return durations.seconds(idle_ttl, "idle_ttl", infinite=True, positive=True)


class _KeyedRate(_Keyed[RateL]):
    """`KeyedTokenBucket` and `KeyedSlidingWindow`: the waiting half."""

    def _lent_peek(self, key: Key, cost: int) -> _native.Decision:
        lender = self._lender(key)
        if lender is None:
            return self._native().peek(key, cost)  # type: ignore[no-any-return]
        return lender.peek(cost)

    async def acquire(self, key: Key, cost: int = 1, timeout: float | str | None = None) -> None:
        """Waits until ``cost`` is admitted for ``key`` (FIFO among that key's callers).

        The same contract as the unkeyed ``acquire``: `AcquireTimeout` at once if admission
        would take longer than ``timeout``; a caller that gives up takes nothing. Raises
        `CapacityError` if ``cost`` can never fit and `TooManyKeys` if a new key finds no room.
        """
        seconds = timeout_seconds(timeout)
        native = self._native()
        if await _first_step(lambda: native._try_take(key, cost)):
            return
        lender = self._borrow(key, acquiring=True)
        try:
            await lender.acquire(cost, timeout=seconds)
        finally:
            self._settle(key, acquired=True)

    def acquire_blocking(self, key: Key, cost: int = 1, timeout: float | str | None = None) -> None:
        """Waits in this thread until ``cost`` is admitted for ``key``; see `acquire`."""
        seconds = timeout_seconds(timeout)
        if self._native()._try_take(key, cost):
            return
        lender = self._borrow(key, acquiring=True)
        try:
            lender.acquire_blocking(cost, timeout=seconds)
        finally:
            self._settle(key, acquired=True)

    @asynccontextmanager
    async def _hold_async(self, key: Key, cost: int) -> AsyncIterator[None]:
        await self.acquire(key, cost)
        yield

    @contextmanager
    def _hold(self, key: Key, cost: int) -> Iterator[None]:
        self.acquire_blocking(key, cost)
        yield


@final
class KeyedTokenBucket(_KeyedRate[TokenBucket], _native.KeyedTokenBucket):
    """A token bucket per key: ``rate`` tokens per ``per`` seconds, bursts of ``burst``.

    Each key behaves as its own `TokenBucket` (GCRA, starting full); ``max_keys`` bounds the
    keys held and ``idle_ttl`` (seconds or a duration such as ``"10m"``) removes a key whose
    bucket is full again and that was not used for that long.

    >>> import admission as adm
    >>> per_user = adm.KeyedTokenBucket(rate=10, per=1.0, burst=2, max_keys=100_000)
    >>> per_user.try_acquire("user:42"), per_user.try_acquire("user:42")
    (True, True)
    >>> per_user.try_acquire("user:42"), per_user.try_acquire("user:7")
    (False, True)
    >>> len(per_user), per_user.stats().admitted
    (2, 3)
    """

    @overload
    def __new__(
        cls,
        rate: float | str,
        per: float | str | None = None,
        burst: int | None = None,
        *,
        max_keys: int = 1_000_000,
        idle_ttl: float | str = 600.0,
        shards: int | None = None,
        clock: _native.ManualClock | _native.LoopClock | None = None,
        name: str | None = None,
        store: None = None,
    ) -> KeyedTokenBucket: ...

    @overload
    def __new__(  # type: ignore[misc]  # a store's keyed bucket is another class
        cls,
        rate: float | str,
        per: float | str | None = None,
        burst: int | None = None,
        *,
        max_keys: int = 1_000_000,
        name: str,
        store: SharedMemory,
    ) -> SharedKeyedTokenBucket: ...

    @overload
    def __new__(  # type: ignore[misc]  # a store's keyed bucket is another class
        cls,
        rate: float | str,
        per: float | str | None = None,
        burst: int | None = None,
        *,
        name: str,
        store: NetworkStore,
        on_store_error: OnStoreError = "closed",
        instances: int | None = None,
    ) -> RemoteKeyedTokenBucket: ...

    def __new__(  # type: ignore[misc]  # see the overloads
        cls,
        rate: float | str,
        per: float | str | None = None,
        burst: int | None = None,
        *,
        # None: not given (a store refuses what it has no use for), else the defaults.
        max_keys: int | None = None,
        idle_ttl: float | str | None = None,
        shards: int | None = None,
        clock: _native.ManualClock | _native.LoopClock | None = None,
        name: str | None = None,
        store: SharedMemory | NetworkStore | None = None,
        **network: Any,
    ) -> KeyedTokenBucket | RemoteKeyedTokenBucket | SharedKeyedTokenBucket:
        # Rate and duration strings ("10/s", per="1m") as `TokenBucket` takes them.
        if isinstance(rate, str) and per is not None:
            raise ValueError(f"rate {rate!r} already says its period: do not also give per={per!r}")
        parsed = durations.rate(rate, "rate")
        if isinstance(rate, str):
            rate, per = parsed.count, parsed.per
        if store is not None or network:
            local = {"max_keys": max_keys, "idle_ttl": idle_ttl, "shards": shards}
            return _in_store(store, rate, per, burst, clock, name, network, local)
        return super().__new__(
            cls,
            rate,
            1.0 if per is None else durations.seconds(per, "per", positive=True),
            burst,
            max_keys=_DEFAULT_MAX_KEYS if max_keys is None else max_keys,
            idle_ttl=_idle_ttl(_DEFAULT_IDLE_TTL if idle_ttl is None else idle_ttl),
            shards=shards,
            clock=clock,
            name=name,
        )

    def _make(self, held: int) -> TokenBucket:
        bucket = TokenBucket.__new__(
            TokenBucket, self.rate, self.per, self.burst, clock=_clock_arg(self)
        )
        if held:
            bucket._charge(held)
        return bucket

    def _at_rest(self, lender: TokenBucket) -> bool:
        return lender.peek(lender.burst).allowed

    def __call__(self, key: Key, cost: int = 1) -> _Hold:
        """``async with limiter(key):`` / ``with limiter(key):`` acquire ``cost`` for ``key``."""
        return _Hold(self, key, cost)


@final
class KeyedSlidingWindow(_KeyedRate[SlidingWindow], _native.KeyedSlidingWindow):
    """A sliding window per key: at most ``limit`` in any ``window`` seconds for each key.

    >>> import admission as adm
    >>> per_host = adm.KeyedSlidingWindow(2, "1m")
    >>> [per_host.try_acquire("example.org") for _ in range(3)]
    [True, True, False]
    """

    def __new__(
        cls,
        limit: int,
        window: float | str,
        *,
        max_keys: int = 1_000_000,
        idle_ttl: float | str = 600.0,
        shards: int | None = None,
        clock: _native.ManualClock | _native.LoopClock | None = None,
        name: str | None = None,
    ) -> KeyedSlidingWindow:
        return super().__new__(
            cls,
            limit,
            durations.seconds(window, "window", positive=True),
            max_keys=max_keys,
            idle_ttl=_idle_ttl(idle_ttl),
            shards=shards,
            clock=clock,
            name=name,
        )

    def _make(self, held: int) -> SlidingWindow:
        window = SlidingWindow.__new__(
            SlidingWindow, self.limit, self.window, clock=_clock_arg(self)
        )
        if held:
            window._take(held)
        return window

    def _at_rest(self, lender: SlidingWindow) -> bool:
        return lender.peek(lender.limit).allowed

    def __call__(self, key: Key, cost: int = 1) -> _Hold:
        """``async with limiter(key):`` / ``with limiter(key):`` acquire ``cost`` for ``key``."""
        return _Hold(self, key, cost)


@final
class KeyedSemaphore(_Keyed[Semaphore], _native.KeyedSemaphore):
    """A semaphore per key: at most ``limit`` permits held at once for each key.

    A key holding permits or with waiters is never removed; one holding none and unused for
    ``idle_ttl`` is.

    >>> import admission as adm
    >>> per_tenant = adm.KeyedSemaphore(2)
    >>> per_tenant.try_acquire("acme"), per_tenant.try_acquire("acme", 2)
    (True, False)
    >>> per_tenant.in_use("acme")
    1
    >>> per_tenant.release("acme"); per_tenant.in_use("acme")
    0
    """

    def __new__(
        cls,
        limit: int,
        *,
        max_keys: int = 1_000_000,
        idle_ttl: float | str = 600.0,
        shards: int | None = None,
        clock: _native.ManualClock | _native.LoopClock | None = None,
        name: str | None = None,
    ) -> KeyedSemaphore:
        return super().__new__(
            cls,
            limit,
            max_keys=max_keys,
            idle_ttl=_idle_ttl(idle_ttl),
            shards=shards,
            clock=clock,
            name=name,
        )

    def _make(self, held: int) -> Semaphore:
        semaphore = Semaphore.__new__(Semaphore, self.limit)
        if held:
            taken = semaphore._try_take(held)
            assert taken, "a key never holds more than the limit"
        return semaphore

    def _at_rest(self, lender: Semaphore) -> bool:
        return True  # the permits held go back with the state

    def _return(self, key: Key, lender: Semaphore) -> None:
        self._give_back(key, lender.in_use)

    def _lent_release(self, key: Key, n: int) -> None:
        lender = self._lender(key)
        if lender is None:
            self.release(key, n)
            return
        lender.release(n)
        self._settle(key)

    def _lent_in_use(self, key: Key) -> int:
        lender = self._lender(key)
        return self.in_use(key) if lender is None else lender.in_use

    def available(self, key: Key) -> int:
        """Permits ``key`` could take now (its waiters come first)."""
        lender = self._lending.get(key)
        if lender is not None:
            return 0 if lender.waiting else lender.available
        return self.limit - self.in_use(key)

    async def acquire(self, key: Key, n: int = 1, timeout: float | str | None = None) -> None:
        """Waits until ``n`` of ``key``'s permits are held (FIFO among that key's callers).

        The same contract as `Semaphore.acquire`: a caller that gives up (timeout,
        cancellation) holds nothing, and permits granted to it at that instant go to the next
        waiter. Raises `CapacityError` if ``n`` exceeds the limit and `TooManyKeys` if a new
        key finds no room.
        """
        seconds = timeout_seconds(timeout)
        if await _first_step(lambda: self._try_take(key, n)):
            return
        lender = self._borrow(key, acquiring=True)
        try:
            await lender.acquire(n, timeout=seconds)
        finally:
            self._settle(key, acquired=True)

    def acquire_blocking(self, key: Key, n: int = 1, timeout: float | str | None = None) -> None:
        """Waits in this thread until ``n`` of ``key``'s permits are held; see `acquire`."""
        seconds = timeout_seconds(timeout)
        if self._try_take(key, n):
            return
        lender = self._borrow(key, acquiring=True)
        try:
            lender.acquire_blocking(n, timeout=seconds)
        finally:
            self._settle(key, acquired=True)

    @asynccontextmanager
    async def _hold_async(self, key: Key, cost: int) -> AsyncIterator[None]:
        await self.acquire(key, cost)
        try:
            yield
        finally:
            self.release(key, cost)

    @contextmanager
    def _hold(self, key: Key, cost: int) -> Iterator[None]:
        self.acquire_blocking(key, cost)
        try:
            yield
        finally:
            self.release(key, cost)

    def __call__(self, key: Key, n: int = 1) -> _Hold:
        """``async with limiter(key):`` / ``with limiter(key):`` hold ``n`` permits of
        ``key`` for the block."""
        return _Hold(self, key, n)


_KEYED_KINDS: Final = {
    "KeyedTokenBucket": "keyed_token_bucket",
    "KeyedSlidingWindow": "keyed_sliding_window",
    "KeyedSemaphore": "keyed_semaphore",
}
_metrics_source_added = False
_metrics_lock = threading.Lock()


def _add_metrics_source() -> None:
    """Adds `_metric_families` to every exporter, once (on the first keyed limiter, so that
    ``import admission`` imports no metrics module)."""
    global _metrics_source_added
    with _metrics_lock:
        if _metrics_source_added:
            return
        from admission.metrics import families

        families.add_source(_metric_families)
        _metrics_source_added = True


def _metric_families() -> list[Any]:
    """One series per ``(kind, limiter)`` over the live keyed limiters, never one per key:
    keys held and allowed, waiters, acquisitions by outcome, keys removed by reason."""
    from admission.metrics.families import PREFIX, UNNAMED, Family, Sample

    totals: dict[tuple[str, str], list[int]] = {}
    for obj in _registry.live():
        if not isinstance(obj, _Keyed):
            continue
        s = obj.stats()
        kind = _KEYED_KINDS[type(obj).__name__]
        row = totals.setdefault((kind, s.name or UNNAMED), [0] * 10)
        figures = (
            1,
            s.keys,
            s.max_keys,
            s.waiting,
            s.admitted,
            s.rejected,
            s.timed_out,
            s.cancelled,
            s.expired,
            s.evicted,
        )
        for i, v in enumerate(figures):
            row[i] += v

    def samples(column: int, **extra: str) -> tuple[Sample, ...]:
        return tuple(
            Sample({"kind": kind, "limiter": name, **extra}, float(row[column]))
            for (kind, name), row in sorted(totals.items())
        )

    outcomes = ("admitted", "rejected", "timeout", "cancelled")
    return [
        Family(
            PREFIX + "keyed_limiters", "gauge", "Live keyed limiters in the series.", samples(0)
        ),
        Family(PREFIX + "keyed_keys", "gauge", "Keys held now.", samples(1)),
        Family(PREFIX + "keyed_max_keys", "gauge", "Keys allowed (max_keys).", samples(2)),
        Family(PREFIX + "keyed_waiters", "gauge", "Requests waiting now, all keys.", samples(3)),
        Family(
            PREFIX + "keyed_acquisitions",
            "counter",
            "Acquisitions of keyed limiters by outcome, all keys.",
            tuple(x for i, o in enumerate(outcomes) for x in samples(4 + i, outcome=o)),
        ),
        Family(
            PREFIX + "keyed_evictions",
            "counter",
            "Keys removed: idle (unused for idle_ttl, at rest) or max_keys (to make room).",
            samples(8, reason="idle") + samples(9, reason="max_keys"),
        ),
    ]


class _Hold:
    """``limiter(key)``: a context manager (sync and async) over one key."""

    __slots__ = ("_cm", "_cost", "_key", "_limiter")

    def __init__(self, limiter: Any, key: Key, cost: int) -> None:
        self._limiter = limiter
        self._key = key
        self._cost = cost
        self._cm: Any = None

    async def __aenter__(self) -> None:
        self._cm = self._limiter._hold_async(self._key, self._cost)
        await self._cm.__aenter__()

    async def __aexit__(self, *exc: object) -> None:
        await self._cm.__aexit__(*exc)

    def __enter__(self) -> None:
        self._cm = self._limiter._hold(self._key, self._cost)
        self._cm.__enter__()

    def __exit__(self, *exc: object) -> None:
        self._cm.__exit__(*exc)
