"""The limits of a `ConcurrencyManager` that live in a store (``[limits.X] store = "NAME"``):
their limiters, made in the store under the names the manager gives a limit's limiters, and
the admission ``manager.limit(name)`` returns for them (`StoredLease`).

A limit in a store has the limiters an in-process limit has, each in the store: its semaphore
``X`` (when its concurrency is bounded; an unbounded one limits nothing, so it stays this
process's own counting semaphore), its requests bucket ``X.rate`` and its tokens bucket
``X.tokens``. Every process that configures the same limit in the same store shares them.

A store holds each limiter with the configuration it was first opened with, and refuses
another under the same name (`ValueError`): that is what makes every process share one limit
rather than each its own. So a reload that changes what the store holds of a limit it keeps
in the same store (its concurrency, rate, burst, tokens, token burst or lease) is refused with
a `ConfigError` saying how to apply it, rather than building limiters the store would refuse;
a limiter added to or removed from a limit, a limit moved into, out of or between stores, and
a store whose table changed (the limit's limiters are then made in the new store) are not.

This module never changes a limiter in use: `build_stored` makes new ones or returns the old ones.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, cast

from admission.concurrency import Semaphore
from admission.durations import Rate
from admission.errors import ConfigError, StoreUnavailable
from admission.lease import Lease
from admission.policies import Policy
from admission.rate import TokenBucket
from admission.stores.network import NetworkStore
from admission.stores.remote import RemoteSemaphore

if TYPE_CHECKING:
    from admission._sections import Store
    from admission.stores.remote import Lease as StoreLease
    from admission.stores.remote import OnStoreError, RemoteTokenBucket
    from admission.stores.shared_memory import SharedSemaphore, SharedTokenBucket

__all__ = ["StoredEntry", "StoredLease", "build_stored"]


def _held(network: bool) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """What a store holds of each of a limit's limiters: the suffix of the limiter's name,
    and the limit's fields that set it (the first: the one without which there is none)."""
    semaphore = ("concurrency", "lease") if network else ("concurrency",)
    return (("", semaphore), (".rate", ("rate", "burst")), (".tokens", ("tokens", "token_burst")))


@dataclass(frozen=True, slots=True)
class StoredEntry:
    """One limit's limiters in a store. Replaced whole on reload, as `admission.lease._Entry`;
    a request keeps the one it started with."""

    policy: Policy
    store_name: str
    """The ``[stores.NAME]`` table."""
    store: Store
    semaphore: Semaphore | SharedSemaphore | RemoteSemaphore
    """In the store; this process's own `Semaphore` when the concurrency is unbounded."""
    rate: SharedTokenBucket | RemoteTokenBucket | None
    tokens: SharedTokenBucket | RemoteTokenBucket | None


def _shown(value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, float):
        return f"{value:g}s"
    return str(value)


def _refuse_changes(
    name: str, old: Policy, new: Policy, store_name: str, network: bool, source: str
) -> None:
    """`ConfigError` if ``new`` changes what the store holds of a limiter that ``old`` and
    ``new`` both have (see the module documentation)."""
    for suffix, fields in _held(network):
        present = fields[0]  # the field without which the limit has no such limiter
        if getattr(old, present) is None or getattr(new, present) is None:
            continue
        for field in fields:
            was, now = getattr(old, field), getattr(new, field)
            if was == now:
                continue
            raise ConfigError(
                f"the limiter {name + suffix!r} is in store {store_name!r} with {field} "
                f"{_shown(was)}, shared by every process that uses the store, which refuses "
                f"another {field} under the same name: a reload cannot make it {_shown(now)}. "
                f"To change it, point [stores.{store_name}] at a new place in the same reload "
                "(shared_memory: name; redis: prefix; postgres: schema), or remove the "
                "limiter from the store and restart every process that uses it",
                key=f"limits.{name}.{field}",
                source=source,
            )


def build_stored(
    name: str,
    policy: Policy,
    old: object,
    store_name: str,
    store: Store,
    own_semaphore: Callable[[], Semaphore],
    source: str,
) -> StoredEntry:
    """The limiters of the limit ``name`` in ``store``: ``old``'s (a `StoredEntry` in the
    same store object) where their settings did not change, else new ones. ``own_semaphore``
    gives this process's semaphore of the limit (for an unbounded concurrency).

    Raises `ConfigError` for a change the store would refuse, and for the store's own
    refusals (a shared-memory segment holding another configuration, or full)."""
    network = isinstance(store, NetworkStore)
    kept = old if isinstance(old, StoredEntry) and old.store is store else None
    if kept is not None:
        _refuse_changes(name, kept.policy, policy, store_name, network, source)

    held = dict(_held(network))
    # A network store's limiters also hold what they do when it fails: new objects (in the
    # same store, under the same names) when that changes.
    options = ("on_store_error", "instances") if network else ()

    def keeps(suffix: str) -> bool:
        """Whether the kept entry's limiter ``name + suffix`` serves ``policy`` as it is."""
        fields = (*held[suffix], *options)
        return kept is not None and all(
            getattr(kept.policy, f) == getattr(policy, f) for f in fields
        )

    try:
        if policy.concurrency is None:
            semaphore: Semaphore | SharedSemaphore | RemoteSemaphore = own_semaphore()
        elif kept is not None and keeps(""):
            semaphore = kept.semaphore
        else:
            semaphore = _semaphore(name, policy, store)
        rate = kept.rate if kept is not None and keeps(".rate") else None
        if rate is None and policy.rate is not None:
            rate = _bucket(f"{name}.rate", policy.rate, policy.burst, policy, store)
        tokens = kept.tokens if kept is not None and keeps(".tokens") else None
        if tokens is None and policy.tokens is not None:
            tokens = _bucket(f"{name}.tokens", policy.tokens, policy.token_burst, policy, store)
    except (ValueError, RuntimeError, OSError) as exc:
        # The store's refusal ("... is in the segment with rate ..."), a full segment.
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(
            f"{exc} (the limit is in store {store_name!r})", key=f"limits.{name}", source=source
        ) from None
    return StoredEntry(policy, store_name, store, semaphore, rate, tokens)


