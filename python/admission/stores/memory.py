"""`MemoryStore`: the network-store contract kept in this process's memory, for tests.

It decides exactly as `admission.stores.network` specifies (the reference the PostgreSQL and
Redis stores are tested against), on a server clock you can move by hand, and it can be
made to fail like a dead server: code written against ``adm.stores.Postgres`` or
``adm.stores.Redis`` is tested without a server, and its ``on_store_error`` paths without
stopping one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from admission.errors import StoreUnavailable
from admission.stores.network import (
    QUEUE_ENTRY_US,
    NetworkStore,
    RateReply,
    SemaphoreReply,
    check_batch,
    check_bucket,
    check_lease,
    check_rate,
    check_requests,
)

__all__ = ["MemoryStore"]


@dataclass(slots=True)
class _Semaphore:
    leases: dict[str, int] = field(default_factory=dict)
    """holder -> lease expiry (µs)."""
    queue: dict[str, int] = field(default_factory=dict)
    """holder -> queue entry expiry (µs), in arrival order (dicts keep insertion order)."""
    fence: int = 0


class MemoryStore(NetworkStore):
    """A network store in this process's memory: the contract's reference, for tests.

    >>> import asyncio, admission as adm
    >>> store = adm.stores.MemoryStore()
    >>> bucket = adm.TokenBucket(rate=2, per=1, name="api", store=store)
    >>> asyncio.run(bucket.acquire(timeout=0))
    >>> store.fail()                   # the "server" goes down: decisions raise
    >>> asyncio.run(bucket.acquire(timeout=0))
    Traceback (most recent call last):
    admission.errors.StoreUnavailable: store memory unavailable: failing on purpose (fail())

    ``clock`` is the server's clock in seconds (default `time.time`): a function you control
    makes every decision deterministic. ``latency`` (seconds) delays each answer, as a
    round trip would (and makes a reply losable to cancellation). `fail` makes every call
    raise `StoreUnavailable` until `recover`; ``calls`` counts round trips by method name.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        latency: float = 0.0,
        timeout: float = 0.1,
    ) -> None:
        self.timeout = timeout
        self._clock = clock
        self._latency = latency
        self._failing = False
        self._configs: dict[tuple[str, str], dict[str, float]] = {}
        self._tats: dict[tuple[str, bytes | None], int] = {}
        self._semaphores: dict[str, _Semaphore] = {}
        self.calls: dict[str, int] = {}

    @property
    def label(self) -> str:
        return "memory"

    @property
    def answers_within(self) -> float:
        """Its ``latency``, when shorter than its ``timeout``: a round trip never takes longer
        (so a lease shorter than a real store's minimum is safe here, for fast tests)."""
        return min(self._latency, self.timeout)

    def fail(self) -> None:
        """Every call raises `StoreUnavailable` from now on, until `recover`."""
        self._failing = True

    def recover(self) -> None:
        """Calls are answered again (the state kept while failing is intact)."""
        self._failing = False

    def tat_us(self, name: str, key: bytes | None = None) -> int | None:
        """The stored TAT of a bucket (None: absent, i.e. full), for tests."""
        return self._tats.get((name, key))

    async def _round_trip(self, method: str) -> int:
        self.calls[method] = self.calls.get(method, 0) + 1
        if self._latency:
            await asyncio.sleep(self._latency)
        if self._failing:
            raise StoreUnavailable(self.label, "failing on purpose (fail())")
        return round(self._clock() * 1_000_000)

    async def register(self, kind: str, name: str, config: Mapping[str, float]) -> None:
        await self._round_trip("register")
        known = self._configs.setdefault((kind, name), dict(config))
        if known != dict(config):
            raise ValueError(
                f"{kind} {name!r} is in store {self.label} with {known}, not {dict(config)}"
            )

    async def rate(
        self,
        name: str,
        key: bytes | None,
        interval_us: int,
        burst: int,
        cost: int,
        max_wait_us: int,
    ) -> RateReply:
        max_wait_us = check_rate(interval_us, burst, cost, max_wait_us)
        now = await self._round_trip("rate")
        return self._decide(name, key, interval_us, burst, cost, max_wait_us, now)

    async def rate_many(
        self,
        name: str,
        key: bytes | None,
        interval_us: int,
        burst: int,
        requests: Sequence[tuple[int, int]],
    ) -> list[RateReply]:
        requests = check_requests(requests, interval_us, burst)
        now = await self._round_trip("rate_many")
        return [self._decide(name, key, interval_us, burst, c, w, now) for c, w in requests]

    @property
    def rate_batch_is_one_round_trip(self) -> bool:
        """True: `rate_batch` is one (simulated) round trip, all or nothing."""
        return True

    async def rate_batch(
        self,
        name: str,
        interval_us: int,
        burst: int,
        requests: Sequence[tuple[bytes | None, int, int]],
    ) -> list[RateReply]:
        requests = check_batch(requests, interval_us, burst)
        now = await self._round_trip("rate_batch")
        return [self._decide(name, k, interval_us, burst, c, w, now) for k, c, w in requests]

    def _decide(
        self,
        name: str,
        key: bytes | None,
        interval_us: int,
        burst: int,
        cost: int,
        max_wait_us: int,
        now: int,
    ) -> RateReply:
        stored = self._tats.get((name, key))
        tat = now if stored is None or stored < now else stored
        new = tat + cost * interval_us
        wait = new - burst * interval_us - now
        if wait <= max_wait_us:  # (0 <= max_wait_us <= MAX_SPAN_US: `check_rate`)
            self._tats[(name, key)] = new
            return RateReply(True, max(wait, 0), new, now)
        return RateReply(False, wait, stored if stored is not None else now, now)

    async def rate_give_back(
        self, name: str, key: bytes | None, interval_us: int, cost: int, tat_us: int
    ) -> bool:
        check_bucket(interval_us, cost)
        await self._round_trip("rate_give_back")
        if self._tats.get((name, key)) != tat_us:
            return False
        self._tats[(name, key)] = tat_us - cost * interval_us
        return True

    def _semaphore(self, name: str, now: int) -> _Semaphore:
        s = self._semaphores.setdefault(name, _Semaphore())
        s.leases = {h: t for h, t in s.leases.items() if t > now}
        s.queue = {h: t for h, t in s.queue.items() if t > now}
        return s

    async def semaphore_acquire(
        self, name: str, limit: int, holder: str, lease_us: int, queue: bool
    ) -> SemaphoreReply:
        check_lease(lease_us)
        now = await self._round_trip("semaphore_acquire")
        s = self._semaphore(name, now)
        if holder in s.leases:
            s.leases[holder] = now + lease_us
            return SemaphoreReply(True, s.fence, len(s.leases), 0)
        room = limit - len(s.leases)
        ahead = list(s.queue).index(holder) if holder in s.queue else len(s.queue)
        if ahead < room:
            s.queue.pop(holder, None)
            s.fence += 1
            s.leases[holder] = now + lease_us
            return SemaphoreReply(True, s.fence, len(s.leases), 0)
        if not queue:
            return SemaphoreReply(False, 0, len(s.leases), 0)
        s.queue[holder] = now + min(lease_us, QUEUE_ENTRY_US)
        return SemaphoreReply(False, 0, len(s.leases), ahead)

    async def semaphore_renew(self, name: str, holders: Sequence[str], lease_us: int) -> list[bool]:
        check_lease(lease_us)
        now = await self._round_trip("semaphore_renew")
        s = self._semaphore(name, now)
        renewed = []
        for holder in holders:
            held = holder in s.leases
            if held:
                s.leases[holder] = now + lease_us
            renewed.append(held)
        return renewed

    async def semaphore_release(self, name: str, holder: str) -> bool:
        now = await self._round_trip("semaphore_release")
        s = self._semaphore(name, now)
        return s.leases.pop(holder, None) is not None or s.queue.pop(holder, None) is not None

    async def semaphore_state(self, name: str) -> tuple[int, int]:
        now = await self._round_trip("semaphore_state")
        s = self._semaphore(name, now)
        return len(s.leases), len(s.queue)

    async def aclose(self) -> None:
        pass

    def __repr__(self) -> str:
        return "MemoryStore()"
