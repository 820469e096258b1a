"""Limiters whose state lives in a network store (`admission.stores.network`): every process
of every host that opens a limiter of the same name in the same store shares one limit.

``adm.TokenBucket(..., name=, store=)``, ``adm.KeyedTokenBucket(..., name=, store=)`` and
``adm.Semaphore(limit, name=, store=, lease=)`` return the classes of this module when
``store`` is a network store. The store decides (one round trip, the server's clock); this
module owns the rest:

- Waiting. A request that must wait is charged in the same round trip that finds it must
  wait (the reply says when its turn comes), then sleeps locally: rate limiters never poll.
  A semaphore waiter keeps its place in the store's FIFO queue by asking again (at most
  every ``POLL_MAX`` seconds, sooner at first), which also bounds how late it notices room;
  at most ``limit`` of a process's callers hold or ask at a time, the rest wait in the
  process (`RemoteSemaphore`).
- Cancellation. A round trip runs in a task of its own that a cancellation does not stop:
  the caller's cancellation propagates at once, and when the late reply arrives, whatever it
  granted is given back (a charge whose TAT is still the bucket's is undone; a lease or a
  place in the queue is released). A waiter cancelled while sleeping gives back the same
  way. Nothing is double-booked: a charge made after the cancelled one keeps its place; a
  charge it kept from being undone is kept here and given back with it, when it is
  (`_GiveBacks`).
- Coalescing. While a round trip of a rate limiter is in flight (of any of its keys, for a
  keyed one), the decisions its other callers in this process ask for queue up and go
  together, in their order, as ONE round trip sent when the reply in flight arrives
  (`NetworkStore.rate_many` when they are all on one bucket, `NetworkStore.rate_batch` when
  they are on several keys): under concurrency, one round trip decides many requests, on one
  bucket or on many. Across keys only on a store that decides such a batch in one round
  trip, all or nothing (`NetworkStore.rate_batch_is_one_round_trip`: PostgreSQL, Redis on
  one server); on any other (a Redis Cluster, a store that keeps `NetworkStore`'s
  `rate_batch`) each key has its own round trip in flight and its own queue, so that one
  key's slow or failed round trip fails only its own callers. Alone, a request goes at once,
  as before (no timer, no added latency). Each reply is the one the request would have had
  made right after the ones before it on its bucket. Order: first come, first charged within
  a process (more than `RATE_MANY_MAX` queued at once go as that many a round trip, side by
  side: in order within each, in no set order between them); across processes, round trips
  are decided in the order they reach the server (a batch's requests one after the other),
  as without coalescing. One round trip of a limiter (of a key, on such another store) is in
  flight at a time (its queue goes when it returns): on this 2-core host, two or three at a
  time were not reliably faster (benches/RESULTS.md, store17d), and one keeps a bucket's
  decisions in the order they were asked for. Time: a queued decision waits for at most the
  round trip in flight (bounded by the store's ``timeout``: past it, the queue goes at once)
  and then one round trip of its own, bounded by the ``timeout`` from when it is sent: at
  most twice the ``timeout`` of waiting in all (the loop's busy time discounted, see
  "Failure": up to 20 times the ``timeout`` by the clock; 2.25 times where a batch over
  keys ends early in `BatchContended` and its keys go again each on its own; more than
  `BATCHES_AT_ONCE` x `RATE_MANY_MAX` queued at once also wait for the round trips sent
  before theirs), and it never fails where the same round trip alone would have
  succeeded. A caller cancelled in the turn its reply is delivered gives its charge back.
- Failure. Each round trip returns or raises within the store's ``timeout`` of waiting (the
  loop thread's busy time meanwhile discounted, its wait for a CPU included, up to
  `BUSY_LOOP_GRACE` timeouts in all: a busy loop cannot read a reply sent in time, see
  `_Deadlines`). A breaker per
  store (`admission.CircuitBreaker`, named ``store <label>``; per server of a store
  `NetworkStore.spread_over_servers`, a Redis Cluster's node: ``store <label> <node>``, so
  that a dead node fails only the state it holds) opens after repeated failures,
  so a dead store costs microseconds, not a timeout per call; then each limiter does what
  its ``on_store_error`` says: ``"closed"`` raises `StoreUnavailable`, ``"open"`` admits,
  ``"local"`` falls back to an in-process limiter of the rate (or limit) divided by
  ``instances``. Counted in ``admission_store_errors_total{store,limiter}``.

Network stores' drivers (asyncpg, redis-py) are asyncio-only: so are these limiters (uvloop
included); on trio, ``acquire`` raises `RuntimeError`. Their synchronous methods
(``try_acquire``, ``acquire_blocking``, ``with``) raise `TypeError`: a network round trip
must not block a thread that may be an event loop's, and a ``try_acquire`` that returned a
coroutine would always be true.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import copy
import math
import os
import socket
import time
import uuid
import weakref
from collections.abc import (
    Awaitable,
    Callable,
    Coroutine,
    Generator,
    Hashable,
    Iterator,
    Sequence,
)
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, cast, final

from admission import _backend, _native, durations
from admission._validate import timeout_seconds
from admission.breaker import CircuitBreaker
from admission.errors import AcquireTimeout, CapacityError, StoreUnavailable
from admission.stats import LimiterStats, SemaphoreStats, WaitHistogram
from admission.stores.network import (
    MAX_SPAN_US,
    RATE_MANY_MAX,
    BatchContended,
    NetworkStore,
    RateReply,
    SemaphoreReply,
    caller_bounds,
)

if TYPE_CHECKING:
    from admission.metrics import Family

#: A key of a keyed limiter: as `admission.keyed.Key` (not imported: the limiter modules
#: import this one, never the reverse).
Key = str | bytes | int

#: Makes the in-process limiter a limiter falls back to under ``on_store_error="local"``
#: (rate, per, burst -> bucket; limit -> semaphore), or a semaphore's gate (limit -> an
#: in-process semaphore that metrics do not list): given by the module of the in-process
#: class, which imports this one (never the reverse).
LocalFactory = Callable[..., Any]

__all__ = [
    "BATCHES_AT_ONCE",
    "BUSY_LOOP_GRACE",
    "LEASE_MIN_ROUND_TRIPS",
    "POLL_MAX",
    "Lease",
    "OnStoreError",
    "RemoteKeyedTokenBucket",
    "RemoteSemaphore",
    "RemoteTokenBucket",
]

T = TypeVar("T")

OnStoreError = Literal["closed", "open", "local"]
"""What a limiter does when its store fails: raise, admit, or limit in-process."""

#: A semaphore waiter's longest wait between two requests to the store: the bound on how
#: late it notices a released permit (it starts at 2 ms and doubles up to this).
POLL_MAX = 0.05
_POLL_MIN = 0.002

LEASE_MIN_ROUND_TRIPS = 6
"""A semaphore's ``lease`` must be at least this many of its store's round trips
(`NetworkStore.answers_within`: the store's ``timeout``; a `MemoryStore`'s latency), or the
heartbeat cannot keep it: it renews every third of the lease, and from one renewal reaching
the store to the next there is that third plus two round trips (the heartbeat sleeps once
the previous renewal's reply is in, then sends the next one), so a lease of 3 round trips
or less expires while held, and another client takes the permit: more than ``limit``
holders at once. At 6, each renewal lands at least a third of the lease (2 round trips)
before expiry: the margin for the event loop's lag (a heartbeat that wakes late). A lease
of 9 round trips or more also outlives one failed renewal (retried at the next beat) when
the loop is not lagging; the default, 30 s, is 300 of the default 100 ms timeout."""

_HOST = socket.gethostname()


def _require_asyncio(what: str) -> None:
    if _backend.on_trio():
        raise RuntimeError(
            f"{what} is in a network store, whose drivers (asyncpg, redis-py) run on asyncio "
            "only: use it from asyncio or uvloop (or anyio on its asyncio backend)"
        )


def _timeout(timeout: float | str | None) -> float | None:
    """``timeout`` in seconds, None for no limit (None or infinity): `timeout_seconds`, with
    a plain number taken as it is (the common case, checked in a third of the time)."""
    kind = type(timeout)
    if (kind is float or kind is int) and 0 <= timeout <= 1e15:  # type: ignore[operator]
        return float(timeout)  # type: ignore[arg-type]
    seconds = timeout_seconds(timeout)
    return None if seconds is None or math.isinf(seconds) else seconds


def _storable(name: str) -> bool:
    """Whether every store can hold ``name`` as text: UTF-8 (no lone surrogate) and no NUL,
    which PostgreSQL's text refuses."""
    try:
        name.encode()
    except UnicodeEncodeError:
        return False
    return "\x00" not in name


def _sync_refused(what: str) -> TypeError:
    return TypeError(
        f"{what} is in a network store: every decision is a network round trip, so it has "
        "no synchronous methods; use `await limiter.acquire(timeout=0)` for an immediate "
        "answer (AcquireTimeout when refused), and `async with`"
    )


def network_options(kind: str, given: dict[str, Any], *allowed: str) -> dict[str, Any]:
    """``given`` (a constructor's options for network stores) if they are all ``allowed``;
    `TypeError` naming the first that is not (or that needs a network store)."""
    for option in given:
        if option not in allowed:
            hint = (
                " (an option of limiters in a network store: adm.stores.Postgres, Redis)"
                if option in ("on_store_error", "instances", "batch", "lease")
                else ""
            )
            raise TypeError(f"{kind}.__new__() got an unexpected keyword argument {option!r}{hint}")
    return given


# -- the store's breaker, shared by its limiters ---------------------------------------------

_breakers: weakref.WeakKeyDictionary[NetworkStore, dict[Hashable | None, CircuitBreaker]] = (
    weakref.WeakKeyDictionary()
)


def store_breaker(store: NetworkStore, server: Hashable | None = None) -> CircuitBreaker:
    """The breaker of ``store``'s round trips (made at first use, shared by its limiters),
    or of those to one of its ``server``s (`NetworkStore.server_of`): half of the last 20
    round trips failed (judged once 5 were made), and it opens for 1 s, doubling up to 30 s
    while the store stays down; one probe at a time when half-open."""
    by_server = _breakers.get(store)
    if by_server is None:
        by_server = _breakers[store] = {}
        # A server that left the store (a cluster's node gone) takes its breaker along.
        store.when_server_gone(lambda gone: by_server.pop(gone, None))
    breaker = by_server.get(server)
    if breaker is None:
        label = f"store {store.label}" if server is None else f"store {store.label} {server}"
        breaker = CircuitBreaker(
            label,
            failure_rate=0.5,
            window=20,
            min_calls=5,
            open_for=1.0,
            open_for_max=30.0,
            half_open_calls=1,
        )
        by_server[server] = breaker
    return breaker


def _refusal(store: NetworkStore, breaker: CircuitBreaker) -> StoreUnavailable:
    return StoreUnavailable(
        store.label,
        f"the breaker {breaker.name!r} is open after repeated failures "
        f"(next try in {breaker.retry_after:.3f} s)",
    )


# -- round trips that a cancellation does not lose -------------------------------------------


@final
class _Guarded(Generic[T]):
    """Awaits a store call (a coroutine) so that a cancellation of the caller never reaches
    it: the cancellation propagates at once, the call runs on in a task of its own, and
    ``on_late_reply`` gets its reply (the server may have applied it: the caller gives back
    what it granted). With ``timeout``, the caller gets ``expired()`` (a
    `StoreUnavailable`) once that many seconds have passed, and the call runs on the same
    way: a reply that comes late is given back, not lost, and the driver is not interrupted
    mid-reply (which would cost it the connection).

    `asyncio.shield` would do the same with a task per call, and `asyncio.timeout` the
    deadline with a context manager and a cancellation; this drives the call in the caller's
    own task instead, handing the task a `_Waiter` of its own to wait on for each future the
    call waits on (woken by it, or by the deadline's timer), so a cancellation cancels that
    one and not the driver's. Measured against asyncpg on loopback: about a third of the
    client CPU a task and a shield add per round trip.
    """

    __slots__ = (
        "_call",
        "_cancels_the_call",
        "_expired",
        "_on_late_reply",
        "_pending",
        "_protect",
        "_timed_out",
        "_timeout",
        "_waiting",
    )

    def __init__(
        self,
        call: Coroutine[Any, Any, T],
        on_late_reply: Callable[[T], object],
        pending: asyncio.Future[Any] | None = None,
        protect: bool = True,
        timeout: float | None = None,
        expired: Callable[[], BaseException] | None = None,
        *,
        cancels_the_call: bool = False,
    ) -> None:
        self._call = call
        self._on_late_reply = on_late_reply
        self._pending = pending  # a future the call already waits on (a call taken over)
        self._protect = protect
        # A task of the limiter's own (a give-back, a registration), not a caller's: its
        # cancellation (its loop shutting down) cancels the call too, never hands it to a
        # task made then, which the loop, closing, would leave pending for good.
        self._cancels_the_call = cancels_the_call
        self._timeout = timeout
        self._expired = expired
        self._timed_out = False
        self._waiting: _Waiter | None = None  # what the caller's task waits on

    def __await__(self) -> Generator[Any, None, T]:
        call, pending = self._call, self._pending
        # A call taken over waits for its future through this task first, even when it is
        # done: it may have completed in this very turn, its callbacks scheduled but not
        # run, and the driver must not resume before them (`_expire`): sock_connect's
        # removes its writer in one; resumed first, the driver closed the socket, another
        # took its descriptor, and that callback then removed the new socket's writer, so
        # its connection (to a healthy server) never completed.
        handed_over = pending is not None
        error: BaseException | None = None
        watched: list[Any] | None = None  # its entry in the loop's `_Deadlines`
        # The store learns in the call's first step that this guard bounds it.
        bounds = self._timeout is not None and self._protect and pending is None
        token = caller_bounds.set(True) if bounds else None
        try:
            while True:
                if pending is None or (pending.done() and not handed_over):
                    try:
                        pending = call.send(None) if error is None else call.throw(error)
                    except StopIteration as stop:
                        return cast(T, stop.value)
                    finally:
                        if token is not None:
                            caller_bounds.reset(token)
                            token = None
                    error = None
                    if pending is None:  # a bare yield (a `sleep(0)`): the task runs it
                        try:
                            yield None
                        except asyncio.CancelledError as e:
                            if not self._protect or self._cancels_the_call:
                                error = e  # the driver is cancelled, and cleans up now
                                continue
                            self._take_over(None)
                            raise
                        except GeneratorExit:
                            call.close()  # (see below)
                            raise
                        except BaseException as e:
                            error = e
                        continue
                    # As a task does with a future it is handed (else awaiting it again fails).
                    pending._asyncio_future_blocking = False
                handed_over = False
                if self._past_deadline(pending):  # it passed while the call went on
                    raise self._give_up(pending)
                wait_on: asyncio.Future[Any] | _Waiter = pending
                if self._protect:
                    loop = pending.get_loop()
                    wait_on = self._waiting = _Waiter(loop)
                    pending.add_done_callback(wait_on.wake)
                    if watched is None and self._timeout is not None:
                        watched = _deadlines(loop, self._timeout).watch(self)
                wait_on._asyncio_future_blocking = True
                try:
                    yield wait_on
                except asyncio.CancelledError as e:
                    if not self._protect or self._cancels_the_call:
                        # The driver is cancelled at once, and cleans up now, in the loop
                        # (else only when the garbage collector closes it, maybe after the
                        # loop is gone).
                        pending, error = None, e
                        continue
                    self._take_over(pending)
                    raise
                except GeneratorExit:
                    # Destroyed with its task (a loop closed with it in flight): the driver
                    # is closed with it, not thrown into (the collector may have closed it
                    # first: "cannot reuse already awaited coroutine").
                    call.close()
                    raise
                except BaseException as e:
                    if not pending.done():
                        # Not the driver's future's own error (that one the driver reads
                        # from its future) but the task's (a future of another loop, say):
                        # thrown into the driver now. Held until the future completes, the
                        # task was handed the same wait again, and threw again, forever.
                        pending, error = None, e
                        continue
                if self._past_deadline(pending):
                    raise self._give_up(pending)
        finally:
            if watched is not None:
                watched[1] = None  # ended: its deadline no longer concerns it

    def _past_deadline(self, pending: asyncio.Future[Any]) -> bool:
        # A method: `_expire` sets the flag between two reads (type checkers would narrow it).
        return self._timed_out and not pending.done()

    def _give_up(self, pending: asyncio.Future[Any]) -> BaseException:
        """The call goes on without the caller, who gets the deadline's error."""
        self._take_over(pending)
        assert self._expired is not None
        return self._expired()

    def _expire(self) -> None:
        """Its deadline passed (called by `_Deadlines`): the caller is woken by a callback
        of its own, not now. The driver's future may have completed in this very turn, its
        callbacks scheduled but not run: a caller resumed now would resume the driver
        before them, which asyncio's own code does not expect (sock_connect's callback
        then fails on the transport made meanwhile). Nor does a caller start its next call
        inside `_Deadlines._fire` then (which keeps one timer all the same)."""
        self._timed_out = True
        waiting = self._waiting
        if waiting is not None:
            waiting.get_loop().call_soon(waiting.wake, None)

    def _take_over(self, pending: asyncio.Future[Any] | None) -> None:
        _keep(
            _finish(_Guarded(self._call, self._on_late_reply, pending, False), self._on_late_reply)
        )


def _ignore(reply: object) -> None:
    """The late reply of a call that granted nothing (a state read, a renewal, a release)."""


#: The most round trips of queued decisions one lane of a rate limiter (module docstring,
#: "Coalescing") sends side by side: more queued than this many times `RATE_MANY_MAX` go
#: when those return. A server decides them on its own cores, each round trip under the
#: store's timeout: 20 batches of 1,024 new keys at once took PostgreSQL past it on this
#: 2-core host (15,903 of 20,000 callers failed, the breaker opened), 4 at a time did not.
BATCHES_AT_ONCE = 4

#: A round trip's deadline counts only the time its loop's thread spent waiting: the thread's
#: own work meanwhile (its CPU time: thousands of callers resumed at once, the replies of
#: other round trips parsed), and its time kept off a CPU by other processes while it had
#: work, is time in which it could not have read the reply, however soon the store sent it,
#: so the deadline moves on by that much. Never past this many times the timeout from the
#: start: a loop kept busy for ever still fails a dead store's calls.
BUSY_LOOP_GRACE = 10


def _time_on_or_waiting_for_a_cpu() -> float:
    """The calling thread's time running on a CPU plus its time runnable in the run queue
    waiting for one, in seconds (Linux's ``schedstat``). The wait counts: with two
    CPU-bound processes beside them on 2 cores, 4,096 of 20,000 callers of a bucket on
    PostgreSQL failed "no answer within 0.1 s", their round trips' time nearly all the loop
    thread's CPU time and run-queue wait (replies the server sent in time, read late). A
    read of a /proc file by bare system calls (6.3 µs here, against 10.4 through ``open()``
    and 0.6 for ``time.thread_time``), at most 16 times per timeout by `_Deadlines`, not
    per call: about 0.1 % of a loop thread that does nothing but decide (151 reads a second
    at the default timeout)."""
    fd = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
    try:
        on_cpu_ns, run_queue_ns = os.read(fd, 128).split()[:2]
    finally:
        os.close(fd)
    return (int(on_cpu_ns) + int(run_queue_ns)) / 1e9


def _busy_time_reader() -> Callable[[], float]:
    """`_time_on_or_waiting_for_a_cpu` where it can be read (Linux), else the thread's CPU
    time: chosen once, as a deadline's two readings must come from the same clock."""
    try:
        _time_on_or_waiting_for_a_cpu()
    except (OSError, ValueError):
        return time.thread_time
    return _time_on_or_waiting_for_a_cpu


#: The loop thread's busy time, in seconds (tests on a virtual clock replace it).
_busy_time: Callable[[], float] = _busy_time_reader()


@final
class _Deadlines:
    """The deadlines of the `_Guarded` calls of one loop that share one timeout, under one
    timer: a call's deadline is its start plus that timeout, so the calls' deadlines come
    in the order the calls start, and a queue in that order with a timer at its head's
    deadline watches them all. A call costs an append and, when it ends, the clearing of
    its entry, where a timer of its own (`loop.call_later`, then its `cancel`) cost three
    times as much; the timer fires about once per timeout while calls go on, and drops the
    entries of ended calls (a call's start drops those at the head too, so the queue stays
    about as long as the calls in flight).

    A call expires once it has waited ``timeout`` while its loop's thread was not busy
    (`BUSY_LOOP_GRACE`): at its deadline, the thread's busy time since the call started
    (read from a mark taken at most a sixteenth of the timeout before the start: a
    syscall of half a microsecond, not one per call) moves it on by as much, and the timer
    fires again then; at the latest ``BUSY_LOOP_GRACE`` timeouts after the start. Each is
    exact to that sixteenth, and in the entries' order within it (a later start has a later
    deadline, and at most as much busy time since), so the timer watches the head only.

    One timer at a time: a call watched while the timer's callback runs (its caller woken
    there) must not schedule a second one (each timer expires what is due at its own time,
    never at another's). `_Guarded._expire` wakes a caller in a callback of its own, after
    this one, for that reason among others.
    """

    __slots__ = ("_busy_at_mark", "_entries", "_next_mark", "_timer", "loop", "timeout")

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self.loop = loop
        self.timeout = timeout
        self._entries: collections.deque[list[Any]] = collections.deque()
        self._timer: asyncio.TimerHandle | None = None
        self._busy_at_mark = 0.0  # the busy time read last
        self._next_mark = -math.inf  # the loop time past which it is read again

    def watch(self, call: _Guarded[Any]) -> list[Any]:
        """Calls ``call._expire()`` once the timeout has passed, unless the entry returned
        (``[deadline, call, busy time at its mark]``) has had its call cleared first."""
        entries = self._entries
        while entries and entries[0][1] is None:
            entries.popleft()
        now = self.loop.time()
        if now > self._next_mark:
            self._next_mark = now + self.timeout / 16
            self._busy_at_mark = _busy_time()
        deadline = now + self.timeout
        entry: list[Any] = [deadline, call, self._busy_at_mark]
        entries.append(entry)
        if self._timer is None:
            self._schedule(deadline)
        return entry

    def _schedule(self, at: float) -> None:
        self._timer = self.loop.call_at(at, self._fire, at)

    def _fire(self, at: float) -> None:
        entries = self._entries
        # The loop runs a timer up to its clock's resolution early: what was due then is due.
        now = max(self.loop.time(), at)
        busy = self._busy_at_mark = _busy_time()
        self._next_mark = now + self.timeout / 16
        next_at = None
        try:
            while entries:
                deadline, call, busy_then = entries[0]
                if call is not None:
                    if deadline > now:
                        next_at = deadline
                        break
                    due = min(
                        deadline + (busy - busy_then),
                        deadline + (BUSY_LOOP_GRACE - 1) * self.timeout,
                    )
                    # Within the marks' sixteenth it is due: each firing moves on by at
                    # least that, not by the sliver of busy time the last one took.
                    if due > now + self.timeout / 16:
                        next_at = due
                        break
                entries.popleft()
                if call is not None:
                    call._expire()  # (wakes its caller in a callback of its own)
        finally:
            # Set until now (a call watched meanwhile scheduled none): the next one.
            self._timer = None
            if entries:
                self._schedule(entries[0][0] if next_at is None else next_at)


_deadlines_by_loop: dict[tuple[asyncio.AbstractEventLoop, float], _Deadlines] = {}
_last_deadlines: _Deadlines | None = None


def _deadlines(loop: asyncio.AbstractEventLoop, timeout: float) -> _Deadlines:
    """The `_Deadlines` of ``loop`` for ``timeout`` (the last one used is found first)."""
    global _last_deadlines
    last = _last_deadlines
    if last is not None and last.loop is loop and last.timeout == timeout:
        return last
    found = _deadlines_by_loop.get((loop, timeout))
    if found is None:
        # (A copy of the keys first: another thread's loop may add one meanwhile.)
        for key in [key for key in list(_deadlines_by_loop) if key[0].is_closed()]:
            _deadlines_by_loop.pop(key, None)  # its loop is gone, and its calls with it
        found = _deadlines_by_loop[(loop, timeout)] = _Deadlines(loop, timeout)
    _last_deadlines = found
    return found


@final
class _Waiter:
    """What a `_Guarded` call hands the caller's task to wait on in place of a future the
    driver awaits: a cancellation of the task cancels this one, never the driver's.

    It speaks the protocol a task has with a future it is handed (the ``Task.__step`` /
    ``task_step_impl`` of CPython, which uvloop's loops run too): the task reads
    ``_asyncio_future_blocking`` and `get_loop`, registers its wake-up with
    `add_done_callback` (in its own context), and on waking calls `result`, which raises
    into it if the waiter was cancelled. Unlike an `asyncio.Future`, whose callbacks run in
    a later turn of the loop (``call_soon``), `wake` calls them at once: it runs from the
    driver's future's own callback (or a callback the deadline schedules), in a turn of the
    loop that no task is running, so the caller's task resumes in that same turn rather
    than the next. A `cancel` schedules them (``call_soon``), as a future's does: it is called from
    inside a running task or callback, where resuming another task is not allowed.
    """

    __slots__ = (
        "_asyncio_future_blocking",
        "_cancel_message",
        "_context",
        "_fn",
        "_loop",
        "_more",
        "_state",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._asyncio_future_blocking = False
        self._state = 0  # 0 waiting, 1 woken, 2 cancelled
        # The callback (the task's wake-up: the only one a task adds) and its context; any
        # others in `_more`.
        self._fn: Callable[[_Waiter], object] | None = None
        self._context: Any = None
        self._more: list[tuple[Callable[[_Waiter], object], Any]] | None = None
        self._cancel_message: object = None

    def get_loop(self) -> asyncio.AbstractEventLoop:
        """The loop it belongs to (the driver's future's)."""
        return self._loop

    def wake(self, _: object) -> None:
        """Done: the driver's future completed (its argument) or the deadline passed; runs
        the callbacks now, each in the context it was added with."""
        if self._state:
            return
        self._state = 1
        fn, context, more = self._fn, self._context, self._more
        self._fn = self._context = self._more = None  # no cycle through the task
        if fn is not None:
            if context is None:
                fn(self)
            else:
                context.run(fn, self)
        for fn, context in more or ():
            if context is None:
                fn(self)
            else:
                context.run(fn, self)

    def cancel(self, msg: object = None) -> bool:
        """Cancels the wait (never the driver's future); False if already done."""
        if self._state:
            return False
        self._state = 2
        self._cancel_message = msg
        callbacks = [(self._fn, self._context), *(self._more or ())]
        self._fn = self._context = self._more = None
        for fn, context in callbacks:
            if fn is not None:
                self._loop.call_soon(fn, self, context=context)
        return True

    def add_done_callback(self, fn: Callable[[_Waiter], object], *, context: Any = None) -> None:
        """Calls ``fn(self)`` once done (soon, if it already is)."""
        if self._state:
            self._loop.call_soon(fn, self, context=context)
        elif self._fn is None and self._more is None:
            self._fn, self._context = fn, context
        else:
            self._more = [*(self._more or ()), (fn, context)]

    def remove_done_callback(self, fn: Callable[[_Waiter], object]) -> int:
        """Forgets every registration of ``fn``; how many there were."""
        removed = 0
        if self._fn is not None and self._fn == fn:
            self._fn = self._context = None
            removed = 1
        if self._more:
            kept = [entry for entry in self._more if entry[0] != fn]
            removed += len(self._more) - len(kept)
            self._more = kept
        return removed

    def cancelled(self) -> bool:
        """Whether `cancel` ended it."""
        return self._state == 2

    def done(self) -> bool:
        """Whether it was woken or cancelled."""
        return self._state != 0

    def result(self) -> None:
        """None once woken; raises `asyncio.CancelledError` if cancelled."""
        if self._state == 2:
            message = self._cancel_message
            raise asyncio.CancelledError() if message is None else asyncio.CancelledError(message)
        if self._state == 0:
            raise asyncio.InvalidStateError("the wait is not over")

    def exception(self) -> BaseException | None:
        """None once woken; raises as `result` does otherwise."""
        self.result()
        return None


#: Seconds a call taken over in the background (its caller gone, or past its deadline) may
#: still take before it is cancelled: its late reply is given back until then. The stores'
#: own clients end it sooner (their drivers bound each wait); this bounds a given one.
LATE_REPLY_WITHIN = 10.0


async def _finish(call: _Guarded[Any], on_late_reply: Callable[[Any], object]) -> None:
    # Its own timer rather than `asyncio.wait_for`, which ran the call in a task of its own:
    # two tasks per call taken over, both left pending by a loop that closes meanwhile.
    task = asyncio.current_task()
    assert task is not None
    timer = asyncio.get_running_loop().call_later(LATE_REPLY_WITHIN, task.cancel)
    try:
        reply = await call
    except (Exception, asyncio.CancelledError):
        # Failed: it granted nothing (or no answer: a charge stays, admits less). Cancelled:
        # past LATE_REPLY_WITHIN, or its loop shuts down; this task is the call's own, no
        # caller waits on it to see the cancellation.
        return
    finally:
        timer.cancel()
    on_late_reply(reply)


_background: set[asyncio.Task[Any]] = set()


def _in_background(call: Awaitable[Any]) -> None:
    """Runs a give-back round trip to its end whatever happens to the caller; a failure is
    ignored (a charge not given back only admits less; a lease not released expires)."""
    _keep(_quietly(call))


def _keep(call: Coroutine[Any, Any, None]) -> None:
    """Runs ``call`` in a task referenced until it ends (the loop keeps only weak ones).
    The tasks of loops closed before they ended (they never will) are dropped whenever the
    set has doubled since the last look: amortised, a constant per task."""
    global _look_again_at
    task = asyncio.ensure_future(call)
    # A loop that closes first leaves it pending (`asyncio.run` cancels only the tasks there
    # were when it began to shut down, and a caller cancelled then hands its call over to a
    # new one): the outcome these calls are made to accept, so no "Task was destroyed but
    # it is pending!" error when it is collected (as `run_until_complete` does for its own).
    with contextlib.suppress(AttributeError):  # (a task factory's own kind may lack it)
        task._log_destroy_pending = False  # type: ignore[attr-defined]
    if len(_background) >= _look_again_at:
        for stale in [t for t in _background if t.get_loop().is_closed()]:
            _background.discard(stale)
        _look_again_at = 2 * len(_background) + 64
    _background.add(task)
    task.add_done_callback(_background.discard)


_look_again_at = 64


async def _quietly(call: Awaitable[Any]) -> None:
    with contextlib.suppress(Exception):  # see _in_background: a failure just expires
        await call


# -- coalescing: the decisions asked for while one is in flight go as one round trip --------


@final
class _Request:
    """A decision queued behind the one in flight (its caller awaits ``future``)."""

    __slots__ = ("cost", "future", "key", "max_wait_us")

    def __init__(
        self, key: bytes | None, cost: int, max_wait_us: int, future: asyncio.Future[RateReply]
    ) -> None:
        self.key = key
        self.cost = cost
        self.max_wait_us = max_wait_us
        self.future = future


class _TheirFailure(Exception):
    """A round trip shared with other callers (a limiter's registration) failed: the first
    of them to learn it counts the failure on the store's breaker, once; this caller (one
    of the others) raises ``error``."""

    def __init__(self, error: Exception) -> None:
        super().__init__(error)
        self.error = error


def _own_error(error: Exception) -> Exception:
    """The error a caller of a failed batch gets: one of its own (each is raised in its own
    task, with its own traceback), caused by the round trip's."""
    if isinstance(error, StoreUnavailable):
        own: Exception = StoreUnavailable(error.store, error.reason)
    else:
        try:
            own = copy.copy(error)
        except Exception:
            return error  # cannot be copied: shared, as it is
    own.__cause__ = error
    return own


@final
class _Lane:
    """A limiter's decisions in this process (every key's): whether one of its round trips
    is in flight, and the decisions waiting to go together in the next one."""

    __slots__ = ("busy", "queued")

    def __init__(self) -> None:
        self.busy = False
        self.queued: collections.deque[_Request] = collections.deque()


# -- counters and metrics ------------------------------------------------------------------


class _Counts:
    """This process's counters of a limiter in a network store (the store keeps none)."""

    __slots__ = (
        "admitted",
        "admitted_cost",
        "cancelled",
        "fallbacks",
        "rejected",
        "store_errors",
        "timed_out",
        "waiting",
    )

    def __init__(self) -> None:
        self.admitted = self.admitted_cost = self.rejected = self.timed_out = 0
        self.cancelled = self.waiting = self.store_errors = self.fallbacks = 0


_limiters: weakref.WeakSet[_Remote] = weakref.WeakSet()
_remove_source: Callable[[], None] | None = None


def _track(limiter: _Remote) -> None:
    global _remove_source
    _limiters.add(limiter)
    if _remove_source is None:
        from admission import metrics

        _remove_source = metrics.add_source(_families)


def _families() -> Iterator[Family]:
    from admission.metrics import Family, Sample

    limiters = list(_limiters)

    def labels(limiter: _Remote, **extra: str) -> dict[str, str]:
        return {"store": limiter.store.label, "limiter": limiter.name, **extra}

    outcomes = (
        ("admitted", "admitted"),
        ("rejected", "rejected"),
        ("timeout", "timed_out"),
        ("cancelled", "cancelled"),
    )
    yield Family(
        "admission_store_errors",
        "counter",
        "Round trips to a network store that failed or were refused by its open breaker.",
        tuple(Sample(labels(s), float(s._counts.store_errors)) for s in limiters),
    )
    yield Family(
        "admission_store_fallbacks",
        "counter",
        "Requests decided without the store (on_store_error 'open' or 'local'), by mode.",
        tuple(
            Sample(labels(s, mode=s.on_store_error), float(s._counts.fallbacks))
            for s in limiters
            if s.on_store_error != "closed"
        ),
    )
    yield Family(
        "admission_store_acquisitions",
        "counter",
        "Requests to limiters in network stores made by this process, by outcome.",
        tuple(
            Sample(labels(s, outcome=outcome), float(getattr(s._counts, field)))
            for s in limiters
            for outcome, field in outcomes
        ),
    )


class _Remote:
    """What every limiter in a network store has: its store, name, policy and counters."""

    __slots__ = (
        "__weakref__",
        "_breaker",
        "_counts",
        "_registered",
        "_registration",
        "_registration_failure_counted",
        "_spread",
        "instances",
        "name",
        "on_store_error",
        "store",
    )

    def __init__(
        self,
        store: NetworkStore,
        kind: str,
        name: str | None,
        on_store_error: str,
        instances: int | None,
    ) -> None:
        if not isinstance(store, NetworkStore):
            raise TypeError(f"store must be an admission.stores store, got {store!r}")
        if name is None:
            raise ValueError(f"a {kind} in a network store needs a name=: clients share it by name")
        if not isinstance(name, str) or not name or len(name) > 200 or not _storable(name):
            raise ValueError(
                "name must be a non-empty str of at most 200 characters, encodable as UTF-8 "
                f"and without NUL (every store must hold it as text): {name!r}"
            )
        if on_store_error not in ("closed", "open", "local"):
            raise ValueError(
                f"on_store_error must be 'closed', 'open' or 'local', got {on_store_error!r}"
            )
        if instances is not None and (
            isinstance(instances, bool) or not isinstance(instances, int) or instances < 1
        ):
            raise ValueError(f"instances must be an int >= 1, got {instances!r}")
        if on_store_error == "local" and instances is None:
            raise ValueError(
                "on_store_error='local' needs instances=: the number of processes sharing the "
                "limit, by which the in-process fallback divides it"
            )
        self.store = store
        self.name = name
        self.on_store_error: OnStoreError = on_store_error  # type: ignore[assignment]
        self.instances = instances or 1
        self._breaker = store_breaker(store)
        self._spread = store.spread_over_servers  # a breaker per server, then (`_call`)
        self._counts = _Counts()
        self._registered = False
        self._registration: asyncio.Future[None] | None = None  # in flight
        # The last failed one whose failure a caller counted on the breaker.
        self._registration_failure_counted: asyncio.Future[None] | None = None
        _track(self)

    def _config(self) -> dict[str, float]:
        raise NotImplementedError

    async def _call(
        self,
        call: Callable[[], Coroutine[Any, Any, T]],
        on_late_reply: Callable[[T], object],
        count: int = 1,
        key: bytes | None = None,
    ) -> T:
        """One round trip (on ``key``'s state) through the store's breaker, or through the
        breaker of the server holding that state on a store `spread_over_servers`
        (registering the limiter first, once); `StoreUnavailable` when it fails or the
        breaker refuses it, counted as ``count`` store errors (0: its callers count their
        own)."""
        breaker = self._breaker
        if self._spread:
            if not self._registered:
                await self._register_on_its_server(count)
            server = self.store.server_of(self._kind, self.name, key)
            breaker = store_breaker(self.store, server)
        if not breaker.try_acquire():
            self._counts.store_errors += count
            raise _refusal(self.store, breaker)
        try:
            if not self._registered:
                await self._register()
            reply = await _Guarded(
                call(), on_late_reply, None, True, self.store.timeout, self._no_answer
            )
        except _TheirFailure as theirs:
            breaker.release()  # one round trip failed: its sender's breaker verdict
            self._counts.store_errors += count
            raise theirs.error from None
        except StoreUnavailable:
            breaker.record(False, 0.0)
            self._counts.store_errors += count
            raise
        except BaseException:
            breaker.release()  # cancelled, or a configuration mismatch: no verdict on the store
            raise
        breaker.record(True, 0.0)
        return reply

    async def _register_on_its_server(self, count: int) -> None:
        """The registration on a store `spread_over_servers`, through the breaker of the
        server holding it: a dead one must not fail the breaker of the server of the state
        asked for, which the limiters registered before share (its failures would open it
        and refuse their calls)."""
        breaker = store_breaker(self.store, self.store.server_of("register", self.name, None))
        if not breaker.try_acquire():
            self._counts.store_errors += count
            raise _refusal(self.store, breaker)
        try:
            await self._register()
        except _TheirFailure as theirs:
            breaker.release()
            self._counts.store_errors += count
            raise theirs.error from None
        except StoreUnavailable:
            breaker.record(False, 0.0)
            self._counts.store_errors += count
            raise
        except BaseException:
            breaker.release()
            raise
        breaker.record(True, 0.0)

    async def _register(self) -> None:
        """The limiter's configuration stored (or checked against the one stored), under
        the same deadline as its round trips (the loop's busy time discounted), once: the
        callers that come while it is in flight wait for that round trip (1,000 callers of
        a new semaphore made 1,000 registrations at once, which queued for connections past
        the timeout), each failing with an error of its own if it fails."""
        flight = self._registration
        # (One of another loop is not this loop's to await: a loop closed with it, say.)
        if flight is None or flight.get_loop() is not asyncio.get_running_loop():
            registration = self.store.register(type(self)._kind, self.name, self._config())
            flight = self._registration = asyncio.ensure_future(
                _Guarded(
                    registration,
                    _ignore,
                    None,
                    True,
                    self.store.timeout,
                    self._no_answer,
                    cancels_the_call=True,
                )
            )
            flight.add_done_callback(self._registered_or_not)
        try:
            await asyncio.shield(flight)  # a caller cancelled leaves it to the others
        except Exception as error:
            own = _own_error(error)
            if isinstance(error, StoreUnavailable):
                # Counted once, by the first caller still there (not by the sender: it may
                # have been cancelled, and then nobody counted it).
                if self._registration_failure_counted is flight:
                    raise _TheirFailure(own) from error
                self._registration_failure_counted = flight
            raise own from error

    def _registered_or_not(self, flight: asyncio.Future[None]) -> None:
        if self._registration is flight:
            self._registration = None
        if not flight.cancelled() and flight.exception() is None:  # (else retrieved)
            self._registered = True

    def _no_answer(self) -> StoreUnavailable:
        return StoreUnavailable(self.store.label, f"no answer within {self.store.timeout} s")

    _kind: str


# -- rate limits -----------------------------------------------------------------------------


@final
class _GiveBacks:
    """The charges a rate limiter gives back (its callers cancelled while they waited for
    their turn, or gone before a late reply), per key, and the round trips that give them
    back.

    The store undoes a charge only while it is its bucket's last
    (`NetworkStore.rate_give_back`): given back one by one in the order they were made, the
    charges of callers cancelled together were undone in vain but the last (2,000 waiters
    of a 100/s bucket cancelled at once: a fresh caller then waited 19.5 s, for their
    turns). Kept here until given back, a key's charges that follow each other in the
    bucket (each one's TAT is the one before it plus its cost) go back as one charge, in
    one round trip, from the last one down; each given back makes the charge below it the
    bucket's last, so the next one cancelled below joins the run. A charge that another
    (a live waiter's, another process's) keeps from being the last stays until that one
    is given back too, or until its TAT has passed: then the bucket is full again, and
    giving it back would change nothing.
    """

    __slots__ = ("_changed", "_next_sweep", "_pending", "_sending", "interval_us", "limiter")

    def __init__(self, limiter: _RemoteRate) -> None:
        self.limiter = limiter
        self.interval_us = limiter._interval_us
        self._pending: dict[bytes | None, dict[int, tuple[int, float]]] = {}
        """Per key, by the TAT each charge left: its cost, and the loop time when that TAT
        passes."""
        self._sending: set[bytes | None] = set()  # keys with a round trip of theirs on
        self._changed: set[bytes | None] = set()  # keys charged back since their last one
        self._next_sweep = 0.0

    def add(self, key: bytes | None, cost: int, reply: RateReply) -> None:
        """``reply``'s charge (of ``cost``) to give back; a round trip for ``key`` starts,
        unless one is on (it sends this one next)."""
        if not reply.admitted:
            return
        now = asyncio.get_running_loop().time()
        if now >= self._next_sweep:  # the kept charges of keys no longer asked for
            self._next_sweep = now + 1.0
            for other in [k for k in self._pending if k not in self._sending]:
                self._drop_passed(other, now)
        passes = now + (reply.tat_us - reply.now_us) / 1e6
        self._pending.setdefault(key, {})[reply.tat_us] = (cost, passes)
        self._changed.add(key)
        if key not in self._sending:
            self._sending.add(key)
            _keep(self._send(key))

    async def _send(self, key: bytes | None) -> None:
        try:
            while key in self._changed:
                self._changed.discard(key)
                charges = self._drop_passed(key, asyncio.get_running_loop().time())
                if not charges:
                    break
                # The last run: from the last charge down, while each one's start is the
                # TAT of another.
                last = tat = max(charges)
                run: list[tuple[int, tuple[int, float]]] = []
                cost = 0
                while tat in charges:
                    charge = charges[tat]
                    run.append((tat, charge))
                    cost += charge[0]
                    tat -= charge[0] * self.interval_us
                limiter = self.limiter
                give_back = limiter.store.rate_give_back(
                    limiter.name, key, self.interval_us, cost, last
                )
                try:
                    # Under a limiter's deadline (the loop's busy time discounted): with
                    # the store's own, most of 2,000 give-backs sent at once (waiters of
                    # as many keys cancelled together) failed, waiting for connections.
                    done = await _Guarded(
                        give_back,
                        _ignore,
                        None,
                        True,
                        limiter.store.timeout,
                        limiter._no_answer,
                        cancels_the_call=True,
                    )
                except Exception:
                    # Failed, maybe applied (the reply lost or late): dropped, never sent
                    # again. Undone already, a charge sent again in a later run undid the
                    # one another client made since at the same TAT (two callers, one turn).
                    done = True
                # A run below (after a charge that was not given back) is not sent until
                # another charge of its key comes back.
                self._given_back(key, run, done)
        finally:
            self._sending.discard(key)

    def _given_back(
        self, key: bytes | None, run: list[tuple[int, tuple[int, float]]], done: bool
    ) -> None:
        charges = self._pending.get(key)
        if done and charges is not None:
            for tat, charge in run:
                if charges.get(tat) is charge:  # (not a charge made since at that TAT)
                    del charges[tat]
            if not charges:
                del self._pending[key]

    def _drop_passed(self, key: bytes | None, now: float) -> dict[int, tuple[int, float]]:
        """Drops ``key``'s charges whose TAT has passed (its bucket full again: nothing
        to give back); what is left."""
        charges = self._pending.get(key, {})
        for tat in [tat for tat, (_, passes) in charges.items() if passes <= now]:
            del charges[tat]
        if not charges:
            self._pending.pop(key, None)
        return charges


class _RemoteRate(_Remote):
    """A GCRA bucket (or a keyed family of them) in a network store."""

    __slots__ = (
        "_batch",
        "_batch_after",
        "_batching",
        "_burst",
        "_give_backs",
        "_interval_us",
        "_lanes",
        "_local",
        "_local_tokens",
        "_make_local",
        "per",
        "rate",
    )

    def __init__(
        self,
        store: NetworkStore,
        name: str | None,
        rate: float,
        per: float,
        burst: int | None,
        *,
        on_store_error: str = "closed",
        instances: int | None = None,
        batch: int | None = None,
        local: LocalFactory,
    ) -> None:
        # The native bucket checks the arguments (one message per mistake) and defaults the
        # burst exactly as the in-process one does.
        checked = _native.TokenBucket(rate, per, burst)
        super().__init__(store, self._kind, name, on_store_error, instances)
        self.rate = checked.rate
        self.per = checked.per
        self._burst = checked.burst
        # Rounded up: rounding never admits more than the rate.
        self._interval_us = max(math.ceil(self.per * 1_000_000 / self.rate), 1)
        if self._burst * self._interval_us > MAX_SPAN_US:
            # Its TAT would run further ahead than a store computes exactly (MAX_SPAN_US).
            raise ValueError(
                f"a bucket in a network store must refill within {MAX_SPAN_US // 1_000_000} s "
                f"(about 35 years): burst {self._burst} x per {self.per:g} s / rate "
                f"{self.rate:g} takes {self._burst * self._interval_us / 1e6:.6g} s"
            )
        if batch is not None and (
            isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= self._burst
        ):
            raise ValueError(
                f"batch must be an int from 1 to the burst {self._burst}, got {batch!r}"
            )
        self._batch = batch or 1
        self._batch_after = 0.0
        self._batching = False
        """Whether a batch is being taken (one at a time: see `_acquire`)."""
        self._lanes: dict[bytes | None, _Lane] = {}
        """The lanes with a round trip in flight: the limiter's own (None, which stays),
        every key's too when its store decides a batch over keys in one round trip, else
        one per key (`_lane_key`)."""
        self._local_tokens = 0
        self._make_local = local
        self._local: Any = None
        self._give_backs = _GiveBacks(self)

    @property
    def burst(self) -> int:
        """The capacity: the most cost one request (or one burst) can take."""
        return self._burst

    @property
    def waiting(self) -> int:
        """This process's requests sleeping until their charged turn."""
        return self._counts.waiting

    def _config(self) -> dict[str, float]:
        return {"rate": self.rate, "per": self.per, "burst": float(self._burst)}

    def _check_cost(self, cost: int) -> None:
        if isinstance(cost, bool) or not isinstance(cost, int):
            raise TypeError(f"cost must be an int, got {type(cost).__name__} {cost!r}")
        if cost < 1:
            raise ValueError(f"cost must be >= 1, got {cost}")
        if cost > self._burst:
            self._counts.rejected += 1
            raise CapacityError(cost, self._burst)

    def _give_back(self, key: bytes | None, cost: int, reply: RateReply) -> None:
        self._give_backs.add(key, cost, reply)

    async def _acquire(self, key: bytes | None, cost: int, timeout: float | str | None) -> None:
        _require_asyncio(type(self).__name__)
        self._check_cost(cost)
        seconds = _timeout(timeout)
        counts = self._counts
        if self._local_tokens >= cost:
            self._local_tokens -= cost
            counts.admitted += 1
            counts.admitted_cost += cost
            return
        # A batch charges `batch` at once when that fits now; the rest is spent locally.
        # While the bucket is too low for one (the last try said until when), only `cost`
        # is asked for: one round trip per request, as without batching. One batch is
        # taken at a time: the callers that find no tokens meanwhile ask for their own
        # cost, so this process never holds more than `batch - 1` for later (each of
        # them taking a batch would keep `batch - cost` apiece: the documented bound on
        # over-admission, `(batch - 1) x processes`, would not hold).
        loop = asyncio.get_running_loop()
        take = cost
        if self._batch > cost and not self._batching and loop.time() >= self._batch_after:
            take = self._batch
        # A timeout longer than any wait a store grants is no bound (-1: MAX_SPAN_US).
        max_wait = -1 if seconds is None or seconds * 1e6 >= MAX_SPAN_US else int(seconds * 1e6)
        try:
            if take > cost:
                self._batching = True
                try:
                    reply = await self._decide(key, take, 0)
                finally:
                    self._batching = False
                if not reply.admitted:
                    self._batch_after = loop.time() + reply.wait_us / 1_000_000
                    take = cost
                    reply = await self._decide(key, cost, max_wait)
            else:
                reply = await self._decide(key, cost, max_wait)
        except StoreUnavailable as error:
            await self._store_failed(key, cost, timeout, error)
            return
        except asyncio.CancelledError:
            counts.cancelled += 1
            raise
        if not reply.admitted:
            counts.timed_out += 1
            # (No bound is the longest wait a store grants, MAX_SPAN_US.)
            bound = MAX_SPAN_US / 1e6 if seconds is None or max_wait < 0 else seconds
            raise AcquireTimeout(bound, reply.wait_us / 1e6)
        if reply.wait_us > 0:
            counts.waiting += 1
            try:
                await asyncio.sleep(reply.wait_us / 1_000_000)
            except asyncio.CancelledError:
                counts.cancelled += 1
                self._give_back(key, take, reply)
                raise
            finally:
                counts.waiting -= 1
        self._local_tokens += take - cost
        counts.admitted += 1
        counts.admitted_cost += cost

    async def _decide(self, key: bytes | None, cost: int, max_wait_us: int) -> RateReply:
        """One decision: a round trip of its own when none of this limiter's is in flight,
        else queued for the next one (module docstring, "Coalescing")."""
        lane_key = None if self.store.rate_batch_is_one_round_trip and not self._spread else key
        lane = self._lanes.get(lane_key)
        if lane is None:
            lane = self._lanes[lane_key] = _Lane()
        if lane.busy:
            return await self._queue(key, lane, cost, max_wait_us)
        lane.busy = True
        try:
            return await self._call(
                lambda: self.store.rate(
                    self.name, key, self._interval_us, self._burst, cost, max_wait_us
                ),
                lambda late: self._give_back(key, cost, late),
                key=key,
            )
        finally:
            self._next_round_trip(lane_key, lane)

    def _next_round_trip(self, lane_key: bytes | None, lane: _Lane) -> None:
        """The round trip in flight ended: the queued decisions go now, in one."""
        if lane.queued:
            _keep(self._send_queued(lane_key, lane))
        else:
            lane.busy = False
            self._forget(lane_key, lane)

    def _forget(self, lane_key: bytes | None, lane: _Lane) -> None:
        """Drops an idle key's lane (the limiter's own, None, stays)."""
        if lane_key is not None and self._lanes.get(lane_key) is lane:
            del self._lanes[lane_key]

    async def _queue(
        self, key: bytes | None, lane: _Lane, cost: int, max_wait_us: int
    ) -> RateReply:
        # No deadline of its own while queued: the round trip in flight is bounded by the
        # store's timeout (past it, the queue goes at once), and its batch by the same
        # timeout from when it is sent (module docstring, "Coalescing").
        request = _Request(key, cost, max_wait_us, asyncio.get_running_loop().create_future())
        lane.queued.append(request)
        try:
            return await request.future
        except StoreUnavailable:
            self._counts.store_errors += 1
            raise
        except asyncio.CancelledError:
            # Cancelled in the turn its reply was delivered (before this task resumed): the
            # reply is this caller's, so is its charge, given back as a late reply's is.
            future = request.future
            if future.done() and not future.cancelled() and future.exception() is None:
                self._give_back(key, cost, future.result())
            raise

    async def _send_queued(self, lane_key: bytes | None, lane: _Lane) -> None:
        """Sends the queued decisions of ``lane``: all of them at once, in round trips of
        up to `RATE_MANY_MAX` each (more than that go side by side, not one after the
        other, `BATCHES_AT_ONCE` at most: the rest when those return), then those queued
        meanwhile, until none is left. A caller gone (cancelled) before its request went is
        dropped; after, its charge is given back when the reply comes. Requests on several
        keys go as one round trip only to a store that decides them in one
        (`NetworkStore.rate_batch_is_one_round_trip`, read now: a Redis store learns it
        talks to a cluster); else each key's go as round trips of their own."""
        queued = lane.queued
        batches: list[list[_Request]] = []
        try:
            while True:
                # Never across keys on a store spread over servers: a key's server's breaker.
                one = self.store.rate_batch_is_one_round_trip and not self._spread
                groups: dict[bytes | None, list[_Request]] = {}
                while queued:
                    request = queued.popleft()
                    if not request.future.done():
                        groups.setdefault(None if one else request.key, []).append(request)
                batches = [
                    group[i : i + RATE_MANY_MAX]
                    for group in groups.values()
                    for i in range(0, len(group), RATE_MANY_MAX)
                ]
                if not batches:
                    return
                # The rest go when these return, ahead of those queued meanwhile.
                for later in reversed(batches[BATCHES_AT_ONCE:]):
                    queued.extendleft(reversed(later))
                del batches[BATCHES_AT_ONCE:]
                if len(batches) == 1:
                    await self._send_batch(batches[0])
                else:
                    await asyncio.gather(*(self._send_batch(batch) for batch in batches))
        except BaseException:
            # Cancelled with its loop: the waiting callers are told, not left to wait.
            for request in (*(r for batch in batches for r in batch), *queued):
                request.future.cancel()
            queued.clear()
            raise
        finally:
            lane.busy = False
            if not queued:
                self._forget(lane_key, lane)

    def _batch_call(self, batch: list[_Request]) -> Coroutine[Any, Any, list[RateReply]]:
        """The store call deciding ``batch``: `NetworkStore.rate_many` when its requests are
        all on one bucket (the cheaper call: one bucket to read and write), else
        `NetworkStore.rate_batch` (`_send_queued` makes such a batch for a store that
        decides it in one round trip only)."""
        key = batch[0].key
        if all(request.key == key for request in batch):
            requests = [(r.cost, r.max_wait_us) for r in batch]
            return self.store.rate_many(self.name, key, self._interval_us, self._burst, requests)
        keyed = [(r.key, r.cost, r.max_wait_us) for r in batch]
        return self.store.rate_batch(self.name, self._interval_us, self._burst, keyed)

    async def _send_batch(self, batch: list[_Request]) -> None:
        """One round trip for ``batch``, bounded by the store's timeout from now; each
        caller gets its reply, or an error of its own (caused by the round trip's)."""
        charges = [(r.key, r.cost) for r in batch]
        try:
            replies = await self._call(
                lambda: self._batch_call(batch),
                lambda late: self._give_back_all(charges, late),
                0,
                key=batch[0].key,  # the batch's only key where a breaker is per server
            )
        except BatchContended:
            # It decided nothing (a key held by another client): each key's requests
            # again, each under a call of its own, so only the held key's wait for it.
            by_key: dict[bytes | None, list[_Request]] = {}
            for request in batch:
                by_key.setdefault(request.key, []).append(request)
            # At most RATE_MANY_MAX keys (one batch).
            await asyncio.gather(*(self._send_batch(mine) for mine in by_key.values()))  # noqa: ADM101
            return
        except Exception as error:
            for request in batch:
                if not request.future.done():
                    request.future.set_exception(_own_error(error))
            return
        gone: list[tuple[bytes | None, int]] = []
        gone_replies: list[RateReply] = []
        for request, reply in zip(batch, replies, strict=True):
            if request.future.done():
                gone.append((request.key, request.cost))
                gone_replies.append(reply)
            else:
                request.future.set_result(reply)
        if gone:
            self._give_back_all(gone, gone_replies)

    def _give_back_all(
        self, charges: Sequence[tuple[bytes | None, int]], replies: Sequence[RateReply]
    ) -> None:
        """Gives back the admitted charges among ``replies`` (of requests of ``charges``:
        key and cost): each key's in one round trip (`_GiveBacks`)."""
        for (key, cost), reply in zip(charges, replies, strict=True):
            self._give_backs.add(key, cost, reply)

    async def _store_failed(
        self, key: bytes | None, cost: int, timeout: float | str | None, error: StoreUnavailable
    ) -> None:
        counts = self._counts
        if self.on_store_error == "closed":
            counts.rejected += 1
            raise error
        counts.fallbacks += 1
        if self.on_store_error == "local":
            try:
                await self._local_acquire(key, cost, timeout)
            except AcquireTimeout:
                counts.timed_out += 1
                raise
            except asyncio.CancelledError:
                counts.cancelled += 1
                raise
        counts.admitted += 1
        counts.admitted_cost += cost

    async def _local_acquire(
        self, key: bytes | None, cost: int, timeout: float | str | None
    ) -> None:
        if self._local is None:
            # This process's share of the limit, in-process.
            share = max(math.ceil(self._burst / self.instances), 1)
            self._local = self._make_local(self.rate / self.instances, self.per, share)
        # A request above the share's burst takes the whole share: refusing it would fail a
        # request the shared limit allows.
        local = self._local
        cost = min(cost, local.burst)
        await (local.acquire(cost, timeout) if key is None else local.acquire(key, cost, timeout))

    def try_acquire(self, *args: object, **kwargs: object) -> bool:
        """Refused: see the module docstring (`await acquire(timeout=0)` instead)."""
        raise _sync_refused(type(self).__name__)

    def acquire_blocking(self, *args: object, **kwargs: object) -> None:
        """Refused: see the module docstring (``await acquire()`` instead)."""
        raise _sync_refused(type(self).__name__)

    def stats(self) -> LimiterStats:
        """This process's counters (all keys together; ``waiting``: its requests asleep
        until their turn). The store keeps none."""
        c = self._counts
        return LimiterStats(
            self.name, c.admitted, c.admitted_cost, c.rejected, c.timed_out, c.cancelled, c.waiting
        )

    def __repr__(self) -> str:
        return (
            f"{self._kind}(rate={self.rate!r}, per={self.per!r}, burst={self._burst}, "
            f"name={self.name!r}, store={self.store.label})"
        )


@final
class RemoteTokenBucket(_RemoteRate):
    """A `TokenBucket` in a network store: one limit for every process of every host that opens
    it. Made by ``adm.TokenBucket(rate, per, burst, name=..., store=store)``.

    ``await bucket.acquire(cost, timeout=...)`` is one round trip: admitted now, or charged
    for its turn and asleep until then (``timeout=0``: now or `AcquireTimeout`), or refused at
    once with `AcquireTimeout` when its turn is past the timeout. ``async with bucket:`` takes
    one. Waiters are served in the order the store charged them.

    ``batch=N`` charges N tokens per round trip when they fit and spends them locally: N
    times fewer round trips, at the price of admitting up to ``N - 1`` tokens per process
    later than the store granted them (over any interval, at most ``(N - 1) x processes``
    more than the limit). A process takes one batch at a time; its callers that find no
    tokens meanwhile ask for their own cost. Not for a limit that must hold to the token.

    `stats` counts this process's requests; the store keeps no counters.
    """

    __slots__ = ()
    _kind = "TokenBucket"

    async def acquire(self, cost: int = 1, timeout: float | str | None = None) -> None:
        """Waits until ``cost`` is admitted (see the class docstring). The store counts a
        turn from its decision and this sleeps it from the reply's arrival, so a call that
        waits returns within ``timeout`` plus one round trip (never before its turn).

        Raises:
            AcquireTimeout: refused now (``timeout=0``) or its turn is past ``timeout``.
            StoreUnavailable: the store failed and ``on_store_error`` is ``"closed"``.
            CapacityError: ``cost`` exceeds the burst.
        """
        await self._acquire(None, cost, timeout)

    async def __aenter__(self) -> None:
        await self._acquire(None, 1, None)

    async def __aexit__(self, *exc: object) -> None:
        pass

    def __enter__(self) -> None:
        raise _sync_refused("TokenBucket")

    def __exit__(self, *exc: object) -> None:
        pass


@final
class RemoteKeyedTokenBucket(_RemoteRate):
    """A `KeyedTokenBucket` in a network store: one bucket per key, every bucket shared by
    every process that opens the limiter. Made by ``adm.KeyedTokenBucket(..., name=...,
    store=store)``. The store holds a key's state only while its bucket is not full (a Redis
    TTL, a PostgreSQL row swept afterwards), so idle keys cost nothing.

    ``await per_user.acquire(key, cost, timeout=...)`` and ``async with per_user(key):``
    behave as `RemoteTokenBucket`'s, per key. Keys are ``str``, ``bytes`` or ``int``, as for
    the in-process `KeyedTokenBucket`.
    """

    __slots__ = ()
    _kind = "KeyedTokenBucket"

    async def acquire(self, key: Key, cost: int = 1, timeout: float | str | None = None) -> None:
        """Waits until ``cost`` is admitted for ``key`` (see `RemoteTokenBucket.acquire`)."""
        await self._acquire(_canonical_key(key), cost, timeout)

    def __call__(self, key: Key, cost: int = 1) -> _KeyHold:
        """``async with per_user(key, cost):`` takes ``cost`` for ``key``."""
        return _KeyHold(self, _canonical_key(key), cost)


def _canonical_key(key: Key) -> bytes:
    """The key as the store holds it: the bytes an in-process keyed limiter hashes (UTF-8 of
    a ``str``, a ``bytes`` as it is, an ``int``'s decimal digits)."""
    if isinstance(key, str):
        return key.encode()
    if isinstance(key, bytes):
        return key
    if isinstance(key, int) and not isinstance(key, bool):
        return str(key).encode()
    raise TypeError(f"a key is a str, bytes or int, got {type(key).__name__} {key!r}")


@final
class _KeyHold:
    __slots__ = ("_cost", "_key", "_limiter")

    def __init__(self, limiter: RemoteKeyedTokenBucket, key: bytes, cost: int) -> None:
        self._limiter = limiter
        self._key = key
        self._cost = cost

    async def __aenter__(self) -> None:
        await self._limiter._acquire(self._key, self._cost, None)

    async def __aexit__(self, *exc: object) -> None:
        pass


# -- the distributed semaphore ---------------------------------------------------------------


@final
class Lease:
    """A permit of a `RemoteSemaphore`: what ``await semaphore.acquire()`` returns and
    ``async with semaphore as lease:`` binds.

    ``fence`` is the grant's fencing token: strictly greater than every token the semaphore
    granted before, across all clients. Pass it to the resource you protect and have it
    refuse a token smaller than one it has seen: a holder that stalled past its lease (a
    long pause, a partition) is then refused instead of writing beside the next holder.
    ``lost`` turns true when the lease may have expired in the store: a heartbeat found it
    expired, or none renewed it for ``lease`` (a partition, an outage: by this process's
    clock, from when the last request that granted or renewed it was sent, so never later
    than the store lets it go). A permit granted without the store (``on_store_error``
    ``"open"`` or ``"local"``) has ``fence`` 0 and ``holder`` ``""``, and is never lost.
    """

    __slots__ = (
        "_expired",
        "_local",
        "_loop",
        "_released",
        "_semaphore",
        "_valid_until",
        "fence",
        "holder",
    )

    def __init__(
        self, holder: str, fence: int, local: Any = None, valid_until: float = math.inf
    ) -> None:
        self.holder = holder
        self.fence = fence
        self._expired = False  # a heartbeat found it expired in the store
        self._valid_until = valid_until  # the loop's time its term ends, unless renewed
        self._local = local
        self._released = False
        self._loop = asyncio.get_running_loop()  # where its release round trip runs
        self._semaphore: RemoteSemaphore | None = None  # the one that granted it

    @property
    def lost(self) -> bool:
        """Whether the lease may have expired in the store (see the class docstring)."""
        return self._expired or self._loop.time() >= self._valid_until

    def __repr__(self) -> str:
        lost = ", lost" if self.lost else ""
        return f"Lease(fence={self.fence}, holder={self.holder!r}{lost})"


@final
class RemoteSemaphore(_Remote):
    """A `Semaphore` in a network store: at most ``limit`` permits held at once by every
    process of every host. Made by ``adm.Semaphore(limit, name=..., store=store,
    lease="30s")``.

    A permit is a lease with an expiry on the server's clock, renewed by a heartbeat every
    third of ``lease`` while held: a holder that crashes or is cut off gives its permit back
    when its lease runs out, without anyone's help. ``lease`` must be at least
    `LEASE_MIN_ROUND_TRIPS` (6) times the store's ``timeout`` (0.6 s at the default 100 ms;
    `ValueError` otherwise): a shorter one could expire between two renewals while held.
    Each grant carries a fencing token (`Lease.fence`). Waiters queue in the store, first
    come first served across all clients (a waiter that stops asking, because its process
    died, drops out after ``lease``); a waiter notices a free permit within ``POLL_MAX``
    seconds. At most ``limit`` of this object's callers hold a lease or ask the store for
    one at a time (more could never hold at once): the others wait here, first come first
    served, asking the store nothing, each taking the place the one before it frees. A lease
    lost while held (`Lease.lost`) keeps its place here until it is released: its holder
    may still be at work (``in_use`` counts only the leases still valid).

    ``async with semaphore as lease:`` / ``lease = await semaphore.acquire(timeout=...)`` and
    ``semaphore.release(lease)``. One permit per acquisition.
    """

    __slots__ = (
        "_by_task",
        "_entered",
        "_gate",
        "_heartbeat",
        "_held",
        "_high_water",
        "_lease_us",
        "_local",
        "_make_local",
        "lease",
        "limit",
    )
    _kind = "Semaphore"

    def __init__(
        self,
        store: NetworkStore,
        name: str | None,
        limit: int,
        *,
        lease: float | str = 30.0,
        on_store_error: str = "closed",
        instances: int | None = None,
        local: LocalFactory,
        gate: LocalFactory,
    ) -> None:
        _native.Semaphore(limit)  # the in-process check of a limit, one message per mistake
        super().__init__(store, "Semaphore", name, on_store_error, instances)
        self.limit = limit
        self.lease = durations.seconds(lease, "lease", positive=True)
        self._lease_us = math.ceil(self.lease * 1_000_000)
        if self._lease_us > MAX_SPAN_US:
            raise ValueError(
                f"lease must be at most {MAX_SPAN_US // 1_000_000} s (about 35 years: the "
                f"stores' range), got {lease!r}"
            )
        # In µs, rounded: 6 x 0.05 s is 0.30000000000000004 s in floats.
        shortest_us = round(LEASE_MIN_ROUND_TRIPS * store.answers_within * 1_000_000)
        if self._lease_us < shortest_us:
            raise ValueError(
                f"lease must be at least {LEASE_MIN_ROUND_TRIPS} x the store's timeout "
                f"({store.answers_within:g} s), {shortest_us / 1e6:g} s, got {lease!r}: the "
                "heartbeat renews a lease every third of it, each renewal a round trip that "
                "may take the timeout, so a shorter lease can expire while held and let more "
                f"than {limit} hold the semaphore at once"
            )
        self._held: dict[str, Lease] = {}
        """The leases held in the store, by holder: what the heartbeat renews."""
        self._by_task: weakref.WeakKeyDictionary[asyncio.Task[Any], list[Lease]] = (
            weakref.WeakKeyDictionary()
        )
        """Each task's leases, last acquired last: what ``release()`` without a lease gives
        back."""
        self._entered: weakref.WeakKeyDictionary[asyncio.Task[Any], list[Lease]] = (
            weakref.WeakKeyDictionary()
        )
        """The leases each task's ``async with`` blocks took, innermost last: what each
        exit gives back (not the task's last lease: the block may have kept one)."""
        self._heartbeat: asyncio.Task[None] | None = None
        self._high_water = 0
        self._make_local = local
        self._local: Any = None
        self._gate = gate(limit)
        """This process's callers that hold a lease or ask the store for one: at most
        ``limit`` (more could never hold at once); the others wait here, first come first
        served, costing the store nothing (2,000 callers of a semaphore of 20, each asking
        the store every 50 ms, failed all 2,000: their round trips queued for connections
        past the timeout and opened the breaker)."""

    def _config(self) -> dict[str, float]:
        # The lease is each client's own choice (how long it may stall): not compared.
        return {"limit": float(self.limit)}

    @property
    def in_use(self) -> int:
        """Permits this process holds now (`state` asks the store for everyone's)."""
        return len(self._held)

    @property
    def waiting(self) -> int:
        """This process's requests waiting for a permit now."""
        return self._counts.waiting

    async def state(self) -> tuple[int, int]:
        """(permits held, waiters queued) across every client, as the store says now."""
        _require_asyncio("Semaphore")
        return await self._call(lambda: self.store.semaphore_state(self.name), _ignore)

    def _let_go(self, holder: str) -> Callable[[SemaphoreReply], None]:
        def release_late(reply: SemaphoreReply) -> None:
            _in_background(self.store.semaphore_release(self.name, holder))

        return release_late

    async def acquire(self, n: int = 1, timeout: float | str | None = None) -> Lease:
        """Waits until a permit is granted and returns its `Lease`.

        Raises:
            AcquireTimeout: no permit within ``timeout`` (``0``: none free now).
            StoreUnavailable: the store failed and ``on_store_error`` is ``"closed"``.
        """
        _require_asyncio("Semaphore")
        if n != 1:
            raise ValueError(f"a semaphore in a network store grants one permit at a time, not {n}")
        seconds = _timeout(timeout)
        counts = self._counts
        loop = asyncio.get_running_loop()
        deadline = None if seconds is None else loop.time() + seconds
        gate = self._gate
        if not gate.try_acquire():
            await self._wait_at_gate(seconds)
        holder = f"{_HOST}:{os.getpid()}:{uuid.uuid4().hex}"
        delay = _POLL_MIN
        queued = False
        asked = False  # whether a request reached the store's driver (not refused before)

        asked_at = 0.0  # when the last request went: the lease's term runs from then

        def ask() -> Coroutine[Any, Any, SemaphoreReply]:
            nonlocal asked, asked_at
            asked, asked_at = True, loop.time()
            return self.store.semaphore_acquire(
                self.name, self.limit, holder, self._lease_us, seconds != 0
            )

        try:
            while True:
                reply = await self._call(ask, self._let_go(holder))
                if reply.granted:
                    break
                queued = seconds != 0
                left = None if deadline is None else deadline - loop.time()
                if left is not None and left <= 0:
                    counts.timed_out += 1
                    raise AcquireTimeout(seconds if seconds is not None else 0.0)
                counts.waiting += 1
                try:
                    pause = min(delay, self.lease / 3)
                    await asyncio.sleep(pause if left is None else min(pause, left))
                finally:
                    counts.waiting -= 1
                delay = min(delay * 2, POLL_MAX)
        except StoreUnavailable as error:
            gate.release()  # (the fallback's lease, if any, is not the store's)
            # A request that failed may have been granted all the same (the server ran it,
            # then the connection was lost before its reply): released, not left to hold a
            # permit until it expires. Not when the breaker refused every request: none
            # went, and a dead store would be asked once more per caller.
            if asked:
                _in_background(self.store.semaphore_release(self.name, holder))
            left = None if deadline is None else max(deadline - loop.time(), 0.0)
            return await self._store_failed(error, left)
        except asyncio.CancelledError:
            gate.release()
            counts.cancelled += 1
            if queued:
                _in_background(self.store.semaphore_release(self.name, holder))
            raise
        except AcquireTimeout:
            gate.release()
            if queued:
                _in_background(self.store.semaphore_release(self.name, holder))
            raise
        except BaseException:  # (a configuration mismatch, say)
            gate.release()
            raise
        lease = self._granted(Lease(holder, reply.fence, None, asked_at + self.lease))
        self._held[holder] = lease
        self._high_water = max(self._high_water, len(self._held))
        counts.admitted += 1
        counts.admitted_cost += 1
        if self._heartbeat is None or self._heartbeat.done():
            self._heartbeat = loop.create_task(self._renew_while_held())
        return lease

    async def _wait_at_gate(self, seconds: float | None) -> None:
        """Waits for one of the ``limit`` places of this object's callers that may hold or
        ask the store for a lease (`_gate`), first come first served, within ``seconds``."""
        counts = self._counts
        counts.waiting += 1
        try:
            await self._gate.acquire(1, seconds)
        except AcquireTimeout:
            counts.timed_out += 1
            raise AcquireTimeout(seconds if seconds is not None else 0.0) from None
        except asyncio.CancelledError:
            counts.cancelled += 1
            raise
        finally:
            counts.waiting -= 1

    async def _store_failed(self, error: StoreUnavailable, timeout: float | None) -> Lease:
        counts = self._counts
        if self.on_store_error == "closed":
            counts.rejected += 1
            raise error
        counts.fallbacks += 1
        local = None
        if self.on_store_error == "local":
            if self._local is None:
                self._local = self._make_local(max(self.limit // self.instances, 1))
            local = self._local
            try:
                await local.acquire(1, timeout)
            except AcquireTimeout:
                counts.timed_out += 1
                raise
            except asyncio.CancelledError:
                counts.cancelled += 1
                raise
        counts.admitted += 1
        counts.admitted_cost += 1
        return self._granted(Lease("", 0, local))

    def _granted(self, lease: Lease) -> Lease:
        lease._semaphore = self
        task = asyncio.current_task()
        if task is not None:
            self._by_task.setdefault(task, []).append(lease)
        return lease

    async def _renew_while_held(self) -> None:
        """The heartbeat: renews every lease this object holds each third of ``lease``, in
        one round trip; marks lost those the store says expired (a lease none renewed for
        its term is lost by `Lease.lost`'s own reckoning). Ends when none is
        held. A failed renewal is retried at the next beat (the lease survives a store
        failure shorter than two thirds of ``lease``)."""
        while self._held:
            await asyncio.sleep(self.lease / 3)
            holders = list(self._held)
            if not holders:
                break
            sent_at = asyncio.get_running_loop().time()
            try:
                renewed = await self._call(
                    lambda holders=holders: self.store.semaphore_renew(  # type: ignore[misc]
                        self.name, holders, self._lease_us
                    ),
                    _ignore,
                )
            except StoreUnavailable:
                continue  # (each lease's term runs on: `Lease.lost` once it has passed)
            for holder, ok in zip(holders, renewed, strict=True):
                lease = self._held.get(holder)
                if lease is None:
                    continue  # released meanwhile
                if ok:
                    lease._valid_until = sent_at + self.lease
                else:
                    # Expired in the store: another client may hold the permit now. The
                    # lease stays on its task's books until released (release is a no-op
                    # in the store then), but is no longer renewed.
                    del self._held[holder]
                    lease._expired = True

    def release(self, lease: Lease | None = None) -> None:
        """Gives back ``lease`` (default: the last one this task acquired and still holds);
        the store's answer comes in the background (``await release_and_wait(lease)`` waits
        for it).

        Callable from any thread, in the loop or not: the round trip runs on the loop that
        acquired the lease (if that loop is gone, the lease expires after ``lease``).

        Raises:
            RuntimeError: ``lease`` is not held here (already released, or another
                semaphore's), or none given and this task holds none.
        """
        target = self._forget(lease)
        if not target.holder:
            return
        loop = target._loop
        if _backend.running_asyncio_loop() is loop:
            _in_background(self.store.semaphore_release(self.name, target.holder))
        elif not loop.is_closed():
            loop.call_soon_threadsafe(self._release_in_loop, target.holder)

    def _release_in_loop(self, holder: str) -> None:
        _in_background(self.store.semaphore_release(self.name, holder))

    async def release_and_wait(self, lease: Lease | None = None) -> bool:
        """`release`, waiting for the store: False if the lease had already expired there.

        Raises:
            StoreUnavailable: no answer within the store's ``timeout`` (the release goes on
                in the background; if it is lost, the lease expires after ``lease``), or at
                once while the store's breaker is open (the release is sent in the
                background: an ``async with`` exit costs no timeout during an outage).
        """
        target = self._forget(lease)
        if not target.holder:
            return True
        holder = target.holder
        sent = False

        def release() -> Coroutine[Any, Any, bool]:
            nonlocal sent
            sent = True
            return self.store.semaphore_release(self.name, holder)

        # A round trip of the limiter's (its breaker, its deadline): the store's own timer
        # would cancel this task, and the guard hand the caller that CancelledError.
        try:
            return await self._call(release, _ignore, 0)
        except StoreUnavailable:
            if not sent:
                _in_background(self.store.semaphore_release(self.name, holder))
            raise

    def _forget(self, lease: Lease | None) -> Lease:
        """Takes ``lease`` off this object's books (and the task's) before it is released."""
        task = asyncio.current_task() if _backend.running_asyncio_loop() is not None else None
        mine = self._by_task.get(task) if task is not None else None
        if lease is None:
            if not mine:
                raise RuntimeError(
                    f"release() of semaphore {self.name!r}: this task holds no permit of it "
                    "(pass the Lease that acquire() returned)"
                )
            lease = mine[-1]
        granted_by = lease._semaphore
        if granted_by is not self:
            # Taken, it would free this semaphore's gate place of another holder and leave
            # its own semaphore's taken for good (its permit held, renewed, and refused).
            raise RuntimeError(
                f"{lease!r} is a permit of semaphore "
                f"{granted_by.name if granted_by is not None else None!r}, not of {self.name!r}"
            )
        if lease._released:
            raise RuntimeError(f"{lease!r} of semaphore {self.name!r} was already released")
        lease._released = True
        if mine and lease in mine:
            mine.remove(lease)
        else:
            for leases in self._by_task.values():
                if lease in leases:
                    leases.remove(lease)
                    break
        self._held.pop(lease.holder, None)
        if lease.holder:
            self._gate.release()
        if lease._local is not None:
            lease._local.release()
        return lease

    async def __aenter__(self) -> Lease:
        lease = await self.acquire()
        task = asyncio.current_task()
        if task is not None:
            self._entered.setdefault(task, []).append(lease)
        return lease

    async def __aexit__(self, *exc: object) -> None:
        task = asyncio.current_task()
        entered = self._entered.get(task) if task is not None else None
        lease = None
        if entered:
            lease = entered.pop()
            if lease._released:  # the block gave it back itself
                return
        # (Else not entered with `async with`: a caller that acquired and leaves through
        # this, as the manager's limits in a store do, gives back the task's last lease.)
        with contextlib.suppress(StoreUnavailable):  # the lease then expires after `lease`
            await self.release_and_wait(lease)

    def __enter__(self) -> None:
        raise _sync_refused("Semaphore")

    def __exit__(self, *exc: object) -> None:
        pass

    def acquire_blocking(self, *args: object, **kwargs: object) -> None:
        """Refused: see the module docstring (``await acquire()`` instead)."""
        raise _sync_refused("Semaphore")

    def stats(self) -> SemaphoreStats:
        """This process's counters; ``in_use``: the permits it holds (`state` for all)."""
        c = self._counts
        in_use = len(self._held)
        return SemaphoreStats(
            name=self.name,
            limit=self.limit,
            in_use=in_use,
            available=max(self.limit - in_use, 0),
            waiting=c.waiting,
            high_water=self._high_water,
            admitted=c.admitted,
            admitted_cost=c.admitted_cost,
            rejected=c.rejected,
            timed_out=c.timed_out,
            cancelled=c.cancelled,
            wait=WaitHistogram.empty(),
        )

    def __repr__(self) -> str:
        return (
            f"Semaphore({self.limit}, name={self.name!r}, lease={self.lease!r}, "
            f"store={self.store.label})"
        )