def _semaphore(name: str, policy: Policy, store: Store) -> SharedSemaphore | RemoteSemaphore:
    assert policy.concurrency is not None
    if isinstance(store, NetworkStore):
        return Semaphore(
            policy.concurrency,
            name=name,
            store=store,
            lease=policy.lease,
            on_store_error=cast("OnStoreError", policy.on_store_error),  # (checked)
            instances=policy.instances,
        )
    return Semaphore(policy.concurrency, name=name, store=store)


def _bucket(
    name: str, rate: Rate, burst: int | None, policy: Policy, store: Store
) -> SharedTokenBucket | RemoteTokenBucket:
    if isinstance(store, NetworkStore):
        return TokenBucket(
            rate.count,
            rate.per,
            burst,
            name=name,
            store=store,
            on_store_error=cast("OnStoreError", policy.on_store_error),  # (checked)
            instances=policy.instances,
        )
    return TokenBucket(rate.count, rate.per, burst, name=name, store=store)


class StoredLease(Lease):
    """What ``manager.limit(name)`` returns for a limit in a store: ``async with`` it (or
    ``with``, in a shared-memory store only).

    Entering takes a permit of the store's semaphore, then ``cost`` from the requests bucket
    and ``tokens`` from the tokens bucket, one after the other within the timeout (not all or
    nothing: a request the tokens bucket refuses has spent its request, so the limit admits
    less, never more); leaving gives the permit back. ``as`` binds None: the tokens are
    charged as given (a store's bucket has no reservations to settle afterwards).
    """

    __slots__ = ("_request_cost", "_seconds", "_stored", "_token_cost")

    def __init__(self, entry: StoredEntry, cost: int, tokens: int, timeout: float | None) -> None:
        # Lease's own fields are not set: every method that reads them is overridden.
        self._stored = entry
        self._request_cost = cost
        self._token_cost = tokens
        self._seconds = timeout

    def _charges(self) -> tuple[tuple[SharedTokenBucket | RemoteTokenBucket, int], ...]:
        entry = self._stored
        charges: tuple[tuple[SharedTokenBucket | RemoteTokenBucket, int], ...] = ()
        if entry.rate is not None:
            charges += ((entry.rate, self._request_cost),)
        if entry.tokens is not None and self._token_cost:
            charges += ((entry.tokens, self._token_cost),)
        return charges

    async def __aenter__(self) -> None:
        entry = self._stored
        timeout = self._seconds
        start = time.monotonic()
        held = await entry.semaphore.acquire(1, timeout)
        try:
            for bucket, cost in self._charges():
                left = None if timeout is None else max(0.0, timeout - (time.monotonic() - start))
                await bucket.acquire(cost, left)
        except Exception:
            # Refused (AcquireTimeout, StoreUnavailable): the permit is back before the
            # error reaches the caller.
            semaphore = entry.semaphore
            if isinstance(semaphore, RemoteSemaphore):
                with contextlib.suppress(StoreUnavailable):  # (the lease then expires)
                    await semaphore.release_and_wait(held)
            else:
                semaphore.release(1)
            raise
        except BaseException:  # cancelled: a network store's answer comes in the background
            _give_back(entry.semaphore, held)
            raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        semaphore = self._stored.semaphore
        if isinstance(semaphore, RemoteSemaphore):
            await semaphore.__aexit__(exc_type, exc, tb)  # waits for the store's answer
        else:
            semaphore.release(1)

    def __enter__(self) -> None:
        entry = self._stored
        if isinstance(entry.store, NetworkStore):
            raise TypeError(
                f"the limit {entry.policy.name!r} is in the network store {entry.store_name!r} "
                f"({entry.store.label}): every decision is a network round trip, so it has no "
                f"synchronous admission; use `async with manager.limit({entry.policy.name!r})` "
                "(or move the limit to a shared_memory store, or to none)"
            )
        timeout = self._seconds
        start = time.monotonic()
        entry.semaphore.acquire_blocking(1, timeout)
        try:
            for bucket, cost in self._charges():
                left = None if timeout is None else max(0.0, timeout - (time.monotonic() - start))
                bucket.acquire_blocking(cost, left)
        except BaseException:
            _give_back(entry.semaphore, None)
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _give_back(self._stored.semaphore, None)

    def __repr__(self) -> str:
        entry = self._stored
        return (
            f"<Lease {entry.policy.name!r} in store {entry.store_name!r} timeout={self._seconds!r}>"
        )


def _give_back(
    semaphore: Semaphore | SharedSemaphore | RemoteSemaphore, held: StoreLease | None
) -> None:
    """Releases one permit (``held``: the one a network store's semaphore granted)."""
    if isinstance(semaphore, RemoteSemaphore):
        semaphore.release(held)
    else:
        semaphore.release(1)
