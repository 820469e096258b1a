"""`ConcurrencyManager`: every named limit of a process, configured and steered from one place.

>>> import admission as adm
>>> manager = adm.ConcurrencyManager.from_dict({
...     "limits": {
...         "openai": {"policy": "openai", "concurrency": 20, "tokens": "90000/min"},
...         "rag": {"policy": "database", "concurrency": 10},
...     }
... })
>>> async def ask() -> None:
...     async with manager.limit("openai", tokens=850):   # permit + request + 850 tokens
...         pass                                          # call the API
>>> with manager.limit("rag"):                            # from a thread: blocks it
...     manager.semaphore("rag").in_use
1
>>> manager.reload({"limits": {"rag": {"policy": "database", "concurrency": 4}}})
Config(limits=...)
>>> manager.semaphore("rag").limit, "openai" in manager
(4, False)

Each limit owns a `Semaphore` (named like the limit, always there: with ``concurrency =
"none"`` it is unbounded but still counts), and a `TokenBucket` for requests (``<name>.rate``)
and one for tokens (``<name>.tokens``) when its policy has them. ``limit(name)`` takes the
permit first, then the rate limits, so a request goes out as soon as its rate allows and the
provider sees the configured rate; both are bounded by one timeout, the policy's by default.

`reload` changes limits while they are in use; nothing held, queued or counted is lost:

- Semaphores are resized in place (``s.limit = n``): held permits stay valid, waiters keep
  their place in the queue, and nobody is admitted beyond the new limit.
- A rate limiter whose rate changes is replaced, because a bucket's rate is fixed. The new one
  starts as used as the old one was (its recent admissions are carried over, up to its burst),
  so a reload is never a fresh burst. Requests already waiting on the old one are admitted by
  it. `stats` adds the old one's counters to the new one's, so totals never drop, but the
  manager does not keep the old object alive (else the exporter's gauges, such as
  ``admission_tokens_capacity``, would count both): it holds it strongly only while requests
  wait on it, then weakly with its last stats, which are frozen into a total once it is
  gone. Small gap: an admission the old bucket makes after that point (a request that took
  its `Lease` before the reload and was still queued for the permit, an ``all_of`` waiter,
  code that kept ``rate(name)``) reaches `stats` only if a `stats` call runs while the old
  bucket is still alive. The exporter's counters have no gap (a dropped primitive's counts
  stay in its series). Ask the manager for ``rate(name)`` each time rather than keeping it.
- A limit removed from the configuration raises `UnknownLimit` from then on; its semaphore is
  opened (its waiters go in) and kept, so that if it comes back its accounting continues.

Connection pools: each ``[pools.NAME]`` table of the configuration (see
`admission.pools.settings`) is a pool of the manager's `PoolManager` (``manager.pools``),
opened and closed with the manager (``async with manager:``); its ``acquire_timeout`` is its
policy's timeout (``database``: 10 s) unless set. A reload may change a pool's
``acquire_timeout`` and ``max_waiters`` (its policy's timeout too); any other change to the
pools is refused with a `ConfigError` (restart to apply), so a reload never drops a pool.

>>> m = adm.ConcurrencyManager.from_dict({"pools": {"rag": {"dsn": "postgresql://app@db/rag"}}})
>>> async def query() -> None:
...     async with m:                                 # opens the pools, closes them on exit
...         async with m.connection("rag") as conn:   # waits at most 10 s for a connection
...             await conn.fetchval("select 1")
>>> m.pools.stats("rag").max_size, m.pools.stats("rag").state
(10, 'new')

Circuit breakers and retries: each ``[breakers.NAME]`` table is a `CircuitBreaker` and each
``[retries.NAME]`` table a `Retry` (with its own `RetryBudget`, and the breaker its table
names), both named ``NAME``: ``manager.breaker(name)``, ``manager.retry(name)``. A reload keeps
those whose settings did not change (a breaker with its state: an open one stays open).
A breaker whose settings change is replaced by a new one, closed with an empty window (its
verdict was reached under the old thresholds); a retry whose settings or breaker change is
replaced too, keeping its budget unless the budget's settings changed.

>>> m = adm.ConcurrencyManager.from_dict({
...     "breakers": {"openai": {"window": "60s"}},
...     "retries": {"openai": {"policy": "openai", "breaker": "openai"}},
... })
>>> m.retry("openai").breaker is m.breaker("openai"), m.retry("openai").attempts
(True, 5)

Stores: a limit with ``store = "NAME"`` keeps its semaphore and buckets in the store of the
``[stores.NAME]`` table (one per table: ``manager.store(name)``), under the limit's names,
so that every process loading the same configuration shares them. The limits of a network
store are async only (``with manager.limit(name)`` raises a `TypeError` naming the limit and
the store). A reload keeps a store whose table did not change and the limiters whose
settings did not; one that changes what a kept store holds of a limit (its concurrency,
rate, burst, tokens, token burst or lease) is refused with a `ConfigError`, because the
store refuses another configuration under the same name; a limit's limiters move into, out
of and between stores together or not at all.
`await manager.aclose()` closes the network stores, those reloads replaced included.

>>> m = adm.ConcurrencyManager.from_dict({
...     "stores": {"test": {"kind": "memory"}},          # or "shared_memory", "redis", "postgres"
...     "limits": {"api": {"store": "test", "concurrency": 2, "rate": "10/s"}},
... })
>>> async def call() -> None:
...     async with m.limit("api"):                       # a lease and a decision in the store
...         pass
>>> type(m.semaphore("api")).__name__, m.rate("api").name
('RemoteSemaphore', 'api.rate')

Other resources hook in with `ConcurrencyManager.attach`.
"""

