"""The contract between admission's network stores (PostgreSQL, Redis) and the limiters in them.

A network store decides on the **server**: each decision is one round trip that runs the
whole decision there (one SQL statement, one Redis script) on the server's clock, so clients
whose clocks disagree still agree on the limit. `NetworkStore` is what a store implements;
the limiters built on it (`admission.stores.remote`) own everything else: waiting, giving
back on cancellation, leases' heartbeats, the policy when the store fails, metrics.

Units on the wire are integers: times are microseconds since the Unix epoch on the server's
clock, durations microseconds, none longer than `MAX_SPAN_US` (about 35 years), so that
every time a store computes is exact in a Redis script's doubles and within PostgreSQL's
bigint. A bucket's emission interval is rounded **up** to a whole microsecond, so rounding
never admits more than the configured rate.

The GCRA every store runs, for a bucket of emission interval ``T`` and capacity ``burst``
(``TAT`` is the bucket's theoretical arrival time, absent = in the past)::

    tat = max(TAT, now);  new = tat + cost * T;  allow_at = new - burst * T
    allow_at <= now                  -> admitted now:        TAT = new, wait 0
    allow_at - now <= max_wait       -> admitted at allow_at: TAT = new, wait = allow_at - now
    otherwise                        -> refused: TAT unchanged, wait = allow_at - now

(``max_wait`` < 0, "no bound", and a ``max_wait`` over `MAX_SPAN_US` both mean
`MAX_SPAN_US`: no store grants a longer wait, nor lets a TAT run further ahead.)
`NetworkStore.rate_many` decides a list of such requests on one bucket in one round trip,
one after the other on one reading of the server's clock: each reply is what
`NetworkStore.rate` would have answered for that request made right after the ones before
it. `NetworkStore.rate_batch` does the same for the buckets of one limiter (its keys)
together: one round trip deciding each bucket's requests in their order. The state expires
once ``TAT <= now`` (the bucket is full again): Redis keys get that TTL, PostgreSQL rows
are swept.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Mapping, Sequence
from contextvars import ContextVar
from typing import NamedTuple, cast

__all__ = [
    "MAX_SPAN_US",
    "QUEUE_ENTRY_US",
    "RATE_MANY_MAX",
    "BatchContended",
    "NetworkStore",
    "RateReply",
    "SemaphoreReply",
    "by_bucket",
    "caller_bounds",
    "check_batch",
    "check_bucket",
    "check_lease",
    "check_rate",
    "check_requests",
]

QUEUE_ENTRY_US = 2_000_000
"""How long (µs) a semaphore's queue entry lasts after its waiter last asked, at most (the
lease, if shorter): the limiters' waiters ask again every 50 ms at most, so only a waiter
whose process died (or stalled for this long: it then queues again, at the back) drops out,
and the waiters behind it are held up that long at most, not for a whole lease."""

RATE_MANY_MAX = 1024
"""The most requests one `NetworkStore.rate_many` or `NetworkStore.rate_batch` call decides
(the limiters send at most this many per round trip, the rest in another beside it). Large
enough that a burst of thousands of callers goes as a few round trips, not as one per 64
(a connection each: 10,000 callers at once on a cold pool made 157 round trips side by side,
which queued for connections past the store's timeout and failed nearly all); small enough
that one round trip holds a Redis server for about a millisecond."""


MAX_SPAN_US = 2**50
"""The longest span of time (µs, about 35.7 years) a store takes or grants: a bucket's
capacity in time (``burst * interval_us``, `check_bucket`), a wait (a longer ``max_wait_us``,
or a negative one, "no bound", is decided as this one: `check_rate`), a lease
(`check_lease`). Every time a store then computes is the server's now plus at most three
such spans (a TAT at most a capacity and a wait ahead, plus one request's cost), below
2**53 µs until the year 2148: exact in a Redis script's doubles (past 2**53 they round, and
past 2**63 its ``%d`` wrote -2**63), and far within PostgreSQL's bigint (which would raise
``bigint out of range``). A bucket slower than that is refused with `ValueError` where it is
made; a wait that long is no bound in practice, so it is taken as the longest one instead."""


def check_bucket(interval_us: int, burst: int) -> None:
    """`ValueError` unless ``interval_us`` is an int >= 1 and the bucket's capacity in time,
    ``burst * interval_us``, is at most `MAX_SPAN_US` (also for a give-back: ``burst`` its
    cost)."""
    if type(interval_us) is not int or interval_us < 1:
        raise ValueError(f"interval_us must be an int >= 1, got {interval_us!r}")
    if burst * interval_us > MAX_SPAN_US:
        raise ValueError(
            f"burst x interval_us must be at most {MAX_SPAN_US} µs (about 35 years: what every "
            f"store represents exactly), got {burst} x {interval_us} µs"
        )


def check_rate(interval_us: int, burst: int, cost: int, max_wait_us: int) -> int:
    """The max wait a store decides ``rate``'s request with (`MAX_SPAN_US` for a negative
    one or a longer one); `ValueError` unless ``1 <= cost <= burst``, the bucket passes
    `check_bucket` and ``max_wait_us`` is an int."""
    # The checks inline (every decision's path), the calls that raise only when one fails.
    if type(interval_us) is not int or interval_us < 1 or burst * interval_us > MAX_SPAN_US:
        check_bucket(interval_us, burst)
    if type(cost) is not int or not 1 <= cost <= burst or type(max_wait_us) is not int:
        _bounded_wait(burst, cost, max_wait_us)
    return MAX_SPAN_US if max_wait_us < 0 or max_wait_us > MAX_SPAN_US else max_wait_us


def _bounded_wait(burst: int, cost: int, max_wait_us: int) -> int:
    if type(cost) is not int or not 1 <= cost <= burst:
        raise ValueError(f"cost must be between 1 and burst ({burst}), got {cost!r}")
    if type(max_wait_us) is not int:
        raise ValueError(f"max_wait_us must be an int, got {max_wait_us!r}")
    return MAX_SPAN_US if max_wait_us < 0 or max_wait_us > MAX_SPAN_US else max_wait_us


def check_requests(
    requests: Sequence[tuple[int, int]], interval_us: int, burst: int
) -> list[tuple[int, int]]:
    """``requests`` as a store decides them (each max wait as `check_rate` bounds it);
    `ValueError` unless they are 1 to `RATE_MANY_MAX` ``(cost, max_wait_us)`` pairs that
    `check_rate` accepts (what `NetworkStore.rate_many` accepts)."""
    if not 1 <= len(requests) <= RATE_MANY_MAX:
        raise ValueError(f"rate_many takes 1 to {RATE_MANY_MAX} requests, got {len(requests)}")
    check_bucket(interval_us, burst)
    return [(cost, _bounded_wait(burst, cost, wait)) for cost, wait in requests]


def check_batch(
    requests: Sequence[tuple[bytes | None, int, int]], interval_us: int, burst: int
) -> list[tuple[bytes | None, int, int]]:
    """``requests`` as a store decides them (each max wait as `check_rate` bounds it);
    `ValueError` unless they are 1 to `RATE_MANY_MAX` ``(key, cost, max_wait_us)`` triples
    (``key`` bytes or None) with ``(cost, max_wait_us)`` as `check_requests` wants (what
    `NetworkStore.rate_batch` accepts)."""
    if not 1 <= len(requests) <= RATE_MANY_MAX:
        raise ValueError(f"rate_batch takes 1 to {RATE_MANY_MAX} requests, got {len(requests)}")
    for key, _, _ in requests:
        if key is not None and type(key) is not bytes:
            raise ValueError(f"a key must be bytes or None, got {key!r}")
    check_bucket(interval_us, burst)
    return [(key, cost, _bounded_wait(burst, cost, w)) for key, cost, w in requests]


def check_lease(lease_us: int) -> None:
    """`ValueError` unless ``lease_us`` is an int from 1 to `MAX_SPAN_US`."""
    if type(lease_us) is not int or not 1 <= lease_us <= MAX_SPAN_US:
        raise ValueError(f"lease_us must be an int from 1 to {MAX_SPAN_US}, got {lease_us!r}")


def by_bucket(requests: Sequence[tuple[bytes | None, int, int]]) -> list[bytes | None]:
    """The buckets (keys) of ``requests``, each once, in the one order every store locks or
    reads them in (None, then the keys by their bytes): two batches over overlapping keys
    then never wait for each other in a cycle."""
    keys = {key for key, _, _ in requests}
    return sorted(keys, key=lambda key: (key is not None, key or b""))


class BatchContended(Exception):
    """`NetworkStore.rate_batch` decided nothing: one of its buckets was held by another
    client past a short wait (on PostgreSQL, a row locked by another session for longer
    than a quarter of the store's ``timeout``). Decide the buckets one at a time instead:
    the limiters then send each key's requests as a `NetworkStore.rate_many` call of its
    own, so that only the held bucket's callers wait for it."""


caller_bounds: ContextVar[bool] = ContextVar("admission_store_caller_bounds", default=False)
"""True while a limiter starts a call of a store method (`admission.stores.remote`: read it
before the method's first ``await``, it is set for that first step only). The limiter then
bounds the call at ``timeout`` itself and lets it finish in the background, giving back what
a late reply granted: a store must not also end the call at ``timeout`` (a timer around the
whole call would cancel it just after the limiter's deadline and lose that reply). Its
driver's own bounds on each wait, if it has them, stay, provided they end the wait, not the
task: the call runs in its caller's task, so a bound that cancels the task (``asyncio.timeout``,
and ``asyncio.wait_for`` from Python 3.12 on) is the caller's own cancellation as the limiter
sees it (the call goes on in the background, the caller raises ``CancelledError``). Bound a
wait by the socket's timeout, or by cancelling the future waited on."""


class RateReply(NamedTuple):
    """A store's answer to one GCRA decision (`NetworkStore.rate`)."""

    admitted: bool
    """True: ``cost`` is charged, usable ``wait_us`` after the server's now."""
    wait_us: int
    """Admitted: µs until the charge is due (0 = now). Refused: µs until it would fit."""
    tat_us: int
    """Admitted: the bucket's TAT after this charge, the reservation's identity for
    `NetworkStore.rate_give_back`. Refused: the TAT as it stands (unchanged)."""
    now_us: int
    """The server's clock when it decided (µs since the epoch)."""


class SemaphoreReply(NamedTuple):
    """A store's answer to a semaphore request (`NetworkStore.semaphore_acquire`)."""

    granted: bool
    """True: ``holder`` holds a lease until the server's now + ``lease_us``."""
    fence: int
    """Granted: the fencing token, strictly greater than every token this semaphore granted
    before (across all clients and restarts of the clients). Not granted: 0."""
    in_use: int
    """Valid leases after this decision (this one included when granted)."""
    ahead: int
    """Not granted: waiters queued before ``holder`` (0 when granted or not queued)."""


class NetworkStore(ABC):
    """A store whose limiters live on a server (PostgreSQL, Redis), shared by every process
    of every host that opens a limiter of the same name in it.

    Every method is one round trip, must end within a small multiple of ``timeout`` seconds
    when called directly (a limiter's call is bounded by the limiter: `caller_bounds`), and raises
    `admission.errors.StoreUnavailable` for anything that is the store's fault (connection
    refused or lost, timeout, server error), never the driver's own exception. The limiters
    bound each call at exactly ``timeout`` themselves and let one that outlives it (or whose
    caller is cancelled) finish in the background: a reply may have been applied by the
    server, so whatever it granted is given back when it comes (see `caller_bounds`).

    ``name`` and ``key`` identify a limiter's state: ``name`` its limiter's name (text),
    ``key`` a keyed limiter's key (canonical bytes, see `admission.keyed`) or None.
    """

    timeout: float
    """Seconds a round trip may take before it counts as a failure of the store."""

    @property
    @abstractmethod
    def label(self) -> str:
        """What metrics and errors call this store: a URL or DSN without credentials."""

    @property
    def spread_over_servers(self) -> bool:
        """True when the store keeps its limiters' state on several servers that fail apart
        (a Redis Cluster's nodes): the limiters then ask `server_of` for each round trip
        and keep a breaker per server, so that a dead server fails only the state it
        holds. False (the default): one server, one breaker."""
        return False

    def server_of(self, kind: str, name: str, key: bytes | None) -> Hashable | None:
        """The server holding the state of limiter ``name`` of ``kind`` ("TokenBucket",
        "KeyedTokenBucket", "Semaphore"; ``key``: a keyed limiter's key), or of its
        registration record (``kind`` "register", ``key`` None: `register`), for a store
        `spread_over_servers`; None where it is not known (yet). Called once per round
        trip: it must not block."""
        return None

    @abstractmethod
    async def register(self, kind: str, name: str, config: Mapping[str, float]) -> None:
        """Records limiter ``name`` of ``kind`` ("TokenBucket", "KeyedTokenBucket",
        "Semaphore") with ``config`` at its first use; idempotent. Raises `ValueError` naming
        both configurations if the store already holds another under that kind and name."""

    @abstractmethod
    async def rate(
        self,
        name: str,
        key: bytes | None,
        interval_us: int,
        burst: int,
        cost: int,
        max_wait_us: int,
    ) -> RateReply:
        """One GCRA decision (module docstring) on the server's clock; ``1 <= cost <= burst``."""

    async def rate_many(
        self,
        name: str,
        key: bytes | None,
        interval_us: int,
        burst: int,
        requests: Sequence[tuple[int, int]],
    ) -> list[RateReply]:
        """Decides ``requests`` (``(cost, max_wait_us)`` each, ``1 <= cost <= burst``, at
        most `RATE_MANY_MAX`) on one bucket in their order, on one reading of the server's
        clock: reply ``i`` is `rate`'s for request ``i`` made just after requests ``0..i-1``
        (an admitted one's ``tat_us`` is that charge's own, for `rate_give_back`).

        The limiters call it to send, as one round trip, the decisions of one bucket that
        their callers asked for while another was in flight (`admission.stores.remote`).
        This default makes one `rate` call per request, one after the other (each on its
        own reading of the clock): a store overrides it to make it one round trip."""
        requests = check_requests(requests, interval_us, burst)
        return [await self.rate(name, key, interval_us, burst, c, w) for c, w in requests]

    @property
    def rate_batch_is_one_round_trip(self) -> bool:
        """True when `rate_batch` decides requests on several buckets as one round trip, all
        or nothing (one script, one statement). The limiters send such a batch as one call
        only then; otherwise one `rate_many` per bucket, side by side, each a call of its
        own with its own timeout, so that one bucket's slow or failed round trip fails only
        its own callers. False here (the default `rate_batch` is one call per bucket)."""
        return False

    async def rate_batch(
        self,
        name: str,
        interval_us: int,
        burst: int,
        requests: Sequence[tuple[bytes | None, int, int]],
    ) -> list[RateReply]:
        """Decides ``requests`` (``(key, cost, max_wait_us)`` each, at most `RATE_MANY_MAX`)
        on the buckets of limiter ``name`` (``key`` None: the limiter's own bucket, else a
        key's), buckets that share ``interval_us`` and ``burst``: the requests of each bucket
        in their order, as `rate_many` decides them, each bucket on one reading of the
        server's clock (a store reads it once for all). Reply ``i`` is for request ``i``.

        The limiters call it, on a store whose `rate_batch_is_one_round_trip` is True, to
        send as one round trip the decisions of several keys that their callers asked for
        while another round trip was in flight. This default makes one `rate_many` call per
        bucket, side by side, and raises the first failure once every call has ended: the
        buckets whose calls succeeded keep their charges (a caller of this default that
        gets an error may give them back with `rate_give_back`; the limiters never call it).
        A store's own may raise `BatchContended` (it decided nothing)."""
        requests = check_batch(requests, interval_us, burst)
        buckets = by_bucket(requests)
        calls = [
            self.rate_many(name, key, interval_us, burst, [r[1:] for r in requests if r[0] == key])
            for key in buckets
        ]
        # Tasks now, before the first await: each copies this context (`caller_bounds`).
        # At most RATE_MANY_MAX buckets (check_batch).
        answers = await asyncio.gather(*calls, return_exceptions=True)  # noqa: ADM101
        replies: list[RateReply | None] = [None] * len(requests)
        for key, answer in zip(buckets, answers, strict=True):
            if isinstance(answer, BaseException):
                raise answer
            mine = (i for i, request in enumerate(requests) if request[0] == key)
            for i, reply in zip(mine, answer, strict=True):
                replies[i] = reply
        return cast("list[RateReply]", replies)

    @abstractmethod
    async def rate_give_back(
        self, name: str, key: bytes | None, interval_us: int, cost: int, tat_us: int
    ) -> bool:
        """Undoes an admitted charge whose reply said ``tat_us``, if no charge was made after
        it (the stored TAT still equals ``tat_us``): TAT -= cost * interval. Returns whether it
        did. A later charge keeps its place, so nothing is ever promised twice."""

    @abstractmethod
    async def semaphore_acquire(
        self, name: str, limit: int, holder: str, lease_us: int, queue: bool
    ) -> SemaphoreReply:
        """Grants ``holder`` a lease if the free leases (``limit`` minus the valid ones)
        outnumber the waiters still queued before it: first come, first served per semaphore
        (a newcomer never takes a permit a waiter before it could have), and several waiters
        at the head may be granted at once. Otherwise, with ``queue``,
        puts ``holder`` in the queue (or keeps its place), to expire `QUEUE_ENTRY_US` from
        now (``lease_us`` if shorter): a waiter that stops asking drops out, and says how
        many are ahead. Expired leases and
        queue entries are dropped by the same round trip. Asking again for a holder that
        already holds a lease renews it and returns its fence."""

    @abstractmethod
    async def semaphore_renew(self, name: str, holders: Sequence[str], lease_us: int) -> list[bool]:
        """Extends each holder's lease to the server's now + ``lease_us``; False for a holder
        whose lease had already expired (it is not granted again)."""

    @abstractmethod
    async def semaphore_release(self, name: str, holder: str) -> bool:
        """Ends ``holder``'s lease, or its place in the queue; False if it had neither."""

    @abstractmethod
    async def semaphore_state(self, name: str) -> tuple[int, int]:
        """(valid leases, queued waiters) of semaphore ``name`` now."""

    def when_server_gone(self, forget: Callable[[Hashable], object]) -> None:
        """Has ``forget(server)`` called when a server of a store `spread_over_servers`
        leaves it (a Redis Cluster's node that serves no slot any more): the limiters then
        drop that server's breaker. The default does nothing: its servers never leave."""
        del forget  # one server, which never leaves: nothing will be called

    @property
    def answers_within(self) -> float:
        """Seconds a round trip of this store takes at most as a limiter counts it: its
        ``timeout`` (a slower one fails), or less for a store that knows it answers sooner.
        A semaphore's lease must be a multiple of it (`admission.stores.remote.LEASE_MIN`):
        its heartbeat's renewals are round trips."""
        return self.timeout

    @abstractmethod
    async def aclose(self) -> None:
        """Closes the store's connections (if it made them); idempotent."""