from __future__ import annotations

import os
import sys
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from admission import _sections
from admission._native import MAX_PERMITS, LoopClock, ManualClock
from admission._replaced import Buckets
from admission._stored import StoredEntry, StoredLease, build_stored
from admission._validate import timeout_seconds
from admission.combine import AllOf
from admission.concurrency import Semaphore
from admission.config import Config
from admission.errors import ConfigError, UnknownLimit
from admission.lease import Lease, _Entry
from admission.policies import Policy, hint
from admission.stats import LimiterStats, SemaphoreStats
from admission.watcher import ConfigWatcher

if TYPE_CHECKING:
    from admission._sections import Store
    from admission.breaker import CircuitBreaker
    from admission.durations import Rate
    from admission.pools import PoolManager
    from admission.rate import TokenBucket
    from admission.retry import Retry
    from admission.stores import (
        RemoteSemaphore,
        RemoteTokenBucket,
        SharedSemaphore,
        SharedTokenBucket,
    )

if sys.version_info < (3, 11):  # pragma: no cover - exercised on 3.10 only
    from exceptiongroup import ExceptionGroup

__all__ = ["Attachment", "ConcurrencyManager", "Lease", "LimitStats"]

_Clock = ManualClock | LoopClock | None
_Previous = tuple["TokenBucket | None", "Rate | None", "int | None"]


class _Unset:
    def __repr__(self) -> str:
        return "<policy timeout>"


_POLICY_TIMEOUT = _Unset()


class Attachment(Protocol):
    """What a resource managed by name (a connection pool, ...) implements to follow reloads.

    ``apply`` is called with the limit's resolved policy when attached and after each reload,
    or with ``None`` when the limit is no longer configured. It is called outside the
    manager's lock, never twice at once for one resource, and may use the manager (even
    reload it); it should not block for long, since the reload waits for it.
    """

    def apply(self, policy: Policy | None) -> None: ...


class _Follower:
    """An attached resource, and the generation of the configuration it last applied."""

    __slots__ = ("applied", "busy", "name", "resource")

    def __init__(self, name: str, resource: Attachment, applied: int) -> None:
        self.name = name
        self.resource = resource
        self.applied = applied
        self.busy = False  # some thread is calling its apply (outside the lock)


def _failed_to_apply(errors: list[Exception]) -> ExceptionGroup:
    return ExceptionGroup(
        f"admission: the configuration is in force, but {len(errors)} attached "
        f"resource{'s' if len(errors) > 1 else ''} failed to apply it",
        errors,
    )


@dataclass(frozen=True, slots=True)
class LimitStats:
    """One named limit at one instant: its policy and the stats of each of its limiters.

    Rate counters include those of the limiters a reload replaced, so they only ever grow.

    >>> m = ConcurrencyManager.from_dict({"limits": {"db": {"concurrency": 4}}})
    >>> with m.limit("db"):
    ...     s = m.stats()["db"]
    >>> s.concurrency.in_use, s.utilization, s.policy.timeout, s.rate
    (1, 0.25, 30.0, None)
    """

    name: str
    policy: Policy
    """The resolved policy in force (its ``parent`` is the policy the limit inherits)."""
    concurrency: SemaphoreStats
    rate: LimiterStats | None
    tokens: LimiterStats | None

    @property
    def utilization(self) -> float:
        """Permits in use / the concurrency limit (0.0 when concurrency is unbounded)."""
        if self.policy.concurrency is None:
            return 0.0
        return self.concurrency.in_use / self.concurrency.limit


class ConcurrencyManager:
    """Named semaphores and rate limits, built from a `Config` and changed with `reload`.

    >>> import admission as adm
    >>> m = adm.ConcurrencyManager.from_dict({"limits": {"llm": {"policy": "llm"}}})
    >>> m.semaphore("llm").limit, m.policy("llm").timeout, m.names
    (20, 60.0, ('llm',))
    >>> m.stats()["llm"].concurrency.in_use
    0

    Args:
        config: a `Config`, or a dict of the configuration schema (see `admission.config`).
        clock: passed to every rate limiter (`admission.testing.ManualClock` in tests).
    """

    def __init__(self, config: Config | Mapping[str, Any] | None = None, *, clock: _Clock = None):
        self._lock = threading.Lock()  # one reload at a time; readers never take it
        self._entries: Mapping[str, _Entry | StoredEntry] = MappingProxyType({})
        self._leases: Mapping[str, Lease] = {}  # limit(name) with the defaults, by name
        self._config = Config(MappingProxyType({}))
        self._semaphores: dict[str, Semaphore] = {}
        self._buckets = Buckets(clock)  # the rate limits' buckets, and those reloads replaced
        self._followers: list[_Follower] = []  # attached resources
        self._generation = 0  # of the configuration in force: one more on each reload
        self._watchers: list[ConfigWatcher] = []
        # What the other tables ([pools], [breakers], [retries]) configure.
        self._sections = _sections.sections(clock)
        self._started = False  # the first reload (from here) may create what they hold
        self.reload(config if config is not None else self._config)
        self._started = True

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike[str],
        *,
        env: bool | Mapping[str, str] = True,
        clock: _Clock = None,
    ) -> ConcurrencyManager:
        """A manager configured by a TOML (YAML, JSON) file, plus environment overrides."""
        return cls(Config.from_file(path, env=env), clock=clock)

    @classmethod
    def from_dict(
        cls,
        data: Mapping[str, Any],
        *,
        env: bool | Mapping[str, str] = False,
        clock: _Clock = None,
    ) -> ConcurrencyManager:
        """A manager configured by a dict of the file's schema."""
        return cls(Config.from_dict(data, env=env), clock=clock)

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, clock: _Clock = None
    ) -> ConcurrencyManager:
        """A manager configured by ``ADMISSION_CONFIG`` and ``ADMISSION_*`` variables."""
        return cls(Config.from_env(environ), clock=clock)

    # -- using the limits -------------------------------------------------------------------

    def limit(
        self,
        name: str,
        *,
        tokens: int = 0,
        cost: int = 1,
        timeout: float | str | _Unset | None = _POLICY_TIMEOUT,
    ) -> Lease:
        """The admission for one call under the limit ``name``: ``async with`` (or ``with``) it.

        Takes one permit, then ``cost`` requests and ``tokens`` tokens from the rate limits
        (those the limit has; ``tokens`` counts only when it has a tokens limit), all within
        ``timeout`` (default: the policy's; a number of seconds, ``"10s"``, or ``None``).

        Raises:
            UnknownLimit: no limit of that name.
            AcquireTimeout: not admitted within the timeout.
            CapacityError: ``cost`` or ``tokens`` larger than the bucket's burst.
        """
        if tokens == 0 and cost == 1 and timeout is _POLICY_TIMEOUT:
            # The common call: a shared, prebuilt Lease (it is stateless), no allocation.
            lease = self._leases.get(name)
            if lease is not None:
                return lease
        entry = self._entry(name)
        if isinstance(entry, StoredEntry):
            seconds = entry.policy.timeout if isinstance(timeout, _Unset) else timeout
            return StoredLease(entry, cost, tokens, timeout_seconds(seconds))
        if isinstance(timeout, _Unset):
            return Lease(entry, cost, tokens, entry.policy.timeout)
        return Lease(entry, cost, tokens, timeout_seconds(timeout))

    def semaphore(self, name: str) -> Semaphore | SharedSemaphore | RemoteSemaphore:
        """The semaphore of the limit ``name`` (the same object across reloads; for a limit
        in a store, the store's, until a reload moves the limit or changes the store)."""
        return self._entry(name).semaphore

    def rate(self, name: str) -> TokenBucket | SharedTokenBucket | RemoteTokenBucket:
        """The requests rate limiter of ``name``; a reload may replace it, so do not keep it."""
        entry = self._entry(name)
        if entry.rate is None:
            raise UnknownLimit(name, f"the limit {name!r} has no rate limit (its rate is none)")
        return entry.rate

    def tokens(self, name: str) -> TokenBucket | SharedTokenBucket | RemoteTokenBucket:
        """The tokens rate limiter of ``name``; a reload may replace it, so do not keep it."""
        entry = self._entry(name)
        if entry.tokens is None:
            raise UnknownLimit(name, f"the limit {name!r} has no tokens limit (its tokens is none)")
        return entry.tokens

    def breaker(self, name: str) -> CircuitBreaker:
        """The circuit breaker of the ``[breakers.NAME]`` table ``name``: ``async with
        manager.breaker("openai"):``. A reload that changes its settings replaces it (see the
        module documentation), so ask for it each time rather than keeping it.

        Raises:
            UnknownLimit: no such table.
        """
        return _sections.breaker(self._sections, name, self._config.source)

    def retry(self, name: str) -> Retry:
        """The `Retry` of the ``[retries.NAME]`` table ``name`` (with its `RetryBudget`, and
        the breaker its table names): ``await manager.retry("openai").call(fn)``. A reload
        that changes its settings replaces it, so ask for it each time.

        Raises:
            UnknownLimit: no such table.
        """
        return _sections.retry(self._sections, name, self._config.source)

    def store(self, name: str) -> Store:
        """The store of the ``[stores.NAME]`` table ``name`` (the same object until a reload
        changes its table): ``manager.store("local").export_metrics()`` in one process of the
        host, ``manager.store("test").fail()`` for a ``memory`` store in tests.

        Raises:
            UnknownLimit: no such table.
        """
        return _sections.store(self._sections, name, self._config.source)

    @property
    def pools(self) -> PoolManager:
        """The pools of the ``[pools]`` tables (one `PoolManager`, the same across reloads).

        Raises:
            UnknownPool: no pool is configured.
        """
        return _sections.pool_manager(self._sections, self._config.source)

    def connection(self, name: str) -> _sections.ConnectionBlock:
        """``async with manager.connection(name) as conn``: a connection of the pool ``name``
        for the block (see `PoolManager.connection`); open the manager first.

        Raises:
            UnknownPool: no pool of that name (on the call); on entry, the pool errors
                (`PoolTimeout` after its ``acquire_timeout``, `PoolUnavailable`, ...).
        """
        return _sections.connection(self._sections, name, self._config.source)

    async def open(self) -> None:
        """Opens the pools (if any; see `PoolManager.open`). Idempotent while open; after
        `aclose()` it raises `PoolClosed` (a closed manager is closed for good)."""
        for section in self._sections.values():
            await section.open()

    async def aclose(self) -> None:
        """Closes the pools gracefully (see `PoolManager.close`) and the network stores (those
        reloads replaced too), and stops the file watchers."""
        self.close()
        for section in self._sections.values():
            await section.aclose()

    async def __aenter__(self) -> ConcurrencyManager:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def policy(self, name: str) -> Policy:
        """The resolved policy of the limit ``name``."""
        return self._entry(name).policy

    @property
    def names(self) -> tuple[str, ...]:
        """The configured limits' names."""
        return tuple(self._entries)

    @property
    def config(self) -> Config:
        """The configuration in force."""
        return self._config

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def _entry(self, name: str) -> _Entry | StoredEntry:
        entry = self._entries.get(name)
        if entry is None:
            known = ", ".join(sorted(self._entries)) or "none (no limit is configured)"
            raise UnknownLimit(
                name, f"no limit named {name!r}{hint(name, self._entries)}; known: {known}"
            )
        return entry

    def stats(self) -> dict[str, LimitStats]:
        """Every limit's policy and counters, by name."""
        return {
            name: LimitStats(
                name,
                entry.policy,
                entry.semaphore.stats(),
                self._buckets.stats(entry.rate),
                self._buckets.stats(entry.tokens),
            )
            for name, entry in self._entries.items()
        }

    # -- changing them ----------------------------------------------------------------------

    def reload(
        self, config: Config | Mapping[str, Any] | str | os.PathLike[str] | None = None
    ) -> Config:
        """Puts ``config`` in force (a `Config`, a dict, a file path; ``None``: read the file
        the current configuration came from again) and returns it.

        Either everything changes or, on an error (`ConfigError`), nothing does. Safe to call
        from any thread while limits are in use; see the module documentation for what
        happens to held permits, waiters and counters.

        Then each attached resource's ``apply`` is called (see `attach`), outside the lock;
        one that raises does not stop the others. Their errors are raised together as an
        ``ExceptionGroup`` once all have been called: the configuration is in force then.
        """
        new = self._load(config)
        with self._lock:
            old = self._entries
            # The sections first: the limits in a store are built in the stores they prepare.
            put_in_force = [
                section.prepare(new.sections.get(name, {}), new.source, not self._started)
                for name, section in self._sections.items()
            ]
            built = {
                name: self._build(name, p, old.get(name), new) for name, p in new.limits.items()
            }
            # From here on nothing can fail: the manager is never left half reloaded.
            for name, entry in built.items():
                if isinstance(entry.semaphore, Semaphore):  # this process's: resized in place
                    self._semaphores[name] = entry.semaphore
                    entry.semaphore.limit = entry.policy.concurrency or MAX_PERMITS
                previous = old.get(name)
                if previous is not None:
                    self._buckets.retire(previous.rate, entry.rate)
                    self._buckets.retire(previous.tokens, entry.tokens)
            for name, entry in old.items():
                if name not in built:
                    if isinstance(entry.semaphore, Semaphore):  # (a store's is other processes')
                        entry.semaphore.limit = MAX_PERMITS  # no longer a limit: let them in
                    self._buckets.retire(entry.rate, None)
                    self._buckets.retire(entry.tokens, None)
            self._entries = MappingProxyType(built)
            self._leases = {
                n: StoredLease(e, 1, 0, e.policy.timeout)
                if isinstance(e, StoredEntry)
                else Lease(e, 1, 0, e.policy.timeout)
                for n, e in built.items()
            }
            self._config = new
            for section_in_force in put_in_force:
                section_in_force()
            self._generation += 1
        errors = self._bring_followers_up()
        if errors:
            raise _failed_to_apply(errors)
        return new

    def _bring_followers_up(self) -> list[Exception]:
        """Calls ``apply`` of every attached resource behind the configuration in force,
        outside the lock (user code: it may reload, from this thread or another), until none
        is behind; returns the errors raised.

        A resource busy in another thread is left to that thread, which looks again when it
        is done: so a reload that lands during an ``apply`` is applied after it, and each
        resource ends with the configuration in force.
        """
        errors: list[Exception] = []
        while True:
            with self._lock:
                generation = self._generation
                due = [f for f in self._followers if not f.busy and f.applied != generation]
                if not due:
                    return errors
                for follower in due:
                    follower.busy = True
                entries = self._entries
            for follower in due:
                entry = entries.get(follower.name)
                try:
                    follower.resource.apply(None if entry is None else entry.policy)
                except Exception as exc:
                    errors.append(exc)
                finally:
                    with self._lock:
                        follower.busy = False
                        follower.applied = generation  # a failure is not retried until then

    def _load(self, config: Config | Mapping[str, Any] | str | os.PathLike[str] | None) -> Config:
        if isinstance(config, Config):
            return config
        if config is None:
            return self._config.reread()
        if isinstance(config, (str, os.PathLike)):
            # Environment overrides as for the file in force (on by default, like from_file).
            env = self._config.env if self._config.path is not None else True
            return Config.from_file(config, env=env)
        return Config.from_dict(config)

    def _build(
        self, name: str, policy: Policy, old: _Entry | StoredEntry | None, config: Config
    ) -> _Entry | StoredEntry:
        """The objects of one limit, reusing the old ones where the policy did not change them.

        Creates objects but changes none that is in use.
        """

        def own_semaphore() -> Semaphore:
            semaphore = self._semaphores.get(name)
            if semaphore is None:
                semaphore = Semaphore(policy.concurrency or MAX_PERMITS, name=name)
            return semaphore

        if policy.store is not None:
            store = _sections.pending_store(self._sections, policy.store)
            return build_stored(
                name, policy, old, policy.store, store, own_semaphore, config.source
            )
        semaphore = own_semaphore()
        # (bucket, rate, burst) of the requests and the tokens limits in force.
        was: tuple[_Previous, _Previous] = ((None, None, None), (None, None, None))
        if isinstance(old, _Entry):  # (a limit moving out of a store starts anew here)
            was = (
                (old.rate, old.policy.rate, old.policy.burst),
                (old.tokens, old.policy.tokens, old.policy.token_burst),
            )
        try:
            rate = self._buckets.bucket(f"{name}.rate", policy.rate, policy.burst, *was[0])
            tokens = self._buckets.bucket(
                f"{name}.tokens", policy.tokens, policy.token_burst, *was[1]
            )
        except ValueError as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(str(exc), key=f"limits.{name}", source=config.source) from None
        if isinstance(old, _Entry) and old.rate is rate and old.tokens is tokens:
            both = old.both
        else:
            both = AllOf(rate, tokens) if rate is not None and tokens is not None else None
        return _Entry(policy, semaphore, rate, tokens, both)

    def attach(self, name: str, resource: Attachment) -> None:
        """Has ``resource`` follow the limit ``name``: ``resource.apply(policy)`` now and on
        every reload (``None`` once the limit is gone). The hook for connection pools.

        >>> class Pool:
        ...     def apply(self, policy):
        ...         self.size = policy.concurrency if policy else None
        >>> m = ConcurrencyManager.from_dict({"limits": {"rag": {"concurrency": 8}}})
        >>> pool = Pool()
        >>> m.attach("rag", pool)
        >>> pool.size
        8

        ``apply`` runs outside the manager's lock, so it may call the manager, even
        `reload`. If the first ``apply`` raises, ``resource`` is not attached and the error
        propagates. A reload that lands meanwhile is applied next, before this returns
        (errors as for `reload`).
        """
        with self._lock:
            entry = self._entry(name)
            follower = _Follower(name, resource, self._generation)
            follower.busy = True  # reloads leave it to this thread until it is attached
            self._followers.append(follower)
        try:
            resource.apply(entry.policy)
        except BaseException:
            with self._lock:
                self._followers.remove(follower)
            raise
        finally:
            with self._lock:
                follower.busy = False
        errors = self._bring_followers_up()
        if errors:
            raise _failed_to_apply(errors)

    # -- watching the file ------------------------------------------------------------------

    def watch(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        interval: float | str = 1.0,
        on_reload: Callable[[Config], object] | None = None,
        on_error: Callable[[Exception], object] | None = None,
        allow_empty: bool = False,
    ) -> ConfigWatcher:
        """Starts a thread that reloads when the file (default: the configuration's) changes.

        It polls the file's modification time every ``interval`` (seconds or ``"2s"``). A file
        that fails to load is logged (logger ``admission.config``) and passed to
        ``on_error``; the limits in force stay. Stop it with ``watcher.stop()`` or
        `close`; the thread also ends by itself if the manager is garbage collected.
        A file that defines no limits is refused while limits are in force (an empty or
        truncated file must not remove them all) unless ``allow_empty=True``.
        """
        if path is None:
            if self._config.path is None:
                raise ConfigError(
                    f"the configuration was not read from a file ({self._config.source}): "
                    "pass the path to watch"
                )
            path = self._config.path
        env = self._config.env if self._config.path is not None else True
        # Weak: a forgotten watcher must not keep its manager (and itself) alive forever.
        ref = weakref.ref(self)

        def reload(config: Config) -> None:
            manager = ref()
            if manager is not None:
                manager.reload(config)

        def in_force() -> Config | None:
            manager = ref()
            return None if manager is None else manager._config

        watcher = ConfigWatcher(
            reload,
            path,
            in_force=in_force,
            interval=interval,
            env=env,
            on_reload=on_reload,
            on_error=on_error,
            allow_empty=allow_empty,
        )
        self._watchers = [w for w in self._watchers if w.running]
        self._watchers.append(watcher)
        return watcher.start()

    def close(self) -> None:
        """Stops the file watchers. The limits keep working (and the pools: see `aclose`)."""
        for watcher in self._watchers:
            watcher.stop()
        self._watchers.clear()

    def __enter__(self) -> ConcurrencyManager:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"<ConcurrencyManager {', '.join(self._entries) or 'empty'} from {self._config.source}>"
        )
